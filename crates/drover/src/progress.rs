//! A progress bar for long builds, drawn only on a terminal.

use std::io::IsTerminal;

use drover_core::build::Progress;
use indicatif::{ProgressBar, ProgressStyle};

pub struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    /// A bar on stderr when it is a terminal and output is for people.
    pub fn new(json: bool) -> Self {
        let show = !json && std::io::stderr().is_terminal();
        Bar {
            bar: show.then(ProgressBar::hidden),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn phase(&self, name: &str, files: u64, bytes: u64) {
        let Some(old) = &self.bar else { return };
        old.finish_and_clear();
        old.reset();
        old.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        old.set_length(bytes);
        old.set_position(0);
        let style = ProgressStyle::with_template(
            "{prefix:>6} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        old.set_style(style);
        old.set_prefix(name.to_string());
        old.set_message(format!("{files} files"));
    }

    fn advance(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }
}
