//! Defects a new user finds in the first hour (issue 19), each reproduced
//! as it was reported: a typo in `--store`, a missing definition file, a
//! health interval shorter than the default timeout.

use std::process::Command;

use crate::common::{self, DROVER, Env, show};

/// `drover --store DIR args…`, without `--init` (unlike `Env::cmd`).
fn drover(store: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(DROVER)
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("DROVER_STORE")
        .output()
        .expect("run drover")
}

/// Regression: a typo in `--store` silently created a new, empty store.
#[test]
fn a_store_path_that_is_not_a_store_is_an_error_unless_init() {
    let env = common::sample_env();
    env.build(&[]);
    // The real store opens without --init.
    let out = drover(&env.store(), &["images"]);
    assert!(out.status.success(), "{}", show(&out));

    // A typo: missing, so not found (4), and nothing is created.
    let typo = env.dir.path().join("stroe");
    let out = drover(&typo, &["images"]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("store") && err.contains("stroe") && err.contains("--init"),
        "{err}"
    );
    assert!(!typo.exists(), "a typo made a directory");

    // An empty directory is not a store either, without --init.
    let empty = env.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = drover(&empty, &["images"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(std::fs::read_dir(&empty).unwrap().next().is_none());

    // A directory holding something else is refused even with --init.
    let other = env.ctx();
    let out = Command::new(DROVER)
        .args(["--init", "--store"])
        .arg(&other)
        .arg("images")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(show(&out).contains("holds other files"), "{}", show(&out));
    assert!(!other.join("oci-layout").exists());

    // DROVER_STORE is held to the same rule.
    let out = Command::new(DROVER)
        .env("DROVER_STORE", &typo)
        .arg("images")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));

    // --init makes one in a missing or empty directory, and it is then a store.
    for dir in [&typo, &empty] {
        let out = Command::new(DROVER)
            .args(["--init", "--store"])
            .arg(dir)
            .arg("images")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        let out = drover(dir, &["images"]);
        assert!(out.status.success(), "{}", show(&out));
    }
}

/// Regression: `drover build -f nope.toml` said "read nope.toml: No such
/// file or directory (os error 2): No such file or directory (os error 2)".
#[test]
fn a_missing_definition_is_named_once() {
    let env = Env::new();
    let out = env.run(&["build", "-f", "nope.toml"]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.toml"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

/// Regression: `[config.health] interval = "2s"` was refused as "shorter
/// than the default timeout, 3s"; the default now fits the interval.
#[test]
fn a_short_health_interval_takes_a_fitting_default_timeout() {
    let env = common::sample_env();
    let def = std::fs::read_to_string(env.ctx().join("drover.toml")).unwrap();
    env.write_def(&format!(
        "{def}\n[config.health]\nkind = \"tcp\"\nport = 8080\ninterval = \"2s\"\n"
    ));
    let digest = env.build(&[]);
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["--json", "inspect", &digest])).unwrap();
    let text = v.to_string();
    assert!(
        text.contains("\\\"interval_ms\\\":2000") || text.contains("\"interval_ms\":2000"),
        "{text}"
    );
    assert!(
        text.contains("\\\"timeout_ms\\\":2000") || text.contains("\"timeout_ms\":2000"),
        "{text}"
    );
}

/// Regression: build progress was drawn only on a terminal, so a CI log
/// got nothing until the digest. Off a terminal it is plain lines on
/// stderr; stdout stays the digest alone.
#[test]
fn a_build_off_a_terminal_reports_its_phases_in_plain_lines() {
    let env = common::sample_env();
    let def = env.ctx().join("drover.toml");
    let out = env.run(&["build", "-f", def.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("sha256:"), "{stdout}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("layer: ") && err.contains("files") && err.contains("layer: done, "),
        "{err}"
    );
    assert!(err.contains("built sample:1.0"), "{err}");
    // Machine output keeps stderr for errors.
    let out = env.run(&["--json", "build", "-f", def.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(out.stderr.is_empty(), "{}", show(&out));
}
