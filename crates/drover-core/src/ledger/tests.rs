use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use super::entry::{compose_actor, sys};
use super::*;
use crate::clock;
use crate::digest::Digest;
use crate::error::Error;
use crate::keys::SigningKey;
use crate::keys::{self, PublicKey};
use crate::state::Db;
use crate::state::pgtest::{self, backends};
use crate::state::sql::Dialect;
use serde_json::json;

const N: u64 = 30;

fn fresh() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = pgtest::open(&dir.path().join("drover.db")).unwrap();
    (dir, db)
}

/// A ledger of `N` entries with a little variety in every field.
fn populated() -> (tempfile::TempDir, Db, Vec<Entry>) {
    let (dir, mut db) = fresh();
    let mut written = Vec::new();
    for i in 1..=N {
        let e = db
            .write(|tx| {
                tx.record(NewEntry::new(
                    if i % 3 == 0 { "gc.run" } else { "tag.set" },
                    [
                        format!("app:v{i}"),
                        Digest::of(&i.to_le_bytes()).to_string(),
                    ],
                    json!({ "i": i, "note": "x" }),
                ))
            })
            .unwrap();
        written.push(e);
    }
    (dir, db, written)
}

/// [`populated`], as if every entry had been written before ledger
/// signing existed: what the hash chain catches on its own.
fn populated_before_signing() -> (tempfile::TempDir, Db, Vec<Entry>) {
    let (dir, db, mut written) = populated();
    tamper(
        &db,
        &format!(
            "UPDATE ledger SET keyid = NULL, signature = NULL;
             UPDATE store_meta SET value = '{}' WHERE key = 'ledger_signed_from';",
            N + 1
        ),
    );
    for e in &mut written {
        e.keyid = None;
        e.signature = None;
    }
    sign_head_from(dir.path(), &db, N + 1);
    (dir, db, written)
}

/// Sign the current head into the file beside the database, saying signing
/// began at `from`: what a store migrated to signing at `from` holds once
/// it has been opened since.
fn sign_head_from(dir: &std::path::Path, db: &Db, from: u64) {
    let (seq, hash) = db.read().ledger_head().unwrap().unwrap();
    let key = keys::host_key(dir).unwrap();
    let head = SignedHead::sign(u64::try_from(seq).unwrap(), &hash, "t", Some(from), &key);
    std::fs::write(dir.join(crate::ledger::head::FILE), head.to_bytes()).unwrap();
}

/// Run SQL as someone with write access to the file would: the
/// append-only triggers are no obstacle to them.
fn tamper(db: &Db, sql: &str) {
    let disable = match db.sql().dialect() {
        Dialect::Sqlite => {
            "DROP TRIGGER IF EXISTS ledger_no_update; DROP TRIGGER IF EXISTS ledger_no_delete;"
        }
        Dialect::Postgres => "ALTER TABLE ledger DISABLE TRIGGER USER;",
    };
    db.sql().execute_batch(&format!("{disable} {sql}")).unwrap();
}

/// The host key of the store `db` is in, the one `append` signs with.
fn trusted(db: &Db) -> Vec<PublicKey> {
    vec![
        keys::host_key(crate::state::state_dir(db.path()))
            .unwrap()
            .public(),
    ]
}

fn problem(db: &Db) -> Problem {
    let report = db.read().verify_ledger(&trusted(db)).unwrap();
    report.problem.expect("verify found nothing wrong")
}

backends! {
fn an_untouched_ledger_verifies() {
    let (_dir, db, written) = populated();
    let report = db.read().verify_ledger(&trusted(&db)).unwrap();
    assert_eq!(report.problem, None);
    assert!(report.is_ok());
    assert_eq!(report.entries, N);
    let last = written.last().unwrap();
    assert_eq!(report.head, Some((N, last.hash.clone())));
    assert_eq!((report.signed, report.unsigned), (N, 0));
    assert_eq!(report.first_signed, Some(1));
    report.into_result().unwrap();
}
}

backends! {
fn entries_are_signed_by_the_host_key_over_their_hash() {
    let (dir, db, written) = populated();
    let host = keys::host_key(dir.path()).unwrap().public();
    let stored = db.read().ledger(&Filter::default()).unwrap();
    assert_eq!(stored, written, "keyid and signature read back as written");
    for e in &written {
        assert_eq!(e.keyid.as_deref(), Some(host.keyid().as_str()));
        let sig = B64.decode(e.signature.as_deref().unwrap()).unwrap();
        assert!(host.verify(e.hash.as_bytes(), &sig), "entry {}", e.seq);
        assert_eq!(e.check_signature(&[host]), Ok(Some(host.keyid().as_str())));
    }
    // The signature is not part of what is hashed.
    let mut unsigned = written[0].clone();
    unsigned.keyid = None;
    unsigned.signature = None;
    assert_eq!(unsigned.compute_hash(), written[0].hash);
}
}

backends! {
fn a_tampered_signature_is_caught_at_its_entry() {
    let (_dir, db, _) = populated();
    // Entry 8's signature is valid, just not for entry 7.
    tamper(
        &db,
        "UPDATE ledger SET signature = (SELECT signature FROM ledger WHERE seq = 8) WHERE seq = 7",
    );
    let p = problem(&db);
    assert_eq!(p.seq, 7, "{p}");
    assert!(
        p.reason.starts_with("signature does not match its hash"),
        "{p}"
    );

    let (_dir, db, _) = populated();
    tamper(
        &db,
        "UPDATE ledger SET signature = 'not base64!' WHERE seq = 9",
    );
    let p = problem(&db);
    assert_eq!(
        (p.seq, p.reason.as_str()),
        (9, "its signature is not base64")
    );
}
}

