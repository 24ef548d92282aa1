//! Progress on stderr while the suite runs: a bar over the scenarios, the
//! scenario's elapsed time and what it is doing now. On a terminal the
//! line redraws in place; elsewhere (CI logs) each step is its own line.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

pub struct Progress {
    quiet: bool,
    terminal: bool,
    state: Mutex<State>,
}

struct State {
    scenario: String,
    index: usize,
    total: usize,
    started: Instant,
}

const BAR: usize = 20;

impl Progress {
    pub fn new(quiet: bool, total: usize) -> Self {
        Self {
            quiet,
            terminal: std::io::stderr().is_terminal(),
            state: Mutex::new(State { scenario: String::new(), index: 0, total, started: Instant::now() }),
        }
    }

    /// Starts the `index`-th scenario (from 1).
    pub fn scenario(&self, index: usize, name: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.scenario = name.to_owned();
            state.index = index;
            state.started = Instant::now();
        }
        self.say("starting");
    }

    /// What the current scenario is doing now.
    pub fn say(&self, step: &str) {
        if self.quiet {
            return;
        }
        let Ok(state) = self.state.lock() else { return };
        let done = state.index.saturating_sub(1) * BAR / state.total.max(1);
        let bar: String = (0..BAR).map(|i| if i < done { '#' } else { '.' }).collect();
        let line = format!(
            "[{bar}] {}/{} {} {:>5.1}s  {step}",
            state.index,
            state.total,
            state.scenario,
            state.started.elapsed().as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal { write!(err, "\r\x1b[2K{line}") } else { writeln!(err, "{line}") };
        let _ = err.flush();
    }

    /// Ends the in-place line so the report starts on its own.
    pub fn finish(&self) {
        if !self.quiet && self.terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}
