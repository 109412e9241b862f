//! The signed ledger end to end: real mutations are signed, `audit verify`
//! checks chain and signatures, `audit export` writes a file that both
//! `drover audit verify --export` and the independent Python verifier
//! (scripts/verify-ledger-export.py) accept, and every kind of tampering with
//! the export or the database is caught, naming the line or entry.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use drover_core::keys::SigningKey;
use drover_core::ledger::Entry;
use serde_json::Value;

const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.test-venv/bin/python");
const VERIFIER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/verify-ledger-export.py"
);

/// A store with a few real mutations (build, tag, sign, tag), its export,
/// and a copy of the host public key kept outside the store, as a verifier
/// would receive it out of band.
struct Exported {
    env: Env,
    file: PathBuf,
    key: PathBuf,
    lines: Vec<String>,
}

fn exported() -> Exported {
    let env = sample_env();
    let digest = env.build(&[]);
    env.ok(&["tag", &digest, "sample:prod"]);
    env.ok(&["sign", "sample:prod"]);
    env.ok(&["tag", "sample:prod", "sample:again"]);
    let text = env.ok(&["audit", "verify"]);
    assert!(text.starts_with("ledger valid: "), "{text}");
    let report: Value = env.json(&["audit", "verify"]);
    let entries = report["entries"].as_u64().unwrap();
    assert!(entries >= 4, "{report:#}");
    assert_eq!(report["signed"], entries, "{report:#}");
    assert_eq!(report["unsigned"], 0, "{report:#}");

    let key = env.dir.path().join("trusted.pub");
    fs::copy(env.store().join("keys/host.pub"), &key).unwrap();
    let file = env.dir.path().join("ledger.jsonl");
    env.ok(&["audit", "export", "--out", file.to_str().unwrap()]);
    let lines: Vec<String> = fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len() as u64, entries + 1, "a header and every entry");
    Exported {
        env,
        file,
        key,
        lines,
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn drover_verify(env: &Env, file: &Path, keys: &[&Path]) -> Output {
    let mut args = vec!["audit", "verify", "--export", file.to_str().unwrap()];
    for k in keys {
        args.extend(["--key", k.to_str().unwrap()]);
    }
    env.run(&args)
}

/// The Python verifier's result, or None (with the reason printed) when
/// the test venv is missing.
fn python_verify(file: &Path, keys: &[&Path]) -> Option<Output> {
    if !Path::new(PYTHON).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{PYTHON} is required in CI (scripts/setup.sh installs it)"
        );
        eprintln!("skipping the Python verifier: {PYTHON} is missing (run scripts/setup.sh)");
        return None;
    }
    let mut cmd = Command::new(PYTHON);
    cmd.arg(VERIFIER).arg(file);
    for k in keys {
        cmd.arg("--key").arg(k);
    }
    Some(cmd.output().expect("run the Python verifier"))
}

/// Both verifiers accept `file`.
fn assert_valid(env: &Env, file: &Path, keys: &[&Path]) {
    let out = drover_verify(env, file, keys);
    assert!(out.status.success(), "drover:\n{}", show(&out));
    assert!(stdout(&out).starts_with("export valid: "), "{}", show(&out));
    if let Some(out) = python_verify(file, keys) {
        assert!(out.status.success(), "python:\n{}", show(&out));
        assert!(stdout(&out).starts_with("export valid: "), "{}", show(&out));
    }
}

/// Both verifiers reject `lines` (written to a file) with exit 3, naming
/// `line` first and saying `why`.
fn assert_rejected(x: &Exported, name: &str, lines: &[String], line: u64, why: &str) {
    assert_rejected_with(x, name, lines, &[&x.key], line, why);
}

fn assert_rejected_with(
    x: &Exported,
    name: &str,
    lines: &[String],
    keys: &[&Path],
    line: u64,
    why: &str,
) {
    let file = x.env.dir.path().join(format!("{name}.jsonl"));
    fs::write(&file, lines.join("\n") + "\n").unwrap();
    let expect = format!("export NOT valid: line {line}");
    let out = drover_verify(&x.env, &file, keys);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{name}: drover:\n{}",
        show(&out)
    );
    let text = stdout(&out);
    assert!(
        text.starts_with(&expect) && text.contains(why),
        "{name}: drover said {text:?}, expected {expect:?} … {why:?}"
    );
    if let Some(out) = python_verify(&file, keys) {
        assert_eq!(
            out.status.code(),
            Some(3),
            "{name}: python:\n{}",
            show(&out)
        );
        let text = stdout(&out);
        assert!(
            text.starts_with(&expect) && text.contains(why),
            "{name}: python said {text:?}, expected {expect:?} … {why:?}"
        );
    }
}