backends! {
fn a_rehashed_entry_is_caught_by_its_signature() {
    let (_dir, db, written) = populated();
    // Content changed and the hash recomputed, so the chain holds at 15
    // itself; only the signature (and 16's link) can tell.
    let mut forged = written[14].clone();
    forged.subjects = vec!["app:backdoor".into()];
    forged.hash = forged.compute_hash();
    tamper(
        &db,
        &format!(
            r#"UPDATE ledger SET subjects = '["app:backdoor"]', hash = '{}' WHERE seq = 15"#,
            forged.hash
        ),
    );
    let p = problem(&db);
    assert_eq!(p.seq, 15, "{p}");
    assert!(p.reason.contains("re-hashed after signing"), "{p}");
}
}

backends! {
fn a_stripped_signature_after_signed_entries_is_caught() {
    for (what, sql) in [
        (
            "both",
            "UPDATE ledger SET keyid = NULL, signature = NULL WHERE seq = 12",
        ),
        (
            "the signature",
            "UPDATE ledger SET signature = NULL WHERE seq = 12",
        ),
        (
            "the key id",
            "UPDATE ledger SET keyid = NULL WHERE seq = 12",
        ),
    ] {
        let (_dir, db, _) = populated();
        tamper(&db, sql);
        let p = problem(&db);
        assert_eq!(p.seq, 12, "{what}: {p}");
        if what == "both" {
            assert_eq!(
                p.reason,
                "unsigned, but every entry from 1 on is signed (signing began there; its signature was stripped, or it was added without the host key)"
            );
        }
    }
    // The last entry too: nothing after it to break a chain link.
    let (_dir, db, _) = populated();
    tamper(
        &db,
        &format!("UPDATE ledger SET keyid = NULL, signature = NULL WHERE seq = {N}"),
    );
    assert_eq!(problem(&db).seq, N);
}
}

backends! {
fn a_key_that_is_not_trusted_is_caught_and_extra_keys_are_trusted() {
    let (_dir, db, _) = populated();
    let other = SigningKey::generate().unwrap().public();
    let report = db.read().verify_ledger(&[other]).unwrap();
    let p = report.problem.unwrap();
    assert_eq!(p.seq, 1, "{p}");
    assert!(p.reason.contains("which is not a trusted key"), "{p}");
    assert!(p.reason.contains(&trusted(&db)[0].keyid()), "{p}");

    // After a rotation, both the old and the new key are passed.
    let report = db.read().verify_ledger(&[other, trusted(&db)[0]]).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
}
}

backends! {
fn a_tail_rewritten_with_another_key_is_caught() {
    let (_dir, db, written) = populated();
    // Someone with write access but not the host key rewrites entry 20
    // and signs it (and could re-chain everything after it) themselves.
    let mallory = SigningKey::generate().unwrap();
    let mut forged = written[19].clone();
    forged.actor = "mallory@elsewhere".into();
    forged.hash = forged.compute_hash();
    forged.sign(&mallory);
    tamper(
        &db,
        &format!(
            "UPDATE ledger SET actor = '{}', hash = '{}', keyid = '{}', signature = '{}' WHERE seq = 20",
            forged.actor,
            forged.hash,
            forged.keyid.unwrap(),
            forged.signature.unwrap()
        ),
    );
    let p = problem(&db);
    assert_eq!(p.seq, 20, "{p}");
    assert!(p.reason.contains("not a trusted key"), "{p}");

    // Claiming the host's key id does not help: the signature must
    // verify under the key the id names.
    tamper(
        &db,
        &format!(
            "UPDATE ledger SET keyid = '{}' WHERE seq = 20",
            trusted(&db)[0].keyid()
        ),
    );
    let p = problem(&db);
    assert_eq!(p.seq, 20, "{p}");
    assert!(p.reason.starts_with("signature does not match"), "{p}");
}
}

backends! {
fn an_unsigned_prefix_from_before_signing_is_accepted_and_counted() {
    let (dir, mut db, _) = populated();
    tamper(
        &db,
        "UPDATE ledger SET keyid = NULL, signature = NULL WHERE seq <= 5;
         UPDATE store_meta SET value = '6' WHERE key = 'ledger_signed_from';",
    );
    sign_head_from(dir.path(), &db, 6);
    let report = db.read().verify_ledger(&trusted(&db)).unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(
        (report.unsigned, report.signed, report.first_signed),
        (5, N - 5, Some(6))
    );

    // A ledger entirely from before signing verifies too, and the next
    // append starts the signed part.
    let (_dir, mut legacy, _) = populated_before_signing();
    let report = legacy.read().verify_ledger(&trusted(&legacy)).unwrap();
    assert_eq!(
        (report.unsigned, report.signed, report.first_signed),
        (N, 0, None)
    );
    assert!(report.is_ok());
    legacy
        .write(|tx| tx.record(NewEntry::new("tag.set", ["x"], json!({}))))
        .unwrap();
    let report = legacy.read().verify_ledger(&trusted(&legacy)).unwrap();
    assert_eq!(
        (report.unsigned, report.signed, report.first_signed),
        (N, 1, Some(N + 1))
    );
    assert!(report.is_ok());

    // Appending to the first store keeps it valid as well.
    db.write(|tx| tx.record(NewEntry::new("tag.set", ["y"], json!({}))))
        .unwrap();
    assert!(db.read().verify_ledger(&trusted(&db)).unwrap().is_ok());
}
}

