//! `drover token`: create prints a secret once, list never shows one,
//! revoke marks it; the database holds only hashes; duplicates and bad
//! roles are refused with clear errors; the ledger and `events` tell it.

use crate::common;

use common::{Env, show};

#[test]
fn a_token_is_shown_once_listed_without_its_secret_and_revoked() {
    let env = Env::new();
    let out = env.run(&[
        "token",
        "create",
        "ci",
        "--role",
        "deploy",
        "--expires",
        "30d",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(secret.starts_with("drv_") && secret.len() == 68, "{secret}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("shown this once"), "{said}");

    let list = env.ok(&["token", "list"]);
    assert!(
        list.contains("ci") && list.contains("deploy") && list.contains("active"),
        "{list}"
    );
    assert!(!list.contains(&secret[4..]), "{list}");
    let items = env.items(&["token", "list"]);
    assert_eq!(items.len(), 1);
    assert_eq!(
        (&items[0]["name"], &items[0]["role"]),
        (&"ci".into(), &"deploy".into())
    );
    assert!(items[0]["expires"].is_string(), "{items:?}");
    assert!(items[0].get("secret").is_none(), "{items:?}");
    assert!(!items[0].to_string().contains(&secret[4..]));

    // No secret anywhere in the store's files, the database's WAL included.
    for entry in std::fs::read_dir(env.store()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let hex = &secret.as_bytes()[4..];
            assert!(
                !bytes.windows(hex.len()).any(|w| w == hex),
                "{} holds the secret",
                path.display()
            );
        }
    }

    let out = env.ok(&["token", "revoke", "ci"]);
    assert!(out.contains("revoked token ci"), "{out}");
    let items = env.items(&["token", "list"]);
    assert!(items[0]["revoked"].is_string(), "{items:?}");
    assert!(env.ok(&["token", "list"]).contains("revoked"));

    let audit = env.items(&["audit", "--action", "token.*"]);
    let actions: Vec<&str> = audit
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["token.create", "token.revoke"]);
    assert!(!audit[0]["actor"].as_str().unwrap().is_empty());
    let events = env.ok(&["events"]);
    assert!(
        events.contains("token.created") && events.contains("token.revoked"),
        "{events}"
    );
}

#[test]
fn duplicate_names_bad_roles_and_unknown_tokens_are_refused_clearly() {
    let env = Env::new();
    env.ok(&["token", "create", "ci", "--role", "read"]);
    let out = env.run(&["token", "create", "ci", "--role", "admin"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        show(&out)
    );

    let out = env.run(&["token", "create", "ops", "--role", "root"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("read, deploy or admin"), "{err}");

    for bad in ["0", "soon"] {
        let out = env.run(&["token", "create", "ops", "--role", "read", "--expires", bad]);
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("e.g. 30d"),
            "{}",
            show(&out)
        );
    }

    let out = env.run(&["token", "revoke", "nope"]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let out = env.run(&["token", "create", "bad name", "--role", "read"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(env.items(&["token", "list"]).len(), 1);
}
