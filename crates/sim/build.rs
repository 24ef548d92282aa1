//! Sets `cfg(sim_exact)` when the build has `--cfg tokio_unstable`: only
//! then does turmoil seed tokio's own random choices (which ready branch
//! of a `select!` is polled first), and a seed replays exactly.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(sim_exact)");
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags
        .split('\u{1f}')
        .collect::<Vec<_>>()
        .windows(2)
        .any(|pair| pair == ["--cfg", "tokio_unstable"])
    {
        println!("cargo::rustc-cfg=sim_exact");
    }
}
