//! The deploy policy and revocation through the real binary: each way an
//! image is refused (unsigned, signed by an untrusted key, a tampered
//! signature, revoked, a base not allowed or revoked, a registry not
//! allowed) exits 6 naming the rule and the image and leaves a
//! `policy.refuse` ledger entry; revoked instances are flagged by `status`
//! and `serve` moves a service off a revoked image. The tests that run
//! instances need root and busybox (CI has both).
use crate::common;

use std::process::{Child, Output, Stdio};
use std::time::Duration;

use common::{Env, eventually, show, write};
use serde_json::Value;

/// A tiny image (FROM scratch) that is never run: refusals come first.
const APP_DEF: &str = r#"
[image]
name = "app"
tag = "1"

[[layer]]
kind = "file"
dest = "/bin/app"
content = "app\n"
mode = "0755"

[config]
entrypoint = ["/bin/app"]
"#;

fn app_env() -> (Env, String) {
    let env = Env::new();
    env.write_def(APP_DEF);
    let digest = env.build(&[]);
    (env, digest)
}

/// Exit 6, and the message names `rule` and `image`; returns stderr.
fn refused(out: &Output, rule: &str, image: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(6), "{}", show(out));
    assert!(
        err.contains(&format!("policy refuses image {image}"))
            && err.contains(&format!("rule {rule}: ")),
        "expected a refusal of {image} by rule {rule}:\n{}",
        show(out)
    );
    err
}

