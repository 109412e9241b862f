//! Fuzz target: the ledger export verifier (see `crate::fuzz`). A valid
//! export verifies; an export changed in any way that changes what it says
//! — bytes flipped, cut, inserted; lines dropped, repeated, swapped — never
//! does, and the verifier never panics.

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::fuzz::{apply, config, edits};
use crate::keys::host_key;
use crate::ledger::NewEntry;
use crate::state::{Db, state_dir};

/// One export of a ledger of a few entries, made once for every case: its
/// text and the key that signed it.
fn export() -> &'static (String, Arc<SigningKey>) {
    static EXPORT: OnceLock<(String, Arc<SigningKey>)> = OnceLock::new();
    EXPORT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("drover.db")).unwrap();
        for i in 1..=5 {
            db.write(|tx| {
                tx.record(NewEntry::new(
                    "tag.set",
                    [format!("app:{i}")],
                    json!({"i": i, "note": "ünïcode \"quoted\""}),
                ))
            })
            .unwrap();
        }
        let key = Arc::new(host_key(state_dir(db.path())).unwrap());
        let mut out = Vec::new();
        db.read()
            .export_ledger(&key, &[key.public()], None, &mut out, Path::new("fuzz"))
            .unwrap();
        (String::from_utf8(out).unwrap(), key)
    })
}

/// What each line says, as JSON values: equal for two exports that differ
/// only in formatting.
fn meaning(text: &[u8]) -> Option<Vec<Value>> {
    std::str::from_utf8(text)
        .ok()?
        .split('\n')
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[derive(Debug, Clone)]
enum LineEdit {
    Drop(usize),
    Repeat(usize),
    Swap(usize, usize),
}

fn line_edit() -> impl Strategy<Value = LineEdit> {
    prop_oneof![
        any::<usize>().prop_map(LineEdit::Drop),
        any::<usize>().prop_map(LineEdit::Repeat),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| LineEdit::Swap(a, b)),
    ]
}

fn verifies(text: &[u8], key: &SigningKey) -> std::result::Result<bool, TestCaseError> {
    let report = verify(text, &[key.public()], Path::new("fuzz"))
        .map_err(|e| TestCaseError::fail(format!("verify failed to run: {e}")))?;
    Ok(report.is_ok())
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn the_valid_export_verifies_and_a_changed_one_never_does(edits in edits(4)) {
        let (text, key) = export();
        prop_assert!(verifies(text.as_bytes(), key)?);
        let mutated = apply(text.as_bytes(), &edits);
        if verifies(&mutated, key)? {
            // Only formatting may differ (JSON whitespace, a blank line).
            prop_assert_eq!(meaning(&mutated), meaning(text.as_bytes()));
        }
    }

    #[test]
    fn moved_lines_never_verify(edits in proptest::collection::vec(line_edit(), 1..3)) {
        let (text, key) = export();
        let mut lines: Vec<&str> = text.lines().collect();
        for e in &edits {
            let n = lines.len();
            if n == 0 {
                break;
            }
            match *e {
                LineEdit::Drop(i) => {
                    lines.remove(i % n);
                }
                LineEdit::Repeat(i) => lines.insert(i % n, lines[i % n]),
                LineEdit::Swap(a, b) => lines.swap(a % n, b % n),
            }
        }
        let mutated = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        if verifies(mutated.as_bytes(), key)? {
            prop_assert_eq!(meaning(mutated.as_bytes()), meaning(text.as_bytes()));
        }
    }
}
