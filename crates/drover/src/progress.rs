//! A progress bar for long builds, drawn only on a terminal.

use std::io::IsTerminal;
use std::sync::Mutex;

use drover_core::builder::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One bar per build phase, on stderr, replaced when the phase changes.
pub struct Bar {
    enabled: bool,
    current: Mutex<Option<ProgressBar>>,
}

impl Bar {
    /// Draws only when stderr is a terminal and output is for people.
    pub fn new(json: bool) -> Self {
        Bar {
            enabled: !json && std::io::stderr().is_terminal(),
            current: Mutex::new(None),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = self.lock().take() {
            b.finish_and_clear();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Progress for Bar {
    fn phase(&self, name: &str, files: u64, bytes: u64) {
        if !self.enabled {
            return;
        }
        let mut current = self.lock();
        if let Some(old) = current.take() {
            old.finish_and_clear();
        }
        if bytes == 0 {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix:>6} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(name.to_string());
        bar.set_message(format!("{files} files"));
        *current = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if let Some(b) = self.lock().as_ref() {
            b.inc(bytes);
        }
    }
}
