//! Compiles the protobuf API with protox (pure Rust), so building Meridian
//! needs no system `protoc`. The encoded descriptor set is kept for gRPC
//! server reflection.

use std::{env, fs, path::PathBuf};

use protox::prost::Message;

const PROTOS: &[&str] = &[
    "meridian/v1/tickets.proto",
    "meridian/v1/router.proto",
    "meridian/v1/mesh.proto",
    "meridian/v1/replication.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("meridian_descriptor.bin"), fds.encode_to_vec())?;
    // Decode failures are the client's error (INVALID_ARGUMENT naming the
    // field), not INTERNAL: see src/codec.rs.
    tonic_prost_build::configure()
        .codec_path("crate::codec::ProtoCodec")
        .compile_fds(fds)?;
    Ok(())
}
