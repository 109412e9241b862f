//! Where `tracing` events go: drover's own (serve's supervisor threads and
//! proxies, the monitors) and its libraries' (libcontainer, h2). The
//! library crates only emit; this module installs the one subscriber.
//!
//! - **Format**: `text` (a line a human reads: time, level, target,
//!   message, fields) or `json` (one object per line: `timestamp`,
//!   `level`, `target`, `message` and the event's fields, flattened);
//!   `serve --log-format`, or `DROVER_LOG_FORMAT`.
//! - **Levels**: `DROVER_LOG`, in `EnvFilter`'s syntax (`debug`,
//!   `drover=debug,libcontainer=trace`); by default info for drover's own
//!   crates (every target starting with `drover`) and warn for libraries.
//! - **Where**: `serve` logs to stderr; a monitor to its instance's
//!   `monitor.log` (its stderr is nobody's), in the format and at the levels
//!   of the serve or CLI that started it (the variables are passed down);
//!   other commands print what they have to say themselves, and log (to
//!   stderr) only when `DROVER_LOG` asks.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The levels, in `EnvFilter` syntax.
pub const FILTER_ENV: &str = "DROVER_LOG";
/// `text` or `json`.
pub const FORMAT_ENV: &str = "DROVER_LOG_FORMAT";
/// Info for every target starting with `drover` (drover, drover_core,
/// drover_proxy), warn for the rest.
const DEFAULT_FILTER: &str = "warn,drover=info";

/// How each event is written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// A line for people: time, level, target, message, fields.
    #[default]
    Text,
    /// One JSON object per line, for log shippers and jq.
    Json,
}

impl LogFormat {
    fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// The filter `DROVER_LOG` asks for, or the default. A directive that does
/// not parse is an error (naming it), not silently nothing.
pub fn filter() -> Result<EnvFilter, String> {
    match std::env::var(FILTER_ENV) {
        Ok(s) if !s.trim().is_empty() => EnvFilter::builder()
            .parse(&s)
            .map_err(|e| format!("{FILTER_ENV}={s:?}: {e}")),
        _ => Ok(EnvFilter::new(DEFAULT_FILTER)),
    }
}

/// The format `DROVER_LOG_FORMAT` names, if any.
pub fn env_format() -> Result<Option<LogFormat>, String> {
    match std::env::var(FORMAT_ENV) {
        Ok(s) if !s.is_empty() => <LogFormat as clap::ValueEnum>::from_str(&s, true)
            .map(Some)
            .map_err(|_| format!("{FORMAT_ENV}={s:?}: expected \"text\" or \"json\"")),
        _ => Ok(None),
    }
}

/// Log to stderr from now on, and make the monitors this process starts
/// log in the same format.
pub fn to_stderr(format: LogFormat, filter: EnvFilter) {
    drover_core::instance::monitor::pass_env(vec![(FORMAT_ENV.into(), format.name().into())]);
    install(format, filter, io::stderr);
}

/// A monitor's log: appended to `path`; nowhere if it cannot be opened
/// (a monitor must not fail for want of a log).
pub fn to_file(format: LogFormat, filter: EnvFilter, path: &Path) {
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(file) => install(format, filter, std::sync::Mutex::new(file)),
        Err(_) => install(format, filter, io::sink),
    }
}

fn install<W>(format: LogFormat, filter: EnvFilter, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    // Another subscriber already installed (cannot happen in main): keep it.
    let _ = match format {
        LogFormat::Text => fmt.try_init(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn logged(format: LogFormat, filter: &str, emit: impl FnOnce()) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let fmt = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(filter))
            .with_writer(move || out.clone())
            .with_ansi(false);
        match format {
            LogFormat::Text => tracing::subscriber::with_default(fmt.finish(), emit),
            LogFormat::Json => tracing::subscriber::with_default(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .finish(),
                emit,
            ),
        }
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    /// The JSON layer as `install` sets it up: one flat object per event.
    #[test]
    fn json_events_are_flat_objects_with_their_fields() {
        let out = logged(LogFormat::Json, DEFAULT_FILTER, || {
            tracing::warn!(target: "drover_core::supervisor", service = "web", instance = "abc",
                release = 2, "instance abc exited");
        });
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["level"], "WARN", "{v}");
        assert_eq!(v["target"], "drover_core::supervisor", "{v}");
        assert_eq!(v["message"], "instance abc exited", "{v}");
        assert_eq!(
            (&v["service"], &v["instance"]),
            (&"web".into(), &"abc".into())
        );
        assert_eq!(v["release"], 2, "{v}");
        assert!(v["timestamp"].is_string(), "{v}");
    }

    /// The default: info for drover's crates, warn for libraries.
    #[test]
    fn default_filter_keeps_drovers_info_and_libraries_warnings() {
        let out = logged(LogFormat::Text, DEFAULT_FILTER, || {
            tracing::info!(target: "drover_proxy::proxies", "mine");
            tracing::debug!(target: "drover_core::supervisor", "too fine");
            tracing::info!(target: "libcontainer::container", "theirs");
            tracing::warn!(target: "h2::proto", "their warning");
        });
        assert!(out.contains(" INFO drover_proxy::proxies: mine"), "{out}");
        assert!(
            !out.contains("too fine") && !out.contains("theirs"),
            "{out}"
        );
        assert!(out.contains(" WARN h2::proto: their warning"), "{out}");
    }

    #[test]
    fn filter_directives_narrow_by_target() {
        let out = logged(
            LogFormat::Text,
            "warn,drover=debug,libcontainer=trace",
            || {
                tracing::debug!(target: "drover_core::supervisor", "fine");
                tracing::trace!(target: "libcontainer::process", "finer");
                tracing::debug!(target: "h2::codec", "not asked for");
            },
        );
        assert!(out.contains("fine") && out.contains("finer"), "{out}");
        assert!(!out.contains("not asked for"), "{out}");
    }
}