/// The `policy.refuse` ledger entries: (subject, rule, operation).
fn refusals(env: &Env) -> Vec<(String, String, String)> {
    env.items(&["audit", "--action", "policy.refuse"])
        .iter()
        .map(|e| {
            (
                e["subjects"][0].as_str().unwrap().to_string(),
                e["details"]["rule"].as_str().unwrap().to_string(),
                e["details"]["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn fleet(env: &Env, image: &str) -> String {
    let path = env.ctx().join("fleet.toml");
    write(
        &path,
        format!("[service.app]\nimage = \"{image}\"\nmin_healthy = \"0s\"\nreplicas = 1\n")
            .as_bytes(),
        0o644,
    );
    path.to_str().unwrap().to_string()
}

common::backends!(unsigned_images_are_refused_by_run_and_apply);
fn unsigned_images_are_refused_by_run_and_apply() {
    let (env, digest) = app_env();
    let err = refused(&env.run(&["run", "app:1"]), "require_signature", &digest);
    assert!(
        err.contains("it is not signed") && err.contains("drover sign"),
        "{err}"
    );
    let plan = env.ok(&["plan", "-f", &fleet(&env, "app:1")]);
    assert!(
        plan.contains("the policy refuses it: rule require_signature"),
        "{plan}"
    );
    let out = env.run(&["apply", "-f", &fleet(&env, "app:1")]);
    refused(&out, "require_signature", &digest);
    // Nothing was recorded but the refusals.
    let status: Vec<Value> = env.items(&["status"]);
    assert!(status.is_empty(), "{status:?}");
    assert!(env.items(&["ps", "--all"]).is_empty());
    assert_eq!(
        refusals(&env),
        vec![
            (digest.clone(), "require_signature".into(), "run".into()),
            (digest.clone(), "require_signature".into(), "apply".into()),
        ]
    );
    // `policy check` evaluates without doing or recording anything.
    refused(
        &env.run(&["policy", "check", "app:1"]),
        "require_signature",
        &digest,
    );
    env.ok(&["sign", "app:1"]);
    let out = env.ok(&["policy", "check", "app:1"]);
    assert!(
        out.contains("require_signature: signature") && out.contains("allowed by"),
        "{out}"
    );
    assert_eq!(refusals(&env).len(), 2);
    // The ledger still verifies with the refusals in it.
    env.ok(&["audit", "verify"]);
}

common::backends!(a_signature_by_an_untrusted_key_is_refused_until_the_key_is_trusted);
fn a_signature_by_an_untrusted_key_is_refused_until_the_key_is_trusted() {
    let (env, digest) = app_env();
    let key = env.dir.path().join("ci");
    env.ok(&["key", "generate", key.to_str().unwrap()]);
    env.ok(&[
        "sign",
        "app:1",
        "--key",
        key.with_extension("key").to_str().unwrap(),
    ]);
    let err = refused(&env.run(&["run", "app:1"]), "require_signature", &digest);
    assert!(err.contains("none by a trusted key"), "{err}");

    // Trusting only the CI key: its signature counts, but the provenance
    // is the host's, which is no longer trusted.
    env.set_policy(&format!(
        "trusted_keys = [{:?}]\n",
        key.with_extension("pub").to_str().unwrap()
    ));
    let err = refused(
        &env.run(&["policy", "check", "app:1"]),
        "require_provenance",
        &digest,
    );
    assert!(err.contains("not signed by a trusted key"), "{err}");

    // Both: the CI key approves what this host built.
    env.set_policy(&format!(
        "trusted_keys = [{:?}, \"keys/host.pub\"]\n",
        key.with_extension("pub").to_str().unwrap()
    ));
    let shown = env.ok(&["policy", "show"]);
    assert!(
        shown.contains("ci.pub") && shown.contains("policy.toml"),
        "{shown}"
    );
    env.ok(&["policy", "check", "app:1"]);
}

common::backends!(a_tampered_signature_is_refused);
/// Someone with write access to the store attaches a copy of the host's
/// signature with its signature bytes changed: a signature by a trusted
/// key that does not verify refuses the image, valid one or not.
fn a_tampered_signature_is_refused() {
    use drover_core::keys::dsse;
    use drover_core::store::{Store, artifact};
    use drover_core::trust::signature;

    let (env, digest) = app_env();
    env.ok(&["sign", "app:1"]);
    env.ok(&["policy", "check", "app:1"]);
    {
        let mut store = Store::open(&env.store()).unwrap();
        let image = store.resolve("app:1").unwrap();
        let sig = store
            .referrers(&image.digest, Some(signature::ARTIFACT_TYPE))
            .unwrap()[0]
            .digest;
        let bytes = artifact::content(&store, &sig, &image.digest).unwrap();
        let mut envelope: Value = serde_json::from_slice(&bytes).unwrap();
        let s = envelope["signatures"][0]["sig"]
            .as_str()
            .unwrap()
            .to_string();
        let flipped = if s.starts_with('A') { "B" } else { "A" };
        envelope["signatures"][0]["sig"] = Value::from(format!("{flipped}{}", &s[1..]));
        let tampered = serde_json::to_vec(&envelope).unwrap();
        let art = artifact::put(
            &store,
            &image,
            signature::ARTIFACT_TYPE,
            dsse::MEDIA_TYPE,
            &tampered,
        )
        .unwrap();
        store
            .mutate(|m| m.add_referrer(&art, &image.digest, signature::ARTIFACT_TYPE))
            .unwrap();
    }
    // Beside the genuine signature, the tampered copy is reported by
    // `verify` but refuses nothing: garbage attached to an image (here, or
    // in a registry) must not block an approved image.
    env.ok(&["policy", "check", "app:1"]);
    let verify = env.ok(&["verify", "app:1"]);
    assert!(
        verify.contains("NOT valid") && verify.contains(": verified"),
        "{verify}"
    );
    // Alone, it refuses the image.
    {
        let mut store = Store::open(&env.store()).unwrap();
        let image = store.resolve("app:1").unwrap();
        let genuine = signature::check(
            &store,
            &image.digest,
            &[drover_core::keys::host_key(&env.store()).unwrap().public()],
        )
        .unwrap()
        .valid[0]
            .0;
        store.mutate(|m| m.remove_referrer(&genuine)).unwrap();
    }
    let err = refused(&env.run(&["run", "app:1"]), "require_signature", &digest);
    assert!(err.contains("does not verify"), "{err}");
    // `verify` agrees (exit 3: not verified).
    assert_eq!(env.run(&["verify", "app:1"]).status.code(), Some(3));
}

common::backends!(builds_on_a_base_that_is_revoked_or_not_allowed_are_refused);
fn builds_on_a_base_that_is_revoked_or_not_allowed_are_refused() {
    let (env, base) = app_env();
    let child = format!(
        "[image]\nname = \"child\"\ntag = \"1\"\nbase = {{ image = \"{base}\" }}\n\
         [[layer]]\nkind = \"file\"\ndest = \"/etc/motd\"\ncontent = \"hi\\n\"\n"
    );
    let def = env.ctx().join("child.toml");
    write(&def, child.as_bytes(), 0o644);
    let build = || env.run(&["build", "-f", def.to_str().unwrap()]);

    env.set_policy("allowed_base_images = [\"busybox:*\"]\n");
    let err = refused(&build(), "allowed_base_images", &base);
    assert!(
        err.contains("(tagged app:1) is not in allowed_base_images")
            && err.contains("base of child:1"),
        "{err}"
    );
    env.ok(&["tag", &base, "busybox:1.36"]);
    assert!(build().status.success(), "{}", show(&build()));

    env.ok(&[
        "revoke",
        "busybox:1.36",
        "--reason",
        "CVE-2026-0001 in the base",
    ]);
    let err = refused(&build(), "revoked", &base);
    assert!(err.contains("CVE-2026-0001"), "{err}");
    let ops: Vec<String> = refusals(&env).into_iter().map(|r| r.2).collect();
    assert_eq!(ops, vec!["build", "build"]);
    let list = env.ok(&["revoke", "--list"]);
    assert!(
        list.contains(&base) && list.contains("CVE-2026-0001"),
        "{list}"
    );

    // A mistaken revocation is lifted, with a reason, in the ledger.
    env.ok(&[
        "revoke",
        &base,
        "--lift",
        "--reason",
        "not affected after all",
    ]);
    assert!(build().status.success(), "{}", show(&build()));
    assert!(env.ok(&["revoke", "--list"]).contains("no revoked images"));
    let lifted = env.ok(&["--json", "audit", "--action", "image.unrevoke"]);
    assert!(
        lifted.contains("not affected after all") && lifted.contains("CVE-2026-0001"),
        "{lifted}"
    );
}

common::backends!(pulls_from_registries_not_allowed_are_refused_before_any_request);
fn pulls_from_registries_not_allowed_are_refused_before_any_request() {
    let env = Env::new();
    env.set_policy("allowed_registries = [\"registry.example.com\"]\n");
    // Nothing listens on port 9: a request would fail otherwise.
    let remote = "127.0.0.1:9/team/web:1";
    let err = refused(
        &env.run(&["pull", remote, "--insecure"]),
        "allowed_registries",
        remote,
    );
    assert!(
        err.contains("registry 127.0.0.1:9 is not in allowed_registries"),
        "{err}"
    );
    let pinned = format!("127.0.0.1:9/team/web@sha256:{}", "a".repeat(64));
    refused(
        &env.run(&["policy", "check", &pinned]),
        "allowed_registries",
        &pinned,
    );
    let path = env.ctx().join("fleet.toml");
    write(
        &path,
        format!(
            "[service.web]\nimage = \"{pinned}\"\nmin_healthy = \"0s\"\ninsecure_registry = true\n"
        )
        .as_bytes(),
        0o644,
    );
    refused(
        &env.run(&["apply", "-f", path.to_str().unwrap()]),
        "allowed_registries",
        &pinned,
    );
    let ops: Vec<String> = refusals(&env).into_iter().map(|r| r.2).collect();
    assert_eq!(ops, vec!["pull", "apply"]);
}

common::backends!(the_policy_file_is_shown_and_its_errors_located);
fn the_policy_file_is_shown_and_its_errors_located() {
    let env = Env::new();
    let shown = env.ok(&["policy", "show"]);
    assert!(
        shown.contains("built-in default")
            && shown.contains("require_signature = true")
            && shown.contains("require_provenance = true")
            && shown.contains("https://drover.dev/builder/v1"),
        "{shown}"
    );
    // What `show` prints is a policy file that means the same.
    env.set_policy(&shown);
    let again = env.ok(&["policy", "show"]);
    assert_eq!(
        again.lines().skip(1).collect::<Vec<_>>(),
        shown.lines().skip(1).collect::<Vec<_>>()
    );

    env.set_policy("require_signature = true\nallowed_registries = \"any\"\n");
    let out = env.run(&["policy", "show"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy.toml:2:22: allowed_registries: expected an array of registry hosts"),
        "{err}"
    );
    // A broken policy refuses everything that consults it.
    env.write_def(APP_DEF);
    env.build(&[]);
    assert_eq!(env.run(&["run", "app:1"]).status.code(), Some(2));
}

// ---------------------------------------------------------------------------
// With real instances.

/// A fleet of `web:<tag>` (health-checked by its image's check).
fn web_fleet(env: &Env, tag: &str) -> String {
    let path = env.ctx().join("fleet.toml");
    write(
        &path,
        format!(
            "[service.web]\nimage = \"web:{tag}\"\nmin_healthy = \"0s\"\nreplicas = 1\n\
             env = {{ TAG = \"{tag}\" }}\n"
        )
        .as_bytes(),
        0o644,
    );
    path.to_str().unwrap().to_string()
}

fn status(env: &Env) -> Value {
    let s: Vec<Value> = env.items(&["status"]);
    s.into_iter().next().expect("one service")
}

fn digest_of(env: &Env, reference: &str) -> String {
    let v = env.json(&["inspect", reference]);
    v["digest"].as_str().unwrap().to_string()
}

struct Serve(Child);

impl Serve {
    fn start(env: &Env) -> Serve {
        Serve(
            env.cmd()
                .args(["serve", "--bind", "127.0.0.1", "--interval", "300ms"])
                .args(["--drift-interval", "0"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start drover serve"),
        )
    }
}

/// `serve`'s last failed pass of the service says `what`, eventually.
fn serve_says(env: &Env, what: &[&str]) {
    let said = eventually(Duration::from_secs(20), || {
        status(env)["health"]["last_error"]
            .as_str()
            .is_some_and(|e| what.iter().all(|w| e.contains(w)))
    });
    assert!(said, "serve did not say {what:?}: {}", status(env));
}

impl Drop for Serve {
    fn drop(&mut self) {
        common::stop(&mut self.0, Duration::from_secs(10));
    }
}

common::backends!(revoked_images_are_refused_flagged_and_served_around);
fn revoked_images_are_refused_flagged_and_served_around() {
    let Some(env) = common::web_env() else {
        return;
    };
    let (one, two) = (digest_of(&env, "web:1"), digest_of(&env, "web:2"));
    env.ok(&["apply", "-f", &web_fleet(&env, "1")]);
    env.ok(&["apply", "-f", &web_fleet(&env, "2")]);
    let s = status(&env);
    assert_eq!(
        (s["release"].as_i64(), s["image"].as_str()),
        (Some(2), Some(two.as_str()))
    );

    // Revoke what runs: flagged, and refused everywhere.
    env.ok(&["revoke", "web:2", "--reason", "CVE-2026-0002"]);
    let s = status(&env);
    assert_eq!(s["revoked"], "CVE-2026-0002", "{s}");
    assert_eq!(s["instances"][0]["revoked"], "CVE-2026-0002", "{s}");
    let text = env.ok(&["status"]);
    assert!(text.contains("REVOKED: CVE-2026-0002"), "{text}");
    refused(&env.run(&["run", "web:2"]), "revoked", &two);
    refused(
        &env.run(&["apply", "-f", &web_fleet(&env, "2")]),
        "revoked",
        &two,
    );

    // Told not to replace revoked instances, `serve` leaves them be and
    // says why.
    env.set_policy("replace_revoked = false\n");
    let serve = Serve::start(&env);
    serve_says(&env, &["rule revoked", "replace_revoked is off"]);
    drop(serve);
    assert_eq!(status(&env)["release"], 2);

    // By default it rolls the service back to the last healthy release
    // whose image is not revoked, and replaces the revoked instance.
    env.set_policy("");
    let serve = Serve::start(&env);
    let moved = eventually(Duration::from_secs(30), || {
        let s = status(&env);
        s["image"] == one.as_str()
            && s["ready"] == 1
            && s["instances"].as_array().unwrap().len() == 1
            && s["instances"][0]["image"] == one.as_str()
    });
    assert!(
        moved,
        "serve did not move off the revoked image: {}",
        status(&env)
    );
    drop(serve);
    let s = status(&env);
    assert_eq!(s["release"], 3, "{s}");
    assert!(s["revoked"].is_null(), "{s}");
    // Which release it chose, why, and what differs from the fleet file:
    // in status, and in the ledger.
    let sync = &s["sync"];
    assert_eq!(sync["state"], "out-of-sync", "{s}");
    assert_eq!(
        (&sync["fleet_release"], &sync["running_release"]),
        (&Value::from(2), &Value::from(3)),
        "{s}"
    );
    let why = sync["reason"].as_str().unwrap();
    for part in [
        "release 2",
        "revoked",
        "CVE-2026-0002",
        "release 1's content",
    ] {
        assert!(why.contains(part), "{part:?} missing: {why}");
    }
    let fields: Vec<&str> = sync["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["image", "env.TAG"], "{s}");
    let text = env.ok(&["status"]);
    assert!(
        text.contains("OUT OF SYNC") && text.contains("env.TAG"),
        "{text}"
    );
    let rollbacks: Vec<Value> = env.items(&["audit", "--action", "service.rollback"]);
    let d = &rollbacks.last().expect("a rollback entry")["details"];
    assert!(
        d["reason"].as_str().unwrap().contains("CVE-2026-0002"),
        "{d}"
    );
    assert_eq!(
        (&d["rollback_of"], &d["fleet_release"]),
        (&Value::from(1), &Value::from(2)),
        "{d}"
    );
    assert!(
        d["chosen"].as_str().unwrap().contains("healthy and stable"),
        "{d}"
    );
    let differs: Vec<&str> = d["differs_from_fleet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        differs.len() == 2
            && differs[0].starts_with("image")
            && differs[1] == "env.TAG: \"2\" -> \"1\"",
        "{d}"
    );

    // Rolling back to a revoked release is refused too.
    refused(&env.run(&["rollback", "web", "--to", "2"]), "revoked", &two);
    // With nowhere left to go, the service runs what it runs, flagged, and
    // a pass says why instead of starting anything.
    env.ok(&["revoke", &one, "--reason", "CVE-2026-0003"]);
    let out = env.run(&["rollback", "web", "--to", "1"]);
    refused(&out, "revoked", &one);
    let s = status(&env);
    assert_eq!(s["instances"][0]["revoked"], "CVE-2026-0003", "{s}");
    let id = s["instances"][0]["id"].clone();
    let serve = Serve::start(&env);
    serve_says(
        &env,
        &[
            "rule revoked",
            "no earlier healthy release",
            "passed over release 2 (the policy refuses its image",
            "release 1 (it has the same (revoked) image)",
        ],
    );
    drop(serve);
    let s = status(&env);
    assert_eq!(s["instances"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(
        (&s["instances"][0]["id"], &s["instances"][0]["state"]),
        (&id, &Value::from("running")),
        "{s}"
    );
    let text = env.ok(&["status"]);
    assert!(text.contains("REVOKED: CVE-2026-0003"), "{text}");
    let ops: Vec<String> = refusals(&env).into_iter().map(|r| r.2).collect();
    assert_eq!(ops, vec!["run", "apply", "rollback", "rollback"]);
}

common::backends!(policy_set_puts_the_policy_in_the_database_where_it_wins_for_every_store);
/// `policy set FILE` makes FILE the policy in the state database: it wins
/// over the store's own policy.toml, `policy show` says so, every store
/// sharing the database (another host, on PostgreSQL) goes by it, and
/// `policy unset` goes back to the file. Both are ledgered.
fn policy_set_puts_the_policy_in_the_database_where_it_wins_for_every_store() {
    let (env, digest) = app_env();
    // The app is not signed: the default refuses it.
    refused(
        &env.run(&["policy", "check", "app:1"]),
        "require_signature",
        &digest,
    );
    let file = env.dir.path().join("fleet-policy.toml");
    write(
        &file,
        b"require_signature = false\nrequire_provenance = false\n",
        0o644,
    );
    let bad = env.dir.path().join("bad.toml");
    write(&bad, b"require_signature = \"no\"\n", 0o644);
    let out = env.run(&["policy", "set", bad.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("require_signature"),
        "{}",
        show(&out)
    );

    env.ok(&["policy", "set", file.to_str().unwrap()]);
    env.ok(&["policy", "check", "app:1"]);
    // A local policy.toml no longer counts.
    env.set_policy("require_signature = true\n");
    env.ok(&["policy", "check", "app:1"]);
    let shown = env.ok(&["policy", "show"]);
    assert!(
        shown.contains("the fleet's policy in the state database"),
        "{shown}"
    );
    assert!(shown.contains("require_signature = false"), "{shown}");
    let set = env.items(&["audit", "--action", "policy.set"]);
    assert_eq!(set.len(), 1, "{set:?}");

    if let Some(url) = &env.state {
        // Another host's store on the same database.
        let other = Env {
            dir: tempfile::tempdir().unwrap(),
            state: Some(url.clone()),
        };
        let shown = other.ok(&["policy", "show"]);
        assert!(
            shown.contains("the fleet's policy in the state database"),
            "{shown}"
        );
        assert!(shown.contains("require_provenance = false"), "{shown}");
    }

    env.ok(&["policy", "unset"]);
    refused(
        &env.run(&["policy", "check", "app:1"]),
        "require_signature",
        &digest,
    );
    assert!(env.ok(&["policy", "show"]).contains("policy.toml"));
    assert_eq!(env.items(&["audit", "--action", "policy.unset"]).len(), 1);
}
