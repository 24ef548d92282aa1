//! `meridian up` as the black-box tests start it: spawned with its stdout
//! piped, its banner read up to the "Ctrl-C" line, the rest drained on a
//! thread, and the whole mesh killed (SIGKILL, as a crash) when the guard
//! drops.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const MERIDIAN: &str = env!("CARGO_BIN_EXE_meridian");

/// A child process killed when dropped (a running `meridian up`, a
/// chromedriver).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `command` (a `meridian up …`; logs at warn) and returns once it
/// printed its banner, with the banner's lines.
pub fn start_up(command: &mut Command) -> (Killed, Vec<String>) {
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let up = Killed(child);
    let mut banner = Vec::new();
    let mut ready = false;
    for line in &mut lines {
        let line = line.unwrap();
        if line.starts_with("Ctrl-C") {
            ready = true;
            break;
        }
        banner.push(line);
    }
    assert!(
        ready,
        "meridian up stopped before it was ready: {banner:#?}"
    );
    std::thread::spawn(move || lines.for_each(drop));
    (up, banner)
}
