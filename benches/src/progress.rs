//! Progress on stderr while the suite runs: a bar over the scenarios, the
//! scenario's elapsed time and what it is doing now. On a terminal it is an
//! `indicatif` bar redrawn in place; elsewhere (CI logs, where indicatif
//! draws nothing) each step is its own line.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    quiet: bool,
    /// Drawn on a terminal only; hidden otherwise.
    bar: ProgressBar,
}

const TEMPLATE: &str = "[{bar:20}] {pos}/{len} {prefix} {elapsed:>5}  {msg}";

impl Progress {
    pub fn new(quiet: bool, total: usize) -> Self {
        let total = u64::try_from(total).unwrap_or(u64::MAX);
        let bar = if quiet || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(TEMPLATE)
                .map(|style| style.progress_chars("#>."))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            // Redraw the elapsed time between steps too.
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        };
        bar.set_length(total);
        Self { quiet, bar }
    }

    /// Starts the `index`-th scenario (from 1).
    pub fn scenario(&self, index: usize, name: &str) {
        self.bar
            .set_position(u64::try_from(index.saturating_sub(1)).unwrap_or(0));
        self.bar.set_prefix(name.to_owned());
        self.bar.reset_elapsed();
        self.say("starting");
    }

    /// What the current scenario is doing now.
    pub fn say(&self, step: &str) {
        if self.quiet {
            return;
        }
        if self.bar.is_hidden() {
            eprintln!(
                "[{}/{}] {} {:>5.1}s  {step}",
                self.bar.position() + 1,
                self.bar.length().unwrap_or(0),
                self.bar.prefix(),
                self.bar.elapsed().as_secs_f64()
            );
        } else {
            self.bar.set_message(step.to_owned());
        }
    }

    /// Ends the bar so the report starts on its own line.
    pub fn finish(&self) {
        if let Some(total) = self.bar.length() {
            self.bar.set_position(total);
        }
        self.bar.finish();
    }
}
