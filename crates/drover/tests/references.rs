//! Image references through the real binary: the one resolver every command
//! uses (tags, `name@digest` checked against the name, `sha256:` and bare
//! digest prefixes, untagged images), `images -a`, `inspect` of instances,
//! registry references (docker.io normalisation, the plain-HTTP hint) and
//! credentials from Docker's credential helpers (issue 19).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use serde_json::Value;

use crate::common::{Env, last_line, sample_env, show};
use crate::registry::Registry;

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The items of a list document.
fn list(out: &str) -> Value {
    Value::Array(crate::common::items(out))
}

/// Regression (issue 19): `drover inspect 'Hello::1'` and `drover inspect
/// fab9` said "not found", exit 4; `inspect sha256:<12 hex>` said "not a
/// digest"; a 12-hex prefix works with every command that takes an image.
#[test]
fn references_are_parsed_once_and_prefixes_work_everywhere() {
    let env = sample_env();
    let digest = env.build(&[]);
    let hex = digest.strip_prefix("sha256:").unwrap();

    let out = env.run(&["inspect", "Hello::1"]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(stderr(&out).contains("invalid reference"), "{}", show(&out));

    let out = env.run(&["inspect", &hex[..4]]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(
        stderr(&out).contains("a digest prefix needs at least 6 hex digits"),
        "{}",
        show(&out)
    );
    let out = env.run(&["inspect", &format!("sha256:{}", &hex[..4])]);
    assert_eq!(code(&out), 2, "{}", show(&out));

    for r in [
        hex[..12].to_string(),
        format!("sha256:{}", &hex[..12]),
        hex[..6].to_string(),
        digest.clone(),
        format!("sample@{digest}"),
        format!("sample:1.0@{digest}"),
    ] {
        let shown = json(&env.ok(&["inspect", &r]));
        assert_eq!(shown["digest"], digest.as_str(), "{r}");
    }
    // The other commands resolve the same way.
    env.ok(&["tag", &hex[..12], "again:1"]);
    env.ok(&["sign", &hex[..8]]);
    env.ok(&["verify", &format!("sha256:{}", &hex[..10])]);
    env.ok(&["trace", &format!("sha256:{}", &hex[..12])]);
    env.ok(&["baseline", &hex[..12]]);
    let removed = env.ok(&["rmi", "again:1"]);
    assert!(removed.contains("again:1"), "{removed}");
}

/// Regression (issue 19): `drover run doesnotexist@sha256:<real digest>`
/// ran the image, ignoring the name.
#[test]
fn name_at_digest_must_be_a_name_of_the_image() {
    let env = sample_env();
    let digest = env.build(&[]);
    let pinned = format!("doesnotexist@{digest}");
    for cmd in [
        &["inspect", &pinned][..],
        &["run", "--rm", "--wait", &pinned],
    ] {
        let out = env.run(cmd);
        assert_eq!(code(&out), 4, "{cmd:?}: {}", show(&out));
        let err = stderr(&out);
        assert!(
            err.contains("not as \"doesnotexist\"") && err.contains("sample"),
            "{cmd:?}: {err}"
        );
    }
    let out = env.run(&["inspect", &format!("sample:2.0@{digest}")]);
    assert_eq!(
        code(&out),
        0,
        "an absent tag is no contradiction: {}",
        show(&out)
    );
}

/// Regression (issue 19): an image pulled by digest was not listed by
/// `images` (there was no `-a`) and no prefix found it.
#[test]
fn images_pulled_by_digest_are_listed_with_all_and_resolve() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let src = sample_env();
    let digest = src.build(&[]);
    let hex = digest.strip_prefix("sha256:").unwrap();
    let remote = format!("{}/sample", reg.addr);
    src.ok(&["push", "sample:1.0", &format!("{remote}:1.0"), "--insecure"]);

    let dst = Env::new();
    let pulled = dst.ok(&["pull", &format!("{remote}@{digest}"), "--insecure"]);
    assert_eq!(last_line(&pulled), digest);
    let tagged = list(&dst.ok(&["--json", "images"]));
    assert_eq!(tagged, Value::Array(vec![]), "pulled by digest: no tag");
    let all = list(&dst.ok(&["--json", "images", "-a"]));
    assert_eq!(all[0]["digest"], digest.as_str(), "{all}");
    assert!(all[0]["name"].is_null(), "{all}");
    let table = dst.ok(&["images", "--all"]);
    assert!(
        table.contains("<none>") && table.contains(&hex[..12]),
        "{table}"
    );

    for r in [
        hex[..12].to_string(),
        format!("sha256:{}", &hex[..12]),
        format!("{remote}@{digest}"),
        format!("sample@{digest}"),
    ] {
        let shown = json(&dst.ok(&["inspect", &r]));
        assert_eq!(shown["digest"], digest.as_str(), "{r}");
    }
    let out = dst.run(&["inspect", &format!("{}/other@{digest}", reg.addr)]);
    assert_eq!(code(&out), 4, "{}", show(&out));

    // A pull by tag names it locally <repository>:<tag>; a registry
    // reference without a digest says so.
    dst.ok(&["pull", &format!("{remote}:1.0"), "--insecure"]);
    let shown = json(&dst.ok(&["inspect", "sample:1.0"]));
    assert_eq!(shown["digest"], digest.as_str());
    let out = dst.run(&["inspect", &format!("{remote}:2.0")]);
    assert_eq!(code(&out), 4, "{}", show(&out));
    assert!(stderr(&out).contains("drover pull"), "{}", show(&out));
}

/// Regression (issue 19): pulling from a plain-HTTP registry without
/// `--insecure` said "error sending request for url (https://…/v2/)" and
/// nothing more.
#[test]
fn a_plain_http_registry_gets_a_hint() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let env = Env::new();
    let out = env.run(&["pull", &format!("{}/sample:1.0", reg.addr)]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        stderr(&out).contains("the registry may speak plain HTTP: pass --insecure"),
        "{}",
        show(&out)
    );
    // Nobody listening is no reason to suspect plain HTTP.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = env.run(&["pull", &format!("127.0.0.1:{port}/sample:1.0")]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(!stderr(&out).contains("plain HTTP"), "{}", show(&out));
}