backends! {
/// Regression (review): with write access to the database but not the
/// key, stripping every signature made the whole ledger look older than
/// signing, and a rewritten history then verified.
fn stripping_every_signature_is_caught() {
    let (_dir, db, _) = populated();
    tamper(&db, "UPDATE ledger SET keyid = NULL, signature = NULL");
    let p = problem(&db);
    assert_eq!(p.seq, 1, "{p}");
    assert!(p.reason.contains("every entry from 1 on is signed"), "{p}");
}
}

backends! {
fn an_empty_ledger_verifies() {
    let (_dir, db) = fresh();
    let report = db.read().verify_ledger(&trusted(&db)).unwrap();
    assert_eq!(
        report,
        VerifyReport {
            entries: 0,
            head: None,
            signed: 0,
            unsigned: 0,
            first_signed: None,
            signing_required_from: Some(1),
            signed_head: None,
            problem: None
        }
    );
}
}

backends! {
fn entries_chain_from_genesis_and_read_back_as_written() {
    let (_dir, db, written) = populated();
    assert_eq!(written[0].seq, 1);
    assert_eq!(written[0].prev_hash, GENESIS_HASH);
    assert_eq!(GENESIS_HASH.len(), "sha256:".len() + 64);
    for pair in written.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    for e in &written {
        assert_eq!(e.hash, e.compute_hash());
        assert!(e.hash.parse::<Digest>().is_ok(), "{}", e.hash);
        assert!(clock::parse_rfc3339_secs(&e.time).is_some(), "{}", e.time);
        assert_eq!(e.actor, actor());
    }
    let read = db.read().ledger(&Filter::default()).unwrap();
    assert_eq!(read, written);
}
}

backends! {
/// An outside verifier must be able to recompute the hash from the
/// documented encoding alone. This pins the encoding: if it changes,
/// every existing ledger stops verifying.
fn the_hash_is_sha256_of_the_documented_canonical_json() {
    let e = Entry {
        seq: 42,
        time: "2026-11-22T02:11:23.456Z".into(),
        actor: "alice(via root)@build-01".into(),
        action: "tag.set".into(),
        subjects: vec!["app:1.0".into(), "sha256:ab".into()],
        // Insertion order deliberately unsorted, at two depths.
        details: json!({
            "zeta": [3, {"b": null, "a": true}],
            "alpha": "tab\there \"quoted\" \\ /é\u{1}",
            "Mid": -7
        }),
        prev_hash: GENESIS_HASH.into(),
        hash: "ignored".into(),
        // Not hashed: the expected bytes below have neither.
        keyid: Some("k".into()),
        signature: Some("s".into()),
    };
    let expected = concat!(
        r#"{"action":"tag.set","actor":"alice(via root)@build-01","#,
        r#""details":{"Mid":-7,"alpha":"tab\there \"quoted\" \\ /é\u0001","zeta":[3,{"a":true,"b":null}]},"#,
        r#""prev_hash":"sha256:0000000000000000000000000000000000000000000000000000000000000000","#,
        r#""seq":42,"subjects":["app:1.0","sha256:ab"],"time":"2026-11-22T02:11:23.456Z"}"#,
    );
    assert_eq!(String::from_utf8(e.canonical_bytes()).unwrap(), expected);
    // Both cross-checked against Python: json.dumps(entry_without_hash,
    // sort_keys=True, separators=(",", ":"), ensure_ascii=False), then
    // hashlib.sha256 of its UTF-8.
    assert_eq!(
        e.compute_hash(),
        "sha256:3bcfa02986abca8f3bfee6d27f555c9225df66d4ad0ee54fbfc2c7457bca0449"
    );
}
}