fn entry(line: &str) -> Entry {
    serde_json::from_str(line).unwrap()
}

fn line(e: &Entry) -> String {
    serde_json::to_string(e).unwrap()
}

common::backends!(an_export_verifies_with_drover_and_independently);
fn an_export_verifies_with_drover_and_independently() {
    let x = exported();
    assert_valid(&x.env, &x.file, &[&x.key]);

    // Self-describing: the header names the format and carries the key.
    let header: Value = serde_json::from_str(&x.lines[0]).unwrap();
    assert_eq!(header["format"], "drover-ledger-export");
    assert_eq!(header["version"], 1);
    assert_eq!(
        header["public_key"].as_str().unwrap(),
        fs::read_to_string(&x.key).unwrap()
    );
    for (i, l) in x.lines[1..].iter().enumerate() {
        let e = entry(l);
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(e.keyid.as_deref(), header["keyid"].as_str());
        assert!(e.signature.is_some());
    }

    // A tail export (`--since`) chains to the header's prev_hash.
    let tail = x.env.dir.path().join("tail.jsonl");
    x.env.ok(&[
        "audit",
        "export",
        "--since",
        "3",
        "--out",
        tail.to_str().unwrap(),
    ]);
    let text = fs::read_to_string(&tail).unwrap();
    assert_eq!(text.lines().count(), x.lines.len() - 2);
    assert_valid(&x.env, &tail, &[&x.key]);
    // ... and to stdout, for piping.
    let piped = x.env.ok(&["audit", "export", "--since", "3"]);
    assert_eq!(
        piped.lines().skip(1).collect::<Vec<_>>(),
        text.lines().skip(1).collect::<Vec<_>>()
    );

    // --export without --key is refused: the key inside the file proves nothing.
    let out = x
        .env
        .run(&["audit", "verify", "--export", x.file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

common::backends!(a_tampered_export_fails_both_verifiers_at_the_bad_line);
fn a_tampered_export_fails_both_verifiers_at_the_bad_line() {
    let x = exported();
    let n = x.lines.len() as u64; // the last line's number

    // A changed detail: entry 2 (line 3) no longer matches its hash.
    let mut lines = x.lines.clone();
    let mut e = entry(&lines[2]);
    e.details["tag"] = "evil:1".into();
    lines[2] = line(&e);
    assert_rejected(&x, "detail", &lines, 3, "hash does not match its content");

    // The same change, re-hashed: the chain holds at line 3, the host's
    // signature does not.
    e.hash = e.compute_hash();
    lines[2] = line(&e);
    assert_rejected(&x, "rehashed", &lines, 3, "signature does not match");

    // A removed line: a gap in the sequence.
    let mut lines = x.lines.clone();
    lines.remove(2);
    assert_rejected(&x, "removed", &lines, 3, "entry 2 was expected here");

    // The last line removed: the signed header says where the file ends.
    let mut lines = x.lines.clone();
    lines.pop();
    assert_rejected(
        &x,
        "truncated",
        &lines,
        n,
        "lines were removed from the end",
    );

    // Reordered lines.
    let mut lines = x.lines.clone();
    lines.swap(2, 3);
    assert_rejected(&x, "reordered", &lines, 3, "entry 2 was expected here");

    // Re-hashed and signed by another key (`drover key generate`).
    let other = x.env.dir.path().join("other");
    x.env.ok(&["key", "generate", other.to_str().unwrap()]);
    let mallory = SigningKey::load(&other.with_extension("key")).unwrap();
    let mut lines = x.lines.clone();
    let mut e = entry(&lines[2]);
    e.actor = "mallory@elsewhere".into();
    e.hash = e.compute_hash();
    e.sign(&mallory);
    lines[2] = line(&e);
    assert_rejected(&x, "other-key", &lines, 3, "not a trusted key");
    // ... still claiming the host's key id.
    e.keyid = entry(&x.lines[2]).keyid;
    lines[2] = line(&e);
    assert_rejected(
        &x,
        "other-key-host-id",
        &lines,
        3,
        "signature does not match",
    );

    // A stripped signature.
    let mut lines = x.lines.clone();
    let mut e = entry(&lines[3]);
    (e.keyid, e.signature) = (None, None);
    lines[3] = line(&e);
    assert_rejected(&x, "stripped", &lines, 4, "unsigned, but the header says");

    // The header's end moved back (hiding the last entry): its signature
    // no longer matches.
    let mut lines = x.lines.clone();
    let mut h: Value = serde_json::from_str(&lines[0]).unwrap();
    h["last_seq"] = (n - 2).into();
    lines[0] = h.to_string();
    lines.pop();
    assert_rejected(&x, "header", &lines, 1, "header's signature does not match");

    // The whole file re-signed by another key: only the trusted key counts,
    // not the one the file carries.
    let pub_other = other.with_extension("pub");
    assert_rejected_with(
        &x,
        "untrusted",
        &x.lines,
        &[&pub_other],
        1,
        "not a trusted key",
    );
}

// SQLite only: it edits drover.db behind drover's back with sqlite3.
#[test]
fn a_tampered_database_is_caught_by_audit_verify() {
    if !require("sqlite3") {
        return;
    }
    let x = exported();
    let db = x.env.store().join("drover.db");
    let sqlite = |sql: &str| {
        let out = Command::new("sqlite3")
            .arg(&db)
            .arg(format!(
                "DROP TRIGGER IF EXISTS ledger_no_update; DROP TRIGGER IF EXISTS ledger_no_delete; {sql}"
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "sqlite3 {sql}:\n{}", show(&out));
    };
    let verify_fails = |seq: u64, why: &str| {
        let out = x.env.run(&["audit", "verify"]);
        assert_eq!(out.status.code(), Some(3), "{}", show(&out));
        let text = stdout(&out);
        assert!(
            text.starts_with(&format!("ledger NOT valid: entry {seq}: ")) && text.contains(why),
            "expected entry {seq} … {why:?}, got {text:?}"
        );
        // And a tampered ledger is not exported under the host's signature.
        let out = x.env.run(&["audit", "export"]);
        assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    };

    // Entry 2 re-hashed after a change (the chain alone would only notice
    // at entry 3): its signature names it.
    let mut e = entry(&x.lines[2]);
    e.details["tag"] = "evil:1".into();
    e.hash = e.compute_hash();
    sqlite(&format!(
        "UPDATE ledger SET details = '{}', hash = '{}' WHERE seq = 2",
        e.details, e.hash
    ));
    verify_fails(2, "signature does not match");

    // Put it back, and the ledger verifies again.
    let orig = entry(&x.lines[2]);
    sqlite(&format!(
        "UPDATE ledger SET details = '{}', hash = '{}' WHERE seq = 2",
        orig.details, orig.hash
    ));
    x.env.ok(&["audit", "verify"]);

    // A stripped signature after signed entries.
    sqlite("UPDATE ledger SET keyid = NULL, signature = NULL WHERE seq = 3");
    verify_fails(3, "unsigned, but every entry from 1 on is signed");

    // Verifying with a key other than the signer's.
    let orig3 = entry(&x.lines[3]);
    sqlite(&format!(
        "UPDATE ledger SET keyid = '{}', signature = '{}' WHERE seq = 3",
        orig3.keyid.unwrap(),
        orig3.signature.unwrap()
    ));
    x.env
        .ok(&["audit", "verify", "--key", x.key.to_str().unwrap()]);
    let other = x.env.dir.path().join("other");
    x.env.ok(&["key", "generate", other.to_str().unwrap()]);
    let out = x.env.run(&[
        "audit",
        "verify",
        "--key",
        other.with_extension("pub").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        stdout(&out).contains("entry 1: signed by key"),
        "{}",
        show(&out)
    );
}

// SQLite only: it edits drover.db behind drover's back with sqlite3.
#[test]
fn entries_from_before_signing_are_counted_not_failed() {
    if !require("sqlite3") {
        return;
    }
    let x = exported();
    // As if entries 1 and 2 were written by a drover without ledger signing
    // (migration 5 then records that signing began at entry 3).
    let out = Command::new("sqlite3")
        .arg(x.env.store().join("drover.db"))
        .arg("DROP TRIGGER ledger_no_update; UPDATE ledger SET keyid = NULL, signature = NULL WHERE seq <= 2; \
              UPDATE store_meta SET value = '3' WHERE key = 'ledger_signed_from';")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    // Such a drover wrote no signed head either: the next open signs one,
    // taking where signing began from the database that once.
    fs::remove_file(x.env.store().join("ledger.head")).unwrap();
    let text = x.env.ok(&["audit", "verify"]);
    assert!(
        text.contains("2 unsigned (written before ledger signing)"),
        "{text}"
    );
    let file = x.env.dir.path().join("legacy.jsonl");
    x.env
        .ok(&["audit", "export", "--out", file.to_str().unwrap()]);
    let header: Value =
        serde_json::from_str(fs::read_to_string(&file).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(header["signed_from"], 3);
    assert_valid(&x.env, &file, &[&x.key]);

    // Regression (review): stripping every signature no longer passes the
    // ledger off as older than signing.
    let out = Command::new("sqlite3")
        .arg(x.env.store().join("drover.db"))
        .arg("UPDATE ledger SET keyid = NULL, signature = NULL;")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let out = x.env.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("entry 3: unsigned, but every entry from 3 on is signed"),
        "{}",
        show(&out)
    );
}