/// Regression (issue 19): `drover pull busybox` said "not a registry
/// reference (no registry)". It is docker.io/library/busybox, as for
/// Docker; the policy (which refuses docker.io here) sees it before any
/// request is made, so no traffic leaves the host.
#[test]
fn docker_hub_references_are_normalised() {
    let env = Env::new();
    env.set_policy("allowed_registries = [\"127.0.0.1:5000\"]\n");
    let out = env.run(&["pull", "busybox"]);
    assert!(!out.status.success(), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("docker.io") && !err.contains("not a registry reference"),
        "{}",
        show(&out)
    );
    let out = env.run(&["pull", "Busybox"]);
    assert_eq!(code(&out), 2, "{}", show(&out));
}

/// Credentials from a Docker credential helper: `credsStore` and
/// `credHelpers` name `docker-credential-<name>`, run with the registry on
/// stdin.
#[test]
fn credential_helpers_give_the_credentials() {
    let Some(reg) = Registry::start(Some(("drover", "s3cret"))) else {
        return;
    };
    let env = sample_env();
    let digest = env.build(&[]);
    let bin = tempfile::tempdir().unwrap();
    let asked = bin.path().join("asked");
    let helper = |name: &str, user: &str, secret: &str| {
        let path = bin.path().join(format!("docker-credential-{name}"));
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\necho \"$server\" >> {asked}\n\
             if [ \"$server\" = {addr} ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$server\"\n\
             else\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
            asked = asked.display(),
            addr = reg.addr,
        );
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    };
    helper("good", "drover", "s3cret");
    helper("wrong", "drover", "nope");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let config = tempfile::tempdir().unwrap();
    let push = |config_json: &str| {
        fs::write(config.path().join("config.json"), config_json).unwrap();
        env.cmd()
            .env("PATH", &path)
            .env("DOCKER_CONFIG", config.path())
            .env_remove("DROVER_REGISTRY_USER")
            .env_remove("DROVER_REGISTRY_PASSWORD")
            .args([
                "push",
                "sample:1.0",
                &format!("{}/sample:1.0", reg.addr),
                "--insecure",
            ])
            .output()
            .unwrap()
    };
    let out = push(r#"{"credsStore":"good"}"#);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(last_line(&String::from_utf8_lossy(&out.stdout)), digest);
    let asked_for = fs::read_to_string(&asked).unwrap();
    assert!(asked_for.lines().all(|l| l == reg.addr), "{asked_for}");

    // credHelpers wins over credsStore for its registry.
    let out = push(&format!(
        r#"{{"credsStore":"good","credHelpers":{{"{}":"wrong"}}}}"#,
        reg.addr
    ));
    assert!(!out.status.success(), "the wrong password was not used");
    assert!(stderr(&out).contains("credentials"), "{}", show(&out));
    let out = push(&format!(r#"{{"credHelpers":{{"{}":"good"}}}}"#, reg.addr));
    assert!(out.status.success(), "{}", show(&out));

    // A helper that is not there is named.
    let out = push(r#"{"credsStore":"absent"}"#);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("docker-credential-absent"),
        "{}",
        show(&out)
    );
}

/// Regression (issue 19): `drover inspect <instance>` was refused; an
/// untagged image an instance holds is listed by `images -a`.
#[test]
fn inspect_shows_instances_and_asks_when_both_match() {
    let Some(env) = crate::instances::box_env() else {
        return;
    };
    let digest = list(&env.ok(&["--json", "images"]))[0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let hex = digest.strip_prefix("sha256:").unwrap().to_string();
    // Named with the image's prefix: the one word names both.
    let both = &hex[..10];
    let id = last_line(&env.ok(&[
        "run", "--name", both, "box:1", "--", "/bin/sh", "-c", "sleep 60",
    ]));

    let shown = json(&env.ok(&["inspect", &id[..8]]));
    assert_eq!(shown["id"], id.as_str(), "{shown}");
    assert_eq!(shown["image"], digest.as_str(), "{shown}");
    assert!(
        shown.get("state").is_some() && shown.get("volumes").is_some(),
        "{shown}"
    );

    let out = env.run(&["inspect", both]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(stderr(&out).contains("--type"), "{}", show(&out));
    let as_instance = json(&env.ok(&["inspect", "--type", "instance", both]));
    assert_eq!(as_instance["id"], id.as_str());
    let as_image = json(&env.ok(&["inspect", "--type", "image", both]));
    assert_eq!(as_image["digest"], digest.as_str());

    // Untagged, the image is still the instance's, and listed with -a.
    env.ok(&["rmi", "box:1"]);
    let tagged = list(&env.ok(&["--json", "images"]));
    assert_eq!(tagged, Value::Array(vec![]));
    let all = list(&env.ok(&["--json", "images", "-a"]));
    assert_eq!(all[0]["digest"], digest.as_str(), "{all}");
    let held = all[0]["held_by"].to_string();
    assert!(held.contains(&id), "{all}");
    let shown = json(&env.ok(&["inspect", "--type", "image", &hex[..12]]));
    assert_eq!(shown["digest"], digest.as_str());
    env.ok(&["rm", "--force", &id]);
}
