//! What drover's fuzz targets share. The targets are proptest properties in
//! a `fuzz.rs` beside the code they attack (`builder/def/fuzz.rs`,
//! `deploy/fleet/fuzz.rs`, `store/unpack/fuzz.rs`, `store/oci/fuzz.rs`,
//! `ledger/export/fuzz.rs`, `builder/packages/version/fuzz.rs`); every test
//! among them is named `fuzz::…`, so
//! `cargo test -p drover-core --lib fuzz::` runs them all.
//!
//! The normal test run tries a few hundred cases per target (a few
//! thousand in all); `PROPTEST_CASES` overrides that, and
//! `scripts/fuzz.sh <duration>` runs them with a large count, again and
//! again with fresh seeds, until the duration is up. A failure is shrunk and
//! its seed saved under `proptest-regressions/` beside the target, so the
//! next run tries it first: commit those files.

use proptest::prelude::*;
use proptest::test_runner::Config;

/// A target's configuration: `cases` cases unless `PROPTEST_CASES` says.
pub(crate) fn config(cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

/// Fragments a mutation splices in: the syntax of TOML and JSON, path
/// tricks, control characters, numbers at the edge of their types.
const NASTY: &[&str] = &[
    "\"",
    "'",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    ",",
    ".",
    "\n",
    "\r\n",
    "#",
    "\\",
    "\\u0000",
    "\u{0}",
    "\u{1b}",
    "\u{7f}",
    "\u{feff}",
    "\u{202e}",
    "..",
    "../",
    "/..",
    "/",
    "//",
    ".wh.",
    ".wh..wh..opq",
    "/proc",
    "/dev",
    "/sys",
    "-1",
    "0",
    "1",
    "4294967296",
    "9223372036854775807",
    "18446744073709551616",
    "1e308",
    "nan",
    "inf",
    "true",
    "null",
    "sha256:",
    "é",
    "𝕏",
];

/// One edit of a byte string.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    /// Flip bits of the byte at this position (modulo the length).
    Flip(usize, u8),
    /// Remove this many bytes from this position.
    Delete(usize, usize),
    /// Insert a fragment of [`NASTY`] or random bytes at this position.
    Insert(usize, Vec<u8>),
    /// Repeat a range of bytes in place (duplicated keys, tables, lines).
    Repeat(usize, usize),
    /// Cut the input here.
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let fragment = prop_oneof![
        3 => proptest::sample::select(NASTY).prop_map(|s| s.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        3 => (any::<usize>(), 1..=255u8).prop_map(|(at, bits)| Edit::Flip(at, bits)),
        2 => (any::<usize>(), 1..64usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        4 => (any::<usize>(), fragment).prop_map(|(at, f)| Edit::Insert(at, f)),
        1 => (any::<usize>(), 1..128usize).prop_map(|(at, n)| Edit::Repeat(at, n)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// Up to `max` edits.
pub(crate) fn edits(max: usize) -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(edit(), 1..=max)
}

/// `bytes` after `edits`, each position taken modulo the current length.
pub(crate) fn apply(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for e in edits {
        let len = out.len();
        let at = |i: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Flip(i, bits) if len > 0 => out[i % len] ^= bits,
            Edit::Flip(..) => {}
            Edit::Delete(i, n) => {
                let start = at(*i).min(len);
                let end = (start + n).min(len);
                out.drain(start..end);
            }
            Edit::Insert(i, f) => {
                let start = at(*i);
                out.splice(start..start, f.iter().copied());
            }
            Edit::Repeat(i, n) => {
                let start = at(*i).min(len);
                let end = (start + n).min(len);
                let copy = out[start..end].to_vec();
                out.splice(end..end, copy);
            }
            Edit::Truncate(i) => out.truncate(at(*i)),
        }
    }
    out
}

/// Text for a TOML or JSON string: any printable character, plus the odd
/// control character, quote and backslash.
pub(crate) fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9 ._/:=-]{0,12}",
        1 => "\\PC{0,12}",
        1 => proptest::collection::vec(
            proptest::sample::select(vec!['\0', '\n', '\t', '\u{1b}', '"', '\\', '\'', 'a', '/', '.']),
            0..6
        )
        .prop_map(|v| v.into_iter().collect()),
    ]
}

/// `s` as a TOML basic string (JSON's escapes are TOML's).
pub(crate) fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}
