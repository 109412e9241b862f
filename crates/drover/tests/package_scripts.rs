//! `scripts = true` on a packages layer: the maintainer scripts run in the
//! build sandbox, their changes one more layer. Uses the real Debian
//! repository (bookworm, deb.debian.org) and needs root.

use crate::common;

use common::{Env, show};
use serde_json::Value;

fn nix_is_root() -> bool {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0
}

fn def(packages: &str, essential: bool) -> String {
    format!(
        r#"
[image]
name = "scripted"
tag = "1"

[[layer]]
kind = "packages"
packages = {packages}
essential = {essential}
scripts = true
repositories = [{{ url = "http://deb.debian.org/debian" }}]
"#
    )
}

/// A context with `def` and its lock, written by `drover lock` now.
fn locked(packages: &str, essential: bool) -> Option<Env> {
    if !nix_is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    let env = Env::new();
    env.write_def(&def(packages, essential));
    let file = env.ctx().join("drover.toml");
    env.ok(&["lock", "-f", file.to_str().unwrap()]);
    Some(env)
}

fn build_json(env: &Env, extra: &[&str]) -> Value {
    let file = env.ctx().join("drover.toml");
    let mut args = vec!["build", "-f", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.json(&args)
}

fn record<'a>(b: &'a Value, path: &str) -> Option<&'a Value> {
    b["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
}

#[test]
fn scripts_configure_the_packages_and_their_changes_are_a_layer() {
    // Not essential = true: on scratch its init-system-helpers brings
    // usrmerge, whose postinst refuses an image without a merged /usr. The
    // few tools ca-certificates' postinst uses, then (essential ones are
    // never pulled in by dependencies: perl-base for debconf).
    let Some(env) = locked(
        r#"["dash", "coreutils", "sed", "grep", "findutils", "perl-base", "ca-certificates"]"#,
        false,
    ) else {
        return;
    };
    let out = build_json(&env, &[]);
    let layers = out["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{out}");
    assert!(
        layers[1]["source"].as_str().unwrap().starts_with(
            "scripts of layer[0] (packages ca-certificates, coreutils, dash, findutils (+3))"
        ),
        "{out}"
    );
    assert_eq!(layers[1]["cache"]["cache"], "built", "{out}");

    let b: Value = env.json(&["baseline", "scripted:1"]);
    // ca-certificates' postinst ran update-ca-certificates.
    let bundle = record(&b, "/etc/ssl/certs/ca-certificates.crt").expect("the CA bundle");
    assert_eq!(bundle["type"], "file");
    assert!(bundle["size"].as_u64().unwrap() > 100_000, "{bundle}");
    // Nothing of the sandbox's own leaked in.
    for p in ["/proc", "/tmp", "/dev", "/run/drover"] {
        let r = record(&b, p);
        assert!(
            r.is_none() || r.unwrap()["type"] == "dir",
            "{p} leaked: {r:?}"
        );
    }

    // A rebuild reuses both layers without running anything.
    let again = build_json(&env, &[]);
    assert_eq!(again["layers"][1]["cache"]["cache"], "hit", "{again}");
    assert_eq!(again["digest"], out["digest"]);

    // The provenance names the step, hermetic (no network).
    let prov = crate::run_layers::provenance(&env, &out);
    let def = &prov["buildDefinition"];
    assert_eq!(def["externalParameters"]["hermetic"], true, "{prov}");
    let step = def["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| {
            d["name"]
                .as_str()
                .unwrap()
                .starts_with("scripts of layer[0]")
        })
        .expect("the scripts step in the provenance");
    assert_eq!(step["annotations"]["network"], false);
    let configured = step["annotations"]["packages"].as_array().unwrap();
    let at = |name: &str| configured.iter().position(|p| p == name);
    assert!(
        at("libssl3:amd64").unwrap() < at("openssl").unwrap(),
        "{step}"
    );
    assert!(
        at("openssl").unwrap() < at("ca-certificates").unwrap(),
        "{step}"
    );
    assert!(
        at("debconf").unwrap() < at("ca-certificates").unwrap(),
        "{step}"
    );
}

#[test]
fn scripts_without_a_shell_in_the_image_are_refused_clearly() {
    // ca-certificates needs debconf and openssl, neither of which brings
    // a /bin/sh with essential = false.
    let Some(env) = locked(r#"["ca-certificates"]"#, false) else {
        return;
    };
    let file = env.ctx().join("drover.toml");
    let out = env.run(&["build", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scripts = true needs a shell") && err.contains("essential = true"),
        "{}",
        show(&out)
    );
    assert!(!env.ok(&["images"]).contains("scripted"));
}

#[test]
fn a_failing_script_names_its_package_and_status_and_stores_nothing() {
    // dash gives a shell, but none of the essential tools (perl for
    // debconf, coreutils) the postinsts need: one of them fails.
    let Some(env) = locked(r#"["dash", "ca-certificates"]"#, false) else {
        return;
    };
    let file = env.ctx().join("drover.toml");
    let out = env.run(&["build", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("script of ") && err.contains("failed with exit status"),
        "{}",
        show(&out)
    );
    assert!(err.contains("last"), "the last lines of output: {err}");
    assert!(!env.ok(&["images"]).contains("scripted"));
}
