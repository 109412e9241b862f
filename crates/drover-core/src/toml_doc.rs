//! A TOML document whose every value knows its position, and a checker that
//! turns wrong input into [`Error::Definition`] naming the file, the 1-based
//! line and column, and the dotted key path (`config.health.port`,
//! `layer[1].mode`) of what is wrong, and saying what is allowed.
//!
//! This module owns the format-independent part of reading a TOML file drover
//! accepts: the located-value tree ([`Node`], [`Value`], [`Entry`]), TOML
//! syntax errors, key paths, unknown and missing keys, wrong types, and
//! locating errors of the value grammars in [`crate::grammar`] (durations
//! among them). Each format's own rules
//! live with its types (`builder::def` for `drover.toml`; health checks, which
//! several formats contain, in [`crate::health`]). A format's parser reads
//! like this:
//!
//! ```ignore
//! let text = toml_doc::read(path, "a fleet file")?;      // Io, or not UTF-8
//! let (root, c) = toml_doc::parse(&text, path)?;         // invalid TOML
//! let top = c.table(&root, "", &["service"])?;           // unknown keys
//! let node = c.required(&top, "service", "a [service] table")?;
//! let svc = c.table(node, "service", SERVICE_KEYS)?;
//! let image = c.string(c.required(&svc, "image", "e.g. image = \"web:1.0\"")?, &svc.key("image"))?;
//! let replicas = svc.get("replicas").map(|n| c.integer(n, &svc.key("replicas"))).transpose()?;
//! let grace = c.duration(&svc, "stop_grace")?;          // Option<(ms, &Node)>
//! let health = svc.get("health")
//!     .map(|n| health::parse(&c, n, &svc.key("health"), Deadline::Allowed))
//!     .transpose()?;
//! ```
//!
//! A format with many rules wraps the checker in its own type that derefs to
//! it (`builder::def`'s `Def`), so its methods call the helpers as
//! `self.string(..)` and its own checks sit beside them.
//!
//! Errors point at the offending value, at the key for unknown keys, and at the
//! table for missing ones; the message starts with the key path.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{Error, IoContext, Result};
use crate::grammar;

/// Reads the file at `path` as text. An unreadable file is [`Error::Io`];
/// bytes that are not UTF-8 are [`Error::Definition`] at the first of them,
/// saying `what` must be UTF-8 (`"a definition"`).
pub(crate) fn read(path: &Path, what: &str) -> Result<String> {
    let bytes = std::fs::read(path).ctx("read", path)?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let prefix = std::str::from_utf8(&e.as_bytes()[..valid]).unwrap_or_default();
        let src = Source {
            text: prefix,
            file: path,
        };
        src.error(
            valid,
            None,
            format!("not UTF-8 text ({what} must be UTF-8)"),
        )
    })
}

/// Parses `text` (from `file`, named in errors) into its root table and a
/// [`Checker`] that locates errors in it. Invalid TOML, duplicate keys
/// included, is an [`Error::Definition`] "invalid TOML: …". Reads nothing.
pub(crate) fn parse<'a>(text: &'a str, file: &'a Path) -> Result<(Node, Checker<'a>)> {
    let src = Source { text, file };
    let root: Node = toml::from_str(text).map_err(|e| src.syntax_error(&e))?;
    Ok((root, Checker { src }))
}

// ---------------------------------------------------------------------------
// The TOML document with positions.
//
// `toml::Spanned<T>` fails on tables that have no position (implicit tables
// such as `config` in a lone `[config.health]`, and dotted-key tables), so
// `Node` asks for a span the same way `Spanned` does and accepts either
// answer; a table without a span gets its key's.

/// `serde_spanned`'s protocol, which `toml`'s deserializer recognizes (the
/// same strings `toml::Spanned` uses; pinned by `toml` 0.8). If they ever
/// change, every position test (here and in `builder::def`) fails.
const SPANNED: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];
/// How `toml` presents a date-time to `deserialize_any`.
const DATETIME_FIELD: &str = "$__toml_private_datetime";

/// A TOML value and where it is.
#[derive(Debug)]
pub(crate) struct Node {
    /// Byte range in the document, when known.
    span: Option<Range<usize>>,
    pub(crate) value: Value,
}

/// A TOML value's content. Date-times are kept only as their type, for
/// error messages: no format drover reads accepts them.
#[derive(Debug)]
pub(crate) enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime,
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

/// A table entry: its key, where the key is, and its value.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) key: String,
    key_span: Option<Range<usize>>,
    pub(crate) node: Node,
}

