//! The library half of the `meridian` package: the parts of the command
//! that other tools reuse. Today that is the load driver behind
//! `meridian load`, which the benchmark suite (`benches/`) runs as its
//! intake scenarios so that both report the same figures.

#![forbid(unsafe_code)]

pub mod load;
pub mod terminal;

pub use terminal::terminal_safe;
