//! Progress of long work (build phases, push, pull) on stderr: a bar on a
//! terminal; plain lines otherwise, so CI logs show the work as it goes;
//! nothing under `--json` (stderr then carries only errors).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use drover_core::progress::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output;

/// How often a plain line may repeat within a phase.
const LINE_EVERY: Duration = Duration::from_secs(5);

enum Mode {
    Off,
    /// One indicatif bar per phase.
    Bar,
    /// A line when a phase starts, every [`LINE_EVERY`] while it runs,
    /// and when it ends.
    Lines,
}

/// The phase being reported.
struct Phase {
    name: String,
    items: u64,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
}

/// Reports the phases of one command, each replacing the one before.
pub struct Bar {
    mode: Mode,
    current: Mutex<Option<Phase>>,
}

impl Bar {
    /// A bar when stderr is a terminal, lines when it is not, nothing for
    /// machine output.
    pub fn new(json: bool) -> Self {
        let mode = if json {
            Mode::Off
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        };
        Bar {
            mode,
            current: Mutex::new(None),
        }
    }

    /// End the last phase.
    pub fn finish(&self) {
        if let Some(p) = self.lock().take() {
            self.end(p);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Phase>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn end(&self, p: Phase) {
        if let Some(b) = &p.bar {
            b.finish_and_clear();
        }
        if matches!(self.mode, Mode::Lines) && p.total > 0 {
            eprintln!(
                "{}: done, {} in {:.1}s",
                p.name,
                output::size(p.done),
                p.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// What a phase counts, for people.
fn unit(phase: &str) -> &'static str {
    match phase {
        "push" | "pull" | "restore" => "blobs",
        "download" | "unpack" => "packages",
        _ => "files",
    }
}

impl Progress for Bar {
    fn phase(&self, name: &str, items: u64, bytes: u64) {
        if matches!(self.mode, Mode::Off) {
            return;
        }
        let mut current = self.lock();
        if let Some(old) = current.take() {
            self.end(old);
        }
        if bytes == 0 {
            return;
        }
        let what = format!("{items} {}", unit(name));
        let bar = match self.mode {
            Mode::Bar => {
                let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template(
                    "{prefix:>8} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(name.to_string());
                bar.set_message(what);
                Some(bar)
            }
            _ => {
                eprintln!("{name}: {what}, {}", output::size(bytes));
                None
            }
        };
        let now = Instant::now();
        *current = Some(Phase {
            name: name.to_string(),
            items,
            total: bytes,
            done: 0,
            started: now,
            last_line: now,
            bar,
        });
    }

    fn advance(&self, bytes: u64) {
        let mut current = self.lock();
        let Some(p) = current.as_mut() else { return };
        p.done += bytes;
        // The total is an estimate for some phases (a layer's tar headers
        // are not in its files' sizes): the bar grows rather than end at
        // "190.82 MiB/190.73 MiB".
        if let Some(b) = &p.bar {
            if p.done > p.total {
                p.total = p.done;
                b.set_length(p.total);
            }
            b.set_position(p.done);
        } else if p.last_line.elapsed() >= LINE_EVERY {
            p.last_line = Instant::now();
            eprintln!(
                "{}: {} of {} ({} {}), {:.0}s",
                p.name,
                output::size(p.done),
                output::size(p.total.max(p.done)),
                p.items,
                unit(&p.name),
                p.started.elapsed().as_secs_f64()
            );
        }
    }
}
