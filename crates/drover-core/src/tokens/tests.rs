use super::*;
use crate::state::pgtest::{self, backends};

fn db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = pgtest::open(&dir.path().join("drover.db")).unwrap();
    (dir, db)
}

fn refusal(r: Result<Token>) -> AuthFailure {
    match r {
        Err(Error::Unauthenticated(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

backends! {
fn a_created_token_authenticates_with_its_secret_and_role() {
    let (_dir, mut db) = db();
    let made = create(&mut db, "ci", Role::Deploy, None).unwrap();
    assert!(
        made.secret.starts_with("drv_") && made.secret.len() == 4 + 64,
        "{}",
        made.secret
    );
    let t = authenticate(db.read(), &made.secret).unwrap();
    assert_eq!((t.name.as_str(), t.role), ("ci", Role::Deploy));
    assert!(t.role.allows(Role::Read) && !t.role.allows(Role::Admin));
}
}

backends! {
fn wrong_malformed_revoked_and_expired_secrets_are_refused_alike() {
    let (_dir, mut db) = db();
    let live = create(&mut db, "live", Role::Read, None).unwrap();
    let gone = create(&mut db, "gone", Role::Admin, None).unwrap();
    let old = create(&mut db, "old", Role::Read, Some(0)).unwrap();
    revoke(&mut db, "gone").unwrap();

    let mut wrong = live.secret.clone();
    wrong.replace_range(10..11, if &wrong[10..11] == "0" { "1" } else { "0" });
    assert_eq!(
        refusal(authenticate(db.read(), &wrong)),
        AuthFailure::Unknown
    );
    assert_eq!(
        refusal(authenticate(db.read(), "drv_short")),
        AuthFailure::Malformed
    );
    assert_eq!(refusal(authenticate(db.read(), "")), AuthFailure::Malformed);
    assert_eq!(
        refusal(authenticate(db.read(), &gone.secret)),
        AuthFailure::Revoked
    );
    assert_eq!(
        refusal(authenticate(db.read(), &old.secret)),
        AuthFailure::Expired
    );
    // One message for all: a caller learns nothing of which tokens exist.
    for e in [
        authenticate(db.read(), &wrong).unwrap_err(),
        authenticate(db.read(), &gone.secret).unwrap_err(),
        authenticate(db.read(), &old.secret).unwrap_err(),
    ] {
        assert_eq!(e.to_string(), "invalid token");
        assert_eq!(e.kind(), crate::ErrorKind::Unauthenticated);
    }
    assert!(authenticate(db.read(), &live.secret).is_ok());
}
}

backends! {
fn only_the_hash_is_stored_and_creation_and_revocation_are_ledgered() {
    let (dir, mut db) = db();
    let made = create(&mut db, "ci", Role::Admin, Some(3_600_000)).unwrap();
    revoke(&mut db, "ci").unwrap();
    revoke(&mut db, "ci").unwrap();
    let rows = db.read().tokens().unwrap();
    assert_eq!(rows[0].hash, Digest::of(made.secret.as_bytes()).hex());
    let entries = db.read().ledger(&Default::default()).unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["token.create", "token.revoke"],
        "a second revoke records nothing"
    );
    assert!(
        !entries
            .iter()
            .any(|e| e.details.to_string().contains(&made.secret))
    );
    drop(db);
    // On SQLite, not even in the file's bytes (PostgreSQL's files are the server's).
    if pgtest::backend() == pgtest::Backend::Sqlite {
        let bytes = std::fs::read(dir.path().join("drover.db")).unwrap();
        let hex = made.secret.strip_prefix("drv_").unwrap();
        assert!(!bytes.windows(hex.len()).any(|w| w == hex.as_bytes()));
    }
}
}

backends! {
fn names_are_checked_and_never_reused() {
    let (_dir, mut db) = db();
    create(&mut db, "ci", Role::Read, None).unwrap();
    let e = create(&mut db, "ci", Role::Read, None).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    revoke(&mut db, "ci").unwrap();
    let e = create(&mut db, "ci", Role::Read, None).unwrap_err();
    assert!(e.to_string().contains("(revoked)"), "{e}");
    assert!(create(&mut db, "no spaces", Role::Read, None).is_err());
    let e = revoke(&mut db, "nope").unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::NotFound);
}
}

backends! {
fn roles_parse_order_and_list_shows_status() {
    assert_eq!("deploy".parse::<Role>().unwrap(), Role::Deploy);
    assert!("root".parse::<Role>().is_err());
    assert!(Role::Admin.allows(Role::Deploy) && !Role::Read.allows(Role::Deploy));
    let (_dir, mut db) = db();
    create(&mut db, "b", Role::Read, None).unwrap();
    create(&mut db, "a", Role::Admin, Some(0)).unwrap();
    let all = list(db.read()).unwrap();
    let now = clock::now_rfc3339();
    let shown: Vec<(&str, &str)> = all
        .iter()
        .map(|t| (t.name.as_str(), t.status(&now)))
        .collect();
    assert_eq!(shown, [("a", "expired"), ("b", "active")]);
}
}

backends! {
fn constant_time_eq_is_equality() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}
}