backends! {
/// The signature vector of docs/ledger-format.md: the entry above
/// (hash `sha256:3bcf…0449`) signed by the key whose Ed25519 seed is the
/// bytes 0, 1, …, 31, computed with Python's `cryptography`.
fn the_signature_is_ed25519_of_the_hash_string() {
    let public: [u8; 32] =
        hex::decode("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
            .unwrap()
            .try_into()
            .unwrap();
    let public = PublicKey::from_raw(public);
    assert_eq!(
        public.keyid(),
        "63d00ee3cf4f5c61ad94efa696c68f13b608fe56ecea13fb144a6fd18e9235b9"
    );
    let mut e = Entry {
        seq: 42,
        time: String::new(),
        actor: String::new(),
        action: String::new(),
        subjects: vec![],
        details: Value::Null,
        prev_hash: String::new(),
        // Only the hash string is signed.
        hash: "sha256:3bcfa02986abca8f3bfee6d27f555c9225df66d4ad0ee54fbfc2c7457bca0449".into(),
        keyid: Some(public.keyid()),
        signature: Some(
            "eNnU8s/Uj16WnX86dkDDKwQG2tSsb7xqgIaMlvzVAu4NxjexTvKbqLJn+PPUWYmuCU6g3jLCNWv1xOB4+KMAAA=="
                .into(),
        ),
    };
    assert_eq!(
        e.check_signature(&[public]),
        Ok(Some(public.keyid().as_str()))
    );
    e.hash.replace_range(7..8, "4");
    assert!(e.check_signature(&[public]).is_err());
}
}

backends! {
fn details_are_stored_canonically() {
    let (_dir, mut db) = fresh();
    let e = db
        .write(|tx| {
            tx.record(NewEntry::new(
                "x",
                ["s"],
                json!({"b": 1, "a": {"d": 2, "c": 3}}),
            ))
        })
        .unwrap();
    assert_eq!(e.details.to_string(), r#"{"a":{"c":3,"d":2},"b":1}"#);
    let stored: String = db
        .sql()
        .query_row("SELECT details FROM ledger", (), |r| r.get(0))
        .unwrap();
    assert_eq!(stored, r#"{"a":{"c":3,"d":2},"b":1}"#);
}
}

backends! {
fn a_rolled_back_transaction_leaves_no_entry() {
    let (_dir, mut db, written) = populated();
    let err = db
        .write(|tx| {
            tx.record(NewEntry::new("tag.set", ["app:oops"], json!({})))?;
            Err::<(), _>(Error::Usage("the mutation failed".into()))
        })
        .unwrap_err();
    assert!(matches!(err, Error::Usage(_)));
    let report = db.read().verify_ledger(&trusted(&db)).unwrap();
    assert_eq!(report.entries, N);
    assert_eq!(report.head, Some((N, written.last().unwrap().hash.clone())));
    assert!(report.is_ok());
}
}

backends! {
fn changing_any_field_is_caught_at_that_entry() {
    for (column, value) in [
        ("time", "'2000-01-01T00:00:00.000Z'"),
        ("actor", "'mallory@elsewhere'"),
        ("action", "'tag.delete'"),
        ("subjects", r#"'["app:v7"]'"#),
        ("details", r#"'{"i":7,"note":"y"}'"#),
        ("hash", "'sha256:0123'"),
    ] {
        let (_dir, db, _) = populated();
        tamper(
            &db,
            &format!("UPDATE ledger SET {column} = {value} WHERE seq = 7"),
        );
        let p = problem(&db);
        assert_eq!(p.seq, 7, "{column}: {p}");
        assert_eq!(
            p.to_string(),
            "entry 7: hash does not match its content (changed after it was written)",
            "{column}"
        );
    }
}
}

backends! {
fn changing_prev_hash_is_caught_at_that_entry() {
    let (_dir, db, written) = populated();
    tamper(
        &db,
        &format!(
            "UPDATE ledger SET prev_hash = '{}' WHERE seq = 7",
            written[0].hash
        ),
    );
    let p = problem(&db);
    assert_eq!(p.seq, 7, "{p}");
    assert!(
        p.reason.contains("prev_hash does not match entry 6's hash"),
        "{p}"
    );
}
}

backends! {
fn reformatting_details_without_changing_them_is_not_tampering() {
    let (_dir, db, _) = populated();
    tamper(
        &db,
        r#"UPDATE ledger SET details = '{ "note": "x", "i": 7 }' WHERE seq = 7"#,
    );
    assert!(db.read().verify_ledger(&trusted(&db)).unwrap().is_ok());
}
}

backends! {
fn undecodable_rows_are_reported_not_errors() {
    for (column, value) in [
        ("subjects", "'not json'"),
        ("subjects", r#"'[1, 2]'"#),
        ("details", "'{'"),
        ("time", "x'ff'"),
    ] {
        let (_dir, db, _) = populated();
        if value.starts_with("x'") && db.sql().dialect() == Dialect::Postgres {
            continue; // a blob in a text column: only SQLite stores one
        }
        tamper(
            &db,
            &format!("UPDATE ledger SET {column} = {value} WHERE seq = 11"),
        );
        let p = problem(&db);
        assert_eq!(p.seq, 11, "{column}={value}: {p}");
        assert!(p.reason.contains(column), "{p}");
        let err = db.read().ledger(&Filter::default()).unwrap_err();
        assert!(
            matches!(err, Error::LedgerTampered { seq: 11, .. }),
            "{err:?}"
        );
    }
}
}

backends! {
fn a_deleted_entry_is_caught_where_it_was() {
    let (_dir, db, _) = populated();
    tamper(&db, "DELETE FROM ledger WHERE seq = 12");
    let p = problem(&db);
    assert_eq!(
        p.to_string(),
        "entry 12: missing (the chain jumps from 11 to 13)"
    );

    let (_dir, db, _) = populated();
    tamper(&db, "DELETE FROM ledger WHERE seq IN (12, 13, 14)");
    let p = problem(&db);
    assert_eq!(
        p.to_string(),
        "entry 12: missing (the chain jumps from 11 to 15)"
    );
}
}

backends! {
fn deleting_the_first_entries_is_caught_at_entry_1() {
    let (_dir, db, _) = populated();
    tamper(&db, "DELETE FROM ledger WHERE seq <= 2");
    let p = problem(&db);
    assert_eq!(p.seq, 1, "{p}");
    assert!(p.reason.contains("starts at entry 3"), "{p}");
}
}

backends! {
fn deleting_and_renumbering_is_caught_by_the_chain() {
    // A cleverer deletion: close the gap so the numbering looks intact.
    let (_dir, db, _) = populated();
    tamper(
        &db,
        "DELETE FROM ledger WHERE seq = 12;
         UPDATE ledger SET seq = -seq WHERE seq > 12;
         UPDATE ledger SET seq = -seq - 1 WHERE seq < 0;
         UPDATE ledger_head SET seq = seq - 1;",
    );
    let p = problem(&db);
    assert_eq!(p.seq, 12, "{p}");
}
}

backends! {
fn an_inserted_entry_is_caught_where_the_chain_breaks() {
    // What the chain alone catches: on a signed ledger the unsigned
    // forgery is caught at itself first (see the signature tests).
    let (_dir, db, written) = populated_before_signing();
    // The strongest insertion: the forged entry has a correct hash and
    // chains to its predecessor; later entries are renumbered and the
    // head moved so the numbering stays contiguous.
    let mut forged = written[13].clone();
    forged.seq = 15;
    forged.action = "tag.set".into();
    forged.subjects = vec!["app:backdoor".into()];
    forged.details = json!({});
    forged.prev_hash = written[13].hash.clone(); // entry 14
    forged.hash = forged.compute_hash();
    tamper(
        &db,
        &format!(
            "UPDATE ledger SET seq = -seq WHERE seq >= 15;
             UPDATE ledger SET seq = 1 - seq WHERE seq < 0;
             INSERT INTO ledger VALUES (15, '{}', '{}', '{}', '[\"app:backdoor\"]', '{{}}', '{}', '{}', NULL, NULL);
             UPDATE ledger_head SET seq = seq + 1;",
            forged.time, forged.actor, forged.action, forged.prev_hash, forged.hash
        ),
    );
    let report = db.read().verify_ledger(&trusted(&db)).unwrap();
    assert_eq!(report.entries, N + 1);
    // Renumbering changed entry 16's seq, which its hash covers, so both
    // checks fail there.
    let p = report.problem.unwrap();
    assert_eq!(p.seq, 16, "{p}");
    assert!(
        p.reason
            .contains("prev_hash does not match entry 15's hash"),
        "{p}"
    );
    assert!(p.reason.contains("inserted"), "{p}");
}
}

backends! {
fn a_replaced_entry_is_caught_by_its_successor() {
    // The chain alone; signed, the forgery fails its own signature.
    let (_dir, db, written) = populated_before_signing();
    // A forged entry 15 that is internally consistent and chains to 14.
    let mut forged = written[14].clone();
    forged.subjects = vec!["app:backdoor".into()];
    forged.hash = forged.compute_hash();
    tamper(
        &db,
        &format!(
            r#"UPDATE ledger SET subjects = '["app:backdoor"]', hash = '{}' WHERE seq = 15"#,
            forged.hash
        ),
    );
    let p = problem(&db);
    assert_eq!(
        p.to_string(),
        "entry 16: prev_hash does not match entry 15's hash \
         (the entry before it was replaced, or entries were inserted or reordered)"
    );
}
}

backends! {
fn a_naive_insertion_is_caught_at_the_inserted_entry() {
    let (_dir, db, _) = populated();
    tamper(
        &db,
        "UPDATE ledger SET seq = -seq WHERE seq >= 15;
         UPDATE ledger SET seq = 1 - seq WHERE seq < 0;
         INSERT INTO ledger VALUES (15, 't', 'a', 'x', '[]', '{}', 'sha256:00', 'sha256:11', NULL, NULL);",
    );
    assert_eq!(problem(&db).seq, 15);
}
}

backends! {
fn an_entry_appended_behind_the_heads_back_is_caught() {
    let (_dir, db, written) = populated_before_signing();
    let mut forged = written[(N - 1) as usize].clone();
    forged.seq = N + 1;
    forged.prev_hash = forged.hash.clone();
    forged.hash = forged.compute_hash();
    tamper(
        &db,
        &format!(
            "INSERT INTO ledger SELECT {}, time, actor, action, subjects, details, '{}', '{}', NULL, NULL FROM ledger WHERE seq = {N}",
            forged.seq, forged.prev_hash, forged.hash
        ),
    );
    let p = problem(&db);
    assert_eq!(p.seq, N + 1, "{p}");
    // Caught twice over: beyond the head, and unsigned where signing
    // had begun; the signature rule is checked first.
    assert!(
        p.reason.contains("after the recorded ledger head")
            || p.reason.contains("every entry from"),
        "{p}"
    );
}
}

backends! {
fn swapped_entries_are_caught_at_the_first() {
    let (_dir, db, _) = populated();
    tamper(
        &db,
        "CREATE TEMP TABLE swap AS SELECT * FROM ledger WHERE seq IN (9, 20);
         UPDATE ledger
            SET (time, actor, action, subjects, details, prev_hash, hash) =
                (SELECT time, actor, action, subjects, details, prev_hash, hash
                   FROM swap WHERE swap.seq = 29 - ledger.seq)
          WHERE seq IN (9, 20);",
    );
    let p = problem(&db);
    assert_eq!(p.seq, 9, "{p}");
    assert!(p.reason.contains("reordered"), "{p}");
}
}

backends! {
fn swapped_seq_numbers_are_caught_at_the_first() {
    let (_dir, db, _) = populated();
    tamper(
        &db,
        "UPDATE ledger SET seq = -1 WHERE seq = 9;
         UPDATE ledger SET seq = 9 WHERE seq = 10;
         UPDATE ledger SET seq = 10 WHERE seq = -1;",
    );
    assert_eq!(problem(&db).seq, 9);
}
}

backends! {
fn a_deleted_tail_is_caught_at_the_first_missing_entry() {
    let (_dir, db, _) = populated();
    tamper(&db, "DELETE FROM ledger WHERE seq > 26");
    let p = problem(&db);
    assert_eq!(p.seq, 27, "{p}");
    assert!(p.reason.contains("the tail was deleted"), "{p}");
    assert!(p.reason.contains(&format!("records {N} entries")), "{p}");
}
}

backends! {
fn deleting_every_entry_is_caught() {
    let (_dir, db, _) = populated();
    tamper(&db, "DELETE FROM ledger");
    let p = problem(&db);
    assert_eq!(p.seq, 1, "{p}");
}
}

backends! {
fn an_edited_head_is_caught() {
    let (_dir, db, written) = populated();
    tamper(
        &db,
        &format!("UPDATE ledger_head SET hash = '{}'", written[3].hash),
    );
    let p = problem(&db);
    assert_eq!(p.seq, N, "{p}");
    assert!(p.reason.contains("head was edited"), "{p}");

    let (_dir, db, written) = populated();
    tamper(
        &db,
        &format!(
            "UPDATE ledger_head SET seq = 25, hash = '{}'",
            written[24].hash
        ),
    );
    assert_eq!(problem(&db).seq, 26);

    let (_dir, db, _) = populated();
    tamper(&db, "DELETE FROM ledger_head");
    let p = problem(&db);
    assert_eq!(p.seq, N, "{p}");
    assert!(p.reason.contains("head record is missing"), "{p}");
}
}

backends! {
fn the_first_problem_is_reported_when_there_are_several() {
    let (_dir, db, _) = populated();
    tamper(
        &db,
        "UPDATE ledger SET action = 'x' WHERE seq = 20;
         UPDATE ledger SET action = 'x' WHERE seq = 5;
         DELETE FROM ledger WHERE seq > 28;",
    );
    let report = db.read().verify_ledger(&trusted(&db)).unwrap();
    assert_eq!(report.entries, 28, "counting continues past the problem");
    assert_eq!(report.problem.unwrap().seq, 5);
}
}

backends! {
fn tampering_becomes_a_corrupt_error() {
    let (_dir, db, _) = populated();
    tamper(&db, "UPDATE ledger SET actor = 'x' WHERE seq = 3");
    let err = db
        .read()
        .verify_ledger(&trusted(&db))
        .unwrap()
        .into_result()
        .unwrap_err();
    assert!(
        matches!(err, Error::LedgerTampered { seq: 3, .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), crate::error::ErrorKind::Corrupt);
}
}

backends! {
/// Regression guard: appending after the tail was deleted must not
/// quietly reconnect the chain and erase the evidence.
fn appending_after_a_deleted_tail_keeps_the_gap_visible() {
    let (dir, mut db, _) = populated();
    tamper(&db, "DELETE FROM ledger WHERE seq > 26");
    // The signed head names entry 30, which is gone: refused outright.
    let err = db
        .write(|tx| tx.record(NewEntry::new("tag.set", ["app:next"], json!({}))))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("entry 30 is not the one it signed (it is gone"),
        "{err}"
    );
    // Without the file (a store from before it), the chain keeps the gap.
    std::fs::remove_file(dir.path().join(crate::ledger::head::FILE)).unwrap();
    let e = db
        .write(|tx| tx.record(NewEntry::new("tag.set", ["app:next"], json!({}))))
        .unwrap();
    assert_eq!(e.seq, N + 1);
    let p = problem(&db);
    assert_eq!(
        p.to_string(),
        format!("entry 27: missing (the chain jumps from 26 to {})", N + 1)
    );
}
}

backends! {
fn append_refuses_without_a_trustworthy_head() {
    let (_dir, mut db, _) = populated();
    tamper(&db, "DELETE FROM ledger_head");
    let err = db
        .write(|tx| tx.record(NewEntry::new("tag.set", ["x"], json!({}))))
        .unwrap_err();
    assert!(matches!(err, Error::LedgerTampered { .. }), "{err:?}");

    let (_dir, mut db, _) = populated();
    tamper(&db, "UPDATE ledger_head SET seq = 20");
    let err = db
        .write(|tx| tx.record(NewEntry::new("tag.set", ["x"], json!({}))))
        .unwrap_err();
    assert!(
        matches!(err, Error::LedgerTampered { seq: 21, .. }),
        "{err:?}"
    );
}
}

backends! {
/// Regression guard (review of the storage seam): the refusal comes before
/// the key. A refused append must not load the host key, let alone create a
/// new one that `audit verify` would then trust by default; and a missing key
/// must not hide the tampering behind a "key is missing" error.
fn a_refused_append_touches_no_key() {
    let (dir, db, _) = populated();
    tamper(&db, "DELETE FROM ledger_head");
    drop(db);
    let keys = dir.path().join("keys");
    std::fs::remove_dir_all(&keys).unwrap();
    let mut db = pgtest::open(&dir.path().join("drover.db")).unwrap();
    let err = db
        .write(|tx| tx.record(NewEntry::new("tag.set", ["x"], json!({}))))
        .unwrap_err();
    assert!(matches!(err, Error::LedgerTampered { .. }), "{err:?}");
    assert!(!keys.exists(), "a refused append created a host key");
}
}

backends! {
fn concurrent_appenders_produce_one_contiguous_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    drop(pgtest::open(&path).unwrap()); // create + migrate once, up front
    let per_thread = 40u64;
    let workers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut db = pgtest::open(&path).unwrap();
                (0..per_thread)
                    .map(|i| {
                        db.write(|tx| {
                            tx.record(NewEntry::new(
                                format!("test.{name}"),
                                [i.to_string()],
                                json!({}),
                            ))
                        })
                        .unwrap()
                        .seq
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=2 * per_thread).collect::<Vec<_>>());

    let db = pgtest::open(&path).unwrap();
    let report = db.read().verify_ledger(&trusted(&db)).unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(report.entries, 2 * per_thread);
}
}

backends! {
fn verify_sees_one_snapshot_while_others_append() {
    let (dir, db, _) = populated();
    // Hold a read snapshot open, append from another handle, and check
    // verify inside the snapshot neither sees half of it nor complains.
    let snapshot = db.sql().snapshot().unwrap();
    let before = db
        .read()
        .verify_ledger(&trusted(&db))
        .unwrap();
    let mut other = pgtest::open(&dir.path().join("drover.db")).unwrap();
    other
        .write(|tx| tx.record(NewEntry::new("tag.set", ["x"], json!({}))))
        .unwrap();
    let during = db
        .read()
        .verify_ledger(&trusted(&db))
        .unwrap();
    assert_eq!(during, before);
    drop(snapshot);
    let after = db.read().verify_ledger(&trusted(&db)).unwrap();
    assert_eq!(after.entries, N + 1);
    assert!(after.is_ok());
}
}

/// Appends with a chosen actor and time, for filter tests.
fn seed(db: &mut Db, rows: &[(&str, &str, &[&str])]) {
    db.write(|tx| {
        for (actor, action, subjects) in rows {
            tx.record_as(
                NewEntry::new(*action, subjects.iter().copied(), json!({})),
                actor.to_string(),
                clock::now_rfc3339(),
            )?;
        }
        Ok(())
    })
    .unwrap();
}

fn seqs(db: &Db, f: Filter) -> Vec<u64> {
    db.read()
        .ledger(&f)
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect()
}

backends! {
fn list_filters_combine() {
    let (_dir, mut db) = fresh();
    seed(
        &mut db,
        &[
            ("alice@h1", "tag.set", &["app:1", "sha256:aaaa"]), // 1
            ("bob@h2", "tag.delete", &["app:1"]),               // 2
            ("alice(via root)@h1", "gc.run", &[]),              // 3
            ("alice@h1", "tag", &["web_1"]),                    // 4
            ("carol@h3", "tagset", &["sha256:bbbb", "app%2"]),  // 5
            ("bob@h2", "tag.set", &["sha256:aaaabbbb"]),        // 6
        ],
    );
    let f = |action: Option<&str>, subject: Option<&str>, actor: Option<&str>| Filter {
        action: action.map(Into::into),
        subject: subject.map(Into::into),
        actor: actor.map(Into::into),
        ..Filter::default()
    };
    assert_eq!(seqs(&db, Filter::default()), [1, 2, 3, 4, 5, 6]);
    assert_eq!(seqs(&db, f(Some("tag.set"), None, None)), [1, 6]);
    assert_eq!(seqs(&db, f(Some("tag.*"), None, None)), [1, 2, 6]);
    assert_eq!(seqs(&db, f(Some("tag*"), None, None)), [1, 2, 4, 5, 6]);
    assert_eq!(seqs(&db, f(Some("*"), None, None)), [1, 2, 3, 4, 5, 6]);
    assert_eq!(seqs(&db, f(Some("tag"), None, None)), [4]);
    assert_eq!(seqs(&db, f(Some("TAG.SET"), None, None)), Vec::<u64>::new());
    assert_eq!(seqs(&db, f(None, Some("aaaa"), None)), [1, 6]);
    assert_eq!(seqs(&db, f(None, Some("app:1"), None)), [1, 2]);
    // Wildcard characters in names are literal.
    assert_eq!(seqs(&db, f(None, Some("web_"), None)), [4]);
    assert_eq!(seqs(&db, f(None, Some("p%"), None)), [5]);
    assert_eq!(seqs(&db, f(None, Some("\",\""), None)), Vec::<u64>::new());
    assert_eq!(seqs(&db, f(None, None, Some("alice@h1"))), [1, 4]);
    assert_eq!(seqs(&db, f(None, None, Some("alice*"))), [1, 3, 4]);
    assert_eq!(seqs(&db, f(Some("tag.*"), Some("app"), Some("bob*"))), [2]);

    let since = Filter {
        since_seq: Some(4),
        ..Filter::default()
    };
    assert_eq!(seqs(&db, since), [4, 5, 6]);

    // Times: every entry here was written just now.
    let times = |since: &str, until: &str| Filter {
        since_time: Some(since.into()),
        until_time: Some(until.into()),
        ..Filter::default()
    };
    let (past, future) = ("2000-01-01T00:00:00.000Z", "9999-01-01T00:00:00.000Z");
    assert_eq!(seqs(&db, times(past, future)), [1, 2, 3, 4, 5, 6]);
    assert_eq!(seqs(&db, times(future, future)), Vec::<u64>::new());
    assert_eq!(seqs(&db, times(past, past)), Vec::<u64>::new());
}
}

backends! {
fn list_limit_keeps_the_newest_in_ascending_order() {
    let (_dir, db, _) = populated();
    let newest = |limit, action: Option<&str>| Filter {
        limit: Some(limit),
        action: action.map(Into::into),
        ..Filter::default()
    };
    assert_eq!(seqs(&db, newest(3, None)), [28, 29, 30]);
    assert_eq!(seqs(&db, newest(3, Some("gc.run"))), [24, 27, 30]);
    assert_eq!(seqs(&db, newest(0, None)), Vec::<u64>::new());
    assert_eq!(seqs(&db, newest(1000, None)).len(), N as usize);
    assert_eq!(
        seqs(
            &db,
            Filter {
                since_seq: Some(5),
                limit: Some(2),
                action: Some("gc.run".into()),
                ..Filter::default()
            }
        ),
        [27, 30]
    );
}
}

backends! {
fn entries_serialize_with_their_field_names() {
    let (_dir, _db, written) = populated();
    let json = serde_json::to_value(&written[0]).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "seq",
            "time",
            "actor",
            "action",
            "subjects",
            "details",
            "prev_hash",
            "hash",
            "keyid",
            "signature"
        ]
    );
    let back: Entry = serde_json::from_value(json).unwrap();
    assert_eq!(back, written[0]);
}
}

backends! {
fn actor_prefers_the_override_then_sudo_then_the_uid() {
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        compose_actor(s("ci-42"), s("alice"), s("root"), 0, s("h")),
        "ci-42"
    );
    assert_eq!(
        compose_actor(None, s("alice"), s("root"), 0, s("h")),
        "alice(via root)@h"
    );
    assert_eq!(compose_actor(None, None, s("bob"), 1000, s("h")), "bob@h");
    assert_eq!(compose_actor(None, None, None, 1234, s("h")), "uid:1234@h");
    assert_eq!(compose_actor(None, None, s("bob"), 1000, None), "bob");
    // `sudo -u alice` run by alice is just alice.
    assert_eq!(
        compose_actor(None, s("alice"), s("alice"), 1000, s("h")),
        "alice@h"
    );
}
}

backends! {
fn the_current_user_resolves() {
    // Whatever the environment, the result is non-empty and names a host
    // unless DROVER_ACTOR overrides it.
    let a = actor();
    assert!(!a.is_empty());
    if std::env::var_os("DROVER_ACTOR").is_none() {
        assert!(a.contains('@'), "{a}");
    }
    if sys::uid() == 0 {
        assert_eq!(sys::user_name(0).as_deref(), Some("root"));
    }
}
}

// Issue 16: a database-level attacker deletes the ledger's tail and rewrites
// `ledger_head` to match; the chain alone is intact, the signed head beside
// the database is not.
backends! {
fn a_deleted_tail_with_a_rewritten_head_row_is_caught_by_the_signed_head() {
    let (_dir, db, written) = populated();
    let keep = N - 3;
    tamper(
        &db,
        &format!(
            "DELETE FROM ledger WHERE seq > {keep};
             UPDATE ledger_head SET seq = {keep}, hash = '{}';",
            written[usize::try_from(keep).unwrap() - 1].hash
        ),
    );
    let p = problem(&db);
    assert_eq!(p.seq, keep + 1, "{p}");
    assert!(
        p.reason
            .contains(&format!("missing: entries {} to {N}", keep + 1)),
        "{p}"
    );
}
}

backends! {
fn appending_after_a_truncation_is_refused_and_the_signed_head_kept() {
    let (dir, mut db, written) = populated();
    tamper(
        &db,
        &format!(
            "DELETE FROM ledger WHERE seq = {N};
             UPDATE ledger_head SET seq = {}, hash = '{}';",
            N - 1,
            written[usize::try_from(N).unwrap() - 2].hash
        ),
    );
    let err = db
        .write(|tx| tx.record(NewEntry::new("tag.set", ["x"], json!({}))))
        .unwrap_err();
    assert!(
        matches!(err, Error::LedgerTampered { seq, .. } if seq == N),
        "{err}"
    );
    let signed =
        SignedHead::parse(&std::fs::read(dir.path().join(crate::ledger::head::FILE)).unwrap())
            .unwrap();
    assert_eq!(signed.seq, N);
}
}

backends! {
fn a_signed_head_behind_the_chain_is_fine_one_ahead_is_not() {
    let (dir, db, written) = populated();
    let file = dir.path().join(crate::ledger::head::FILE);
    let key = keys::host_key(dir.path()).unwrap();
    // A crash between the commit and the file write: the file lags.
    let lagging = SignedHead::sign(
        N - 2,
        &written[usize::try_from(N).unwrap() - 3].hash,
        "t",
        Some(1),
        &key,
    );
    std::fs::write(&file, lagging.to_bytes()).unwrap();
    assert!(db.read().verify_ledger(&trusted(&db)).unwrap().is_ok());
    // A signed hash that is not the chain's: the entry was rewritten.
    let forked = SignedHead::sign(N - 2, &written[0].hash, "t", Some(1), &key);
    std::fs::write(&file, forked.to_bytes()).unwrap();
    assert_eq!(problem(&db).seq, N - 2);
    // Edited without the key.
    let mut edited = SignedHead::sign(N + 5, "sha256:00", "t", Some(1), &key);
    edited.seq = N;
    std::fs::write(&file, edited.to_bytes()).unwrap();
    assert!(
        problem(&db).reason.contains("not valid"),
        "{}",
        problem(&db)
    );
}
}

backends! {
fn a_store_without_a_signed_head_gets_one_when_opened() {
    let (dir, db, written) = populated();
    let file = dir.path().join(crate::ledger::head::FILE);
    drop(db);
    std::fs::remove_file(&file).unwrap();
    let db = pgtest::open(&dir.path().join("drover.db")).unwrap();
    let signed = SignedHead::parse(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        (signed.seq, &signed.hash),
        (N, &written.last().unwrap().hash)
    );
    assert!(db.read().verify_ledger(&trusted(&db)).unwrap().is_ok());
}
}

backends! {
fn acting_for_names_the_caller_on_its_thread_only_and_only_inside() {
    let before = actor();
    let (inside, other_thread) = crate::ledger::acting_for("token:ci", || {
        let other = std::thread::spawn(actor).join().unwrap();
        (actor(), other)
    });
    assert_eq!(inside, "token:ci");
    assert_eq!(other_thread, before);
    assert_eq!(actor(), before);
    // Restored even when `f` panics.
    let _ = std::panic::catch_unwind(|| crate::ledger::acting_for("x", || panic!("boom")));
    assert_eq!(actor(), before);
}
}
