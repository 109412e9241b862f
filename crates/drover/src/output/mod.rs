//! How drover writes what a command produced: the output format (`-o
//! table|wide|json|yaml`), the one way to print to stdout (`outln!`, which
//! ends the process quietly when the reader went away, as `head` does), the
//! versioned envelope every machine-readable document carries, errors as
//! documents, and sizes for people. Tables, YAML and colour live in the
//! submodules.

/// Print to stdout like `println!`, but through [`write_stdout`]: a reader
/// that went away ends drover quietly instead of a panic.
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` through [`write_stdout`].
#[allow(unused_macros)]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

pub mod color;
pub mod table;
pub mod yaml;

use std::fmt;
use std::io::{self, Write};

use drover_core::ErrorKind;
use serde::Serialize;
use serde_json::{Map, Value};

pub use table::Table;

/// The version every machine-readable document carries, Kubernetes-style.
pub const API_VERSION: &str = "drover/v1";

/// What `-o/--output` selects.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns and sentences, for people.
    #[default]
    Table,
    /// The table with more columns (full digests, commands, ports).
    Wide,
    /// One JSON document (`apiVersion`, `kind`, and `items` for lists).
    Json,
    /// The same document as YAML.
    Yaml,
}

impl Format {
    /// JSON or YAML: output for programs, no progress, no colour.
    pub fn machine(self) -> bool {
        matches!(self, Format::Json | Format::Yaml)
    }
}

/// Write to stdout. When the reader closed the pipe (`drover ps | head -1`)
/// drover exits at once with status 0 and says nothing: the reader has what
/// it wanted. SIGPIPE stays ignored (Rust's default) because serve, the
/// monitors and the proxy write to sockets in this same binary, where a
/// closed peer must be an error, not death.
pub fn write_stdout(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        stdout_failed(&e);
    }
}

/// The end of a write to stdout that failed: quiet for a closed pipe, else
/// an error (exit 1), never a panic.
pub fn stdout_failed(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("drover: error: writing to stdout: {e}");
    std::process::exit(1);
}

/// Whether `e` is a write to a reader that went away (`audit export | head`
/// writes through an `io::Write` and returns the error instead).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Wrap `value` in the versioned envelope: an object gets `apiVersion` and
/// `kind` first; a list becomes `{apiVersion, kind: <Kind>List, items}`;
/// anything else becomes `{apiVersion, kind, value}`. The documents drover
/// prints have no top-level field of those names (a file's or a link's
/// `kind` is nested), which debug builds check.
pub fn document(kind: &str, value: Value) -> Value {
    let mut doc = Map::new();
    doc.insert("apiVersion".into(), API_VERSION.into());
    match value {
        Value::Array(items) => {
            doc.insert("kind".into(), format!("{kind}List").into());
            doc.insert("items".into(), Value::Array(items));
        }
        Value::Object(fields) => {
            doc.insert("kind".into(), kind.into());
            debug_assert!(
                !fields.contains_key("kind") && !fields.contains_key("apiVersion"),
                "a {kind} document has its own top-level kind or apiVersion"
            );
            doc.extend(fields);
        }
        other => {
            doc.insert("kind".into(), kind.into());
            doc.insert("value".into(), other);
        }
    }
    Value::Object(doc)
}

/// Print `value` as a `kind` document in `format` (YAML for `yaml`, else
/// pretty JSON).
pub fn emit<T: Serialize>(format: Format, kind: &str, value: &T) -> anyhow::Result<()> {
    emit_document(format, &document(kind, serde_json::to_value(value)?))
}

/// Print a document made with [`document`] (and added to) in `format`.
pub fn emit_document(format: Format, doc: &Value) -> anyhow::Result<()> {
    match format {
        Format::Yaml => out!("{}", yaml::to_string(doc)),
        _ => outln!("{}", serde_json::to_string_pretty(doc)?),
    }
    Ok(())
}

/// An error as a document for programs: `{apiVersion, kind: Error, error:
/// {kind, message, hint}}`, `kind` the error kind in kebab-case.
pub fn error_document(kind: &str, message: &str, hint: Option<&str>) -> Value {
    let mut error = Map::new();
    error.insert("kind".into(), kind.into());
    error.insert("message".into(), message.into());
    error.insert("hint".into(), hint.map_or(Value::Null, Into::into));
    let mut fields = Map::new();
    fields.insert("error".into(), Value::Object(error));
    document("Error", Value::Object(fields))
}

pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The first 12 hex digits of a digest (`sha256:` dropped), as tables show
/// them.
pub fn short_digest(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..12.min(hex.len())]
}

/// An error kind's name in documents: its variant in kebab-case.
pub fn kind_name(kind: Option<ErrorKind>) -> &'static str {
    match kind {
        Some(ErrorKind::Invalid) => "invalid",
        Some(ErrorKind::NotFound) => "not-found",
        Some(ErrorKind::Corrupt) => "corrupt",
        Some(ErrorKind::Busy) => "busy",
        Some(ErrorKind::Refused) => "refused",
        Some(ErrorKind::CheckFailed) => "check-failed",
        Some(ErrorKind::Unauthenticated) => "unauthenticated",
        Some(ErrorKind::Internal) | None => "internal",
    }
}

/// An error and its causes, joined by ": ", each cause said once: many
/// errors (drover's own among them) already end with their source's text,
/// which `{:#}` would repeat ("read x: No such file…: No such file…").
pub fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lists_become_item_lists_and_objects_get_kind_first() {
        let list = document("Image", json!([{"name": "a"}]));
        assert_eq!(
            list,
            json!({"apiVersion": "drover/v1", "kind": "ImageList", "items": [{"name": "a"}]})
        );
        let obj = document("Release", json!({"number": 3}));
        let keys: Vec<_> = obj.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["apiVersion", "kind", "number"]);
        assert_eq!(obj["kind"], "Release");
        assert_eq!(
            document("Digest", json!("sha256:ab")),
            json!({"apiVersion": "drover/v1", "kind": "Digest", "value": "sha256:ab"})
        );
    }

    #[test]
    fn errors_are_documents_with_a_null_hint_when_none() {
        let e = error_document("not-found", "service x not found", None);
        assert_eq!(e["kind"], "Error");
        assert_eq!(e["error"]["kind"], "not-found");
        assert_eq!(e["error"]["hint"], Value::Null);
    }

    #[test]
    fn broken_pipes_are_recognised_through_context() {
        let e = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe)).context("x");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