impl Node {
    /// Byte offset of the value, for error positions.
    pub(crate) fn at(&self) -> usize {
        self.span.as_ref().map_or(0, |s| s.start)
    }

    /// `"a string"`, `"an array"`: for "expected …, found …".
    pub(crate) fn type_name(&self) -> &'static str {
        match self.value {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime => "a date-time",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

impl Entry {
    /// Byte offset of the key (of the value when the key has no span).
    pub(crate) fn key_at(&self) -> usize {
        self.key_span.as_ref().map_or(self.node.at(), |s| s.start)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_struct(SPANNED, SPANNED_FIELDS, NodeVisitor)
    }
}

/// The value inside a span wrapper: asking for a span again would loop.
struct Unspanned;

impl<'de> DeserializeSeed<'de> for Unspanned {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl NodeVisitor {
    fn plain(value: Value) -> Node {
        Node { span: None, value }
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Node, E> {
        Ok(Self::plain(Value::Boolean(v)))
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Node, E> {
        Ok(Self::plain(Value::Integer(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Node, E> {
        let v = i64::try_from(v).map_err(|_| E::custom("integer out of range"))?;
        Ok(Self::plain(Value::Integer(v)))
    }

    fn visit_f64<E>(self, v: f64) -> std::result::Result<Node, E> {
        Ok(Self::plain(Value::Float(v)))
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Node, E> {
        Ok(Self::plain(Value::String(v.to_string())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Self::plain(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Node, A::Error> {
        let Some(first) = map.next_key_seed(KeySeed)? else {
            return Ok(Self::plain(Value::Table(Vec::new())));
        };
        // Protocol keys come without a span; a document's keys always have one.
        if first.span.is_none() && first.name == SPANNED_START {
            let start: usize = map.next_value()?;
            let mut end = start;
            let mut node = None;
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    SPANNED_END => end = map.next_value()?,
                    SPANNED_VALUE => node = Some(map.next_value_seed(Unspanned)?),
                    other => return Err(de::Error::unknown_field(other, SPANNED_FIELDS)),
                }
            }
            let mut node = node.ok_or_else(|| de::Error::missing_field(SPANNED_VALUE))?;
            node.span = Some(start..end);
            return Ok(node);
        }
        if first.span.is_none() && first.name == DATETIME_FIELD {
            map.next_value::<de::IgnoredAny>()?;
            return Ok(Self::plain(Value::Datetime));
        }
        let mut entries = Vec::new();
        let mut next = Some(first);
        while let Some(key) = next {
            let mut node: Node = map.next_value()?;
            if node.span.is_none() {
                node.span.clone_from(&key.span);
            }
            entries.push(Entry {
                key: key.name,
                key_span: key.span,
                node,
            });
            next = map.next_key_seed(KeySeed)?;
        }
        Ok(Self::plain(Value::Table(entries)))
    }
}

struct Key {
    name: String,
    span: Option<Range<usize>>,
}

/// A table key, with its span when the deserializer has one.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Key, D::Error> {
        d.deserialize_struct(SPANNED, SPANNED_FIELDS, KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML key")
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Key, E> {
        Ok(Key {
            name: v.to_string(),
            span: None,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Key, A::Error> {
        let (mut start, mut end, mut name) = (0, 0, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                SPANNED_START => start = map.next_value()?,
                SPANNED_END => end = map.next_value()?,
                SPANNED_VALUE => name = Some(map.next_value::<String>()?),
                other => return Err(de::Error::unknown_field(other, SPANNED_FIELDS)),
            }
        }
        let name = name.ok_or_else(|| de::Error::missing_field(SPANNED_VALUE))?;
        Ok(Key {
            name,
            span: Some(start..end),
        })
    }
}

// ---------------------------------------------------------------------------
// Positions and messages.

/// A document's text and where it came from: turns byte offsets into
/// [`Error::Definition`]s.
struct Source<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Source<'_> {
    /// An error at byte offset `at`; the message is prefixed with the key path.
    fn error(&self, at: usize, key: Option<&str>, message: impl fmt::Display) -> Error {
        let (line, column) = line_column(self.text, at);
        let message = match key {
            Some(key) => format!("{key}: {message}"),
            None => message.to_string(),
        };
        Error::Definition {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.map(str::to_string),
            message,
        }
    }

    fn syntax_error(&self, e: &toml::de::Error) -> Error {
        let at = e.span().map_or(0, |s| s.start);
        let message = e.message().trim().replace('\n', "; ");
        self.error(at, None, format!("invalid TOML: {message}"))
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// `parent.key`, quoting keys that are not bare TOML keys.
pub(crate) fn child_key(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[index]`: array elements are numbered from 0.
pub(crate) fn index_key(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// `"a", "b" or "c"`.
pub(crate) fn alternatives(options: &[&str]) -> String {
    let quoted: Vec<String> = options.iter().map(|o| format!("{o:?}")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

// ---------------------------------------------------------------------------
// Checking.

/// A TOML table being validated.
pub(crate) struct Table<'n> {
    /// Dotted key path; empty for the document itself.
    pub(crate) path: String,
    /// Where the table starts (its header, `{`, or its key), for "missing" errors.
    pub(crate) at: usize,
    /// In document order.
    pub(crate) entries: &'n [Entry],
}

impl<'n> Table<'n> {
    /// The value at `key`, if the table has it.
    pub(crate) fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.node)
    }

    /// The dotted path of this table's `key`, for messages.
    pub(crate) fn key(&self, key: &str) -> String {
        child_key(&self.path, key)
    }
}

/// A kind-specific table (a layer, a probe): keys that belong to another kind
/// get a message saying so rather than "unknown key".
pub(crate) struct Kinded<'a> {
    /// Every key any kind accepts.
    pub(crate) all: &'a [&'a str],
    /// `"file" layer`, `"tcp" health check`.
    pub(crate) what: String,
}

/// Reads values out of one document's [`Node`]s, turning anything wrong into
/// [`Error::Definition`] at the value's position. `key` and `path` arguments
/// are dotted key paths (`config.health.port`, `layer[1]`), used in messages.
pub(crate) struct Checker<'a> {
    src: Source<'a>,
}

impl Checker<'_> {
    /// An error at byte offset `at` about `key`.
    pub(crate) fn err(&self, at: usize, key: &str, message: impl fmt::Display) -> Error {
        self.src.error(at, Some(key), message)
    }

    /// "expected {expected}, found {node's type}", at `node`.
    pub(crate) fn wrong_type(&self, node: &Node, key: &str, expected: &str) -> Error {
        self.err(
            node.at(),
            key,
            format!("expected {expected}, found {}", node.type_name()),
        )
    }

    /// `node` as a table whose keys are all `allowed`.
    pub(crate) fn table<'n>(
        &self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
    ) -> Result<Table<'n>> {
        let table = self.as_table(node, path)?;
        self.check_keys(&table, allowed, None)?;
        Ok(table)
    }

    /// `node` as a table, without checking its keys.
    pub(crate) fn as_table<'n>(&self, node: &'n Node, path: &str) -> Result<Table<'n>> {
        let Value::Table(entries) = &node.value else {
            return Err(self.wrong_type(node, path, "a table"));
        };
        Ok(Table {
            path: path.to_string(),
            at: node.at(),
            entries,
        })
    }

    /// Refuses the first key (in document order) that is not `allowed`.
    pub(crate) fn check_keys(
        &self,
        table: &Table<'_>,
        allowed: &[&str],
        kinded: Option<&Kinded<'_>>,
    ) -> Result<()> {
        let Some(entry) = table
            .entries
            .iter()
            .find(|e| !allowed.contains(&e.key.as_str()))
        else {
            return Ok(());
        };
        let expected = allowed.join(", ");
        let message = match kinded {
            Some(k) if k.all.contains(&entry.key.as_str()) => {
                format!("not used by a {} (expected one of: {expected})", k.what)
            }
            _ => format!("unknown key (expected one of: {expected})"),
        };
        Err(self.err(entry.key_at(), &table.key(&entry.key), message))
    }

    /// `table[key]`, or an error at the table naming `hint` (what to write).
    pub(crate) fn required<'n>(
        &self,
        table: &Table<'n>,
        key: &str,
        hint: &str,
    ) -> Result<&'n Node> {
        table.get(key).ok_or_else(|| {
            self.err(
                table.at,
                &table.key(key),
                format!("missing required key ({hint})"),
            )
        })
    }

    pub(crate) fn string<'n>(&self, node: &'n Node, key: &str) -> Result<&'n str> {
        match &node.value {
            Value::String(s) => Ok(s),
            _ => Err(self.wrong_type(node, key, "a string")),
        }
    }

    /// `of` is what the message says was expected, e.g. "an array of ports".
    pub(crate) fn array<'n>(&self, node: &'n Node, key: &str, of: &str) -> Result<&'n [Node]> {
        match &node.value {
            Value::Array(items) => Ok(items),
            _ => Err(self.wrong_type(node, key, of)),
        }
    }

    /// An array of strings: arguments, commands. None may hold a NUL (see
    /// [`grammar::c_string`]): they all end up in `execve`.
    pub(crate) fn strings(&self, node: &Node, key: &str) -> Result<Vec<String>> {
        self.array(node, key, "an array of strings")?
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let key = index_key(key, i);
                let s = self.string(item, &key)?;
                grammar::c_string(s).map_err(|e| self.err(item.at(), &key, e))?;
                Ok(s.to_string())
            })
            .collect()
    }

    pub(crate) fn integer(&self, node: &Node, key: &str) -> Result<i64> {
        match node.value {
            Value::Integer(n) => Ok(n),
            _ => Err(self.wrong_type(node, key, "an integer")),
        }
    }

    pub(crate) fn boolean(&self, node: &Node, key: &str) -> Result<bool> {
        match node.value {
            Value::Boolean(b) => Ok(b),
            _ => Err(self.wrong_type(node, key, "a boolean (true or false)")),
        }
    }

    /// The `kind` of a kind-specific table, before its other keys are checked.
    pub(crate) fn kind(
        &self,
        table: &Table<'_>,
        kinds: &[&'static str],
        what: &str,
    ) -> Result<&'static str> {
        let expected = alternatives(kinds);
        let kind_node = self.required(table, "kind", &format!("expected {expected}"))?;
        let key = table.key("kind");
        let kind = self.string(kind_node, &key)?;
        kinds.iter().find(|k| **k == kind).copied().ok_or_else(|| {
            self.err(
                kind_node.at(),
                &key,
                format!("{kind:?} is not a {what} kind (expected {expected})"),
            )
        })
    }

    /// A table of strings whose keys pass `check_key`.
    pub(crate) fn string_map(
        &self,
        node: &Node,
        path: &str,
        check_key: impl Fn(&str) -> std::result::Result<(), String>,
    ) -> Result<BTreeMap<String, String>> {
        let Value::Table(entries) = &node.value else {
            return Err(self.wrong_type(node, path, "a table of strings"));
        };
        let mut map = BTreeMap::new();
        for entry in entries {
            let key = child_key(path, &entry.key);
            check_key(&entry.key).map_err(|e| self.err(entry.key_at(), &key, e))?;
            let Value::String(value) = &entry.node.value else {
                let mut e = format!("expected a string, found {}", entry.node.type_name());
                if matches!(
                    entry.node.value,
                    Value::Integer(_) | Value::Float(_) | Value::Boolean(_)
                ) {
                    e.push_str(" (quote it)");
                }
                return Err(self.err(entry.node.at(), &key, e));
            };
            // Environment values and labels: a NUL would be cut off (or
            // refused) where the value reaches the kernel or the runtime.
            grammar::c_string(value).map_err(|e| self.err(entry.node.at(), &key, e))?;
            map.insert(entry.key.clone(), value.clone());
        }
        Ok(map)
    }

    /// The duration at `t[name]`, if present, in milliseconds (see
    /// [`grammar::duration_ms`]), and the node it came from for later range errors.
    pub(crate) fn duration<'n>(
        &self,
        t: &Table<'n>,
        name: &str,
    ) -> Result<Option<(u64, &'n Node)>> {
        let Some(node) = t.get(name) else {
            return Ok(None);
        };
        let key = t.key(name);
        let s = match &node.value {
            Value::String(s) => s,
            Value::Integer(_) => {
                return Err(self.err(
                    node.at(),
                    &key,
                    "expected a duration string such as \"5s\", found an integer (add a unit)",
                ));
            }
            _ => return Err(self.wrong_type(node, &key, "a duration string such as \"5s\"")),
        };
        let ms = grammar::duration_ms(s).map_err(|e| self.err(node.at(), &key, e))?;
        Ok(Some((ms, node)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "services.toml";

    /// `(line, column, key, message)` of a definition error.
    #[track_caller]
    fn located(e: Error) -> (usize, usize, Option<String>, String) {
        match e {
            Error::Definition {
                file,
                line,
                column,
                key,
                message,
            } => {
                assert_eq!(file, Path::new(FILE));
                (line, column, key, message)
            }
            other => panic!("expected a definition error, got {other:?}"),
        }
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 3), (2, 1));
        assert_eq!(line_column("ab\ncd", 99), (2, 3));
        assert_eq!(line_column("é = 1", 2), (1, 2));
    }

    #[test]
    fn key_paths_quote_what_is_not_bare() {
        assert_eq!(child_key("", "a"), "a");
        assert_eq!(child_key("a.b", "c-d_1"), "a.b.c-d_1");
        assert_eq!(child_key("labels", "x.y"), "labels.\"x.y\"");
        assert_eq!(child_key("env", ""), "env.\"\"");
        assert_eq!(index_key("layer", 2), "layer[2]");
        assert_eq!(alternatives(&["a"]), "\"a\"");
        assert_eq!(alternatives(&["a", "b", "c"]), "\"a\", \"b\" or \"c\"");
    }

    /// A format other than `drover.toml`, read with the generic helpers only.
    #[test]
    fn another_format_reads_and_locates_errors() {
        const KEYS: &[&str] = &["image", "replicas", "args", "public", "env"];
        let service = |text: &str| -> Result<(String, i64, Vec<String>, bool, usize)> {
            let (root, c) = parse(text, Path::new(FILE))?;
            let top = c.table(&root, "", &["service"])?;
            let svc = c.table(c.required(&top, "service", "[service]")?, "service", KEYS)?;
            let image = c.string(
                c.required(&svc, "image", "e.g. image = \"web\"")?,
                &svc.key("image"),
            )?;
            let replicas = match svc.get("replicas") {
                None => 1,
                Some(node) => c.integer(node, &svc.key("replicas"))?,
            };
            let args = match svc.get("args") {
                None => Vec::new(),
                Some(node) => c.strings(node, &svc.key("args"))?,
            };
            let public = match svc.get("public") {
                None => false,
                Some(node) => c.boolean(node, &svc.key("public"))?,
            };
            let env = match svc.get("env") {
                None => 0,
                Some(node) => c.string_map(node, &svc.key("env"), |_| Ok(()))?.len(),
            };
            Ok((image.to_string(), replicas, args, public, env))
        };
        assert_eq!(
            service("service.image = \"web\"\nservice.args = [\"-v\"]\n[service.env]\nA = \"1\"\n")
                .unwrap(),
            ("web".to_string(), 1, vec!["-v".to_string()], false, 1)
        );
        /// Text, where the error is, and part of its message.
        type Case = (
            &'static str,
            (usize, usize, Option<&'static str>),
            &'static str,
        );
        let cases: &[Case] = &[
            (
                "[service]\nimage = \"web\"\nreplicas = \"2\"\n",
                (3, 12, Some("service.replicas")),
                "service.replicas: expected an integer, found a string",
            ),
            (
                "[service]\nimage = \"web\"\nreplica = 2\n",
                (3, 1, Some("service.replica")),
                "unknown key (expected one of: image, replicas, args, public, env)",
            ),
            (
                "\n[service]\nreplicas = 2\n",
                (2, 1, Some("service.image")),
                "missing required key (e.g. image = \"web\")",
            ),
            (
                "[service]\nimage = \"web\"\nargs = [\"a\", 1.5]\n",
                (3, 14, Some("service.args[1]")),
                "expected a string, found a float",
            ),
            (
                "[service]\nimage = \"web\"\npublic = 1\n",
                (3, 10, Some("service.public")),
                "expected a boolean (true or false), found an integer",
            ),
            (
                "[service]\nimage = \"web\"\nenv = { A = true }\n",
                (3, 13, Some("service.env.A")),
                "expected a string, found a boolean (quote it)",
            ),
            (
                "[service]\nimage = \"web\"\nimage = \"x\"\n",
                (3, 1, None),
                "invalid TOML: duplicate key",
            ),
        ];
        for (text, (line, column, key), needle) in cases {
            let (l, c, k, message) = located(service(text).unwrap_err());
            assert_eq!((l, c, k.as_deref()), (*line, *column, *key), "{message}");
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
    }

    #[test]
    fn read_names_what_must_be_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        assert!(matches!(read(&path, "a fleet file"), Err(Error::Io { .. })));
        std::fs::write(&path, b"a = 1\nb = \"\xff\"\n").unwrap();
        match read(&path, "a fleet file").unwrap_err() {
            Error::Definition {
                line,
                column,
                key: None,
                message,
                ..
            } => {
                assert_eq!((line, column), (2, 6));
                assert_eq!(message, "not UTF-8 text (a fleet file must be UTF-8)");
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&path, "a = 1\n").unwrap();
        assert_eq!(read(&path, "a fleet file").unwrap(), "a = 1\n");
    }
}
