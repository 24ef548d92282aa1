//! Compiles the etcd v3 subset in `proto/` with protox (pure Rust), so
//! building Meridian needs no system `protoc`. Client stubs only: Meridian
//! talks to etcd, it never serves etcd's API.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &["etcdserverpb/rpc.proto", "mvccpb/kv.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(PROTOS, [&root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
