//! `drover trace`: an instance is walked back to its release, image,
//! signatures, provenance, SBOM, baseline and last drift result, each link
//! checked; a broken link (corrupt blob, untrusted key, revocation) fails
//! the trace at that link with exit 3.

use crate::common;

use std::fs;

use common::*;
use serde_json::Value;

/// The first link of `kind`, depth first.
fn find<'a>(l: &'a Value, kind: &str) -> Option<&'a Value> {
    if l["kind"] == kind {
        return Some(l);
    }
    l["children"].as_array()?.iter().find_map(|c| find(c, kind))
}

fn fact<'a>(l: &'a Value, name: &str) -> Option<&'a str> {
    l["facts"]
        .as_array()?
        .iter()
        .find(|f| f[0] == name)
        .and_then(|f| f[1].as_str())
}

/// Every link that does not hold, as "kind: problem".
fn failures(l: &Value, out: &mut Vec<String>) {
    if l["ok"] != true {
        out.push(format!("{}: {}", l["kind"], l["problem"]));
    }
    for c in l["children"].as_array().into_iter().flatten() {
        failures(c, out);
    }
}

fn trace(env: &Env, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json", "trace"];
    all.extend_from_slice(args);
    let out = env.run(&all);
    let v = common::doc(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(v["kind"], "Trace");
    (out.status.code().unwrap_or(-1), v["root"].clone())
}

#[test]
fn an_instance_traces_back_to_its_build_and_every_link_holds() {
    let Some(env) = web_env() else { return };
    let fleet = env.ctx().join("fleet.toml");
    write(
        &fleet,
        br#"
[service.web]
image = "web:1"
min_healthy = "0s"
replicas = 1
"#,
        0o644,
    );
    env.ok(&["apply", "-f", fleet.to_str().unwrap()]);
    let status: Vec<Value> = env.items(&["status"]);
    let id = status[0]["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let image = status[0]["image"].as_str().unwrap().to_string();

    let (code, root) = trace(&env, &[&id]);
    let mut bad = Vec::new();
    failures(&root, &mut bad);
    assert!(bad.is_empty() && code == 0, "{bad:?}\n{root:#}");

    // The chain, in order: instance -> release -> image -> its attachments.
    assert_eq!(root["kind"], "instance");
    assert_eq!(root["name"], id.as_str());
    let release = find(&root, "release").expect("release link");
    assert_eq!(release["name"], "web@1");
    let img = find(release, "image").expect("image link");
    assert_eq!(img["name"], image.as_str());
    assert!(fact(img, "blobs").unwrap().contains("intact"), "{img}");
    for kind in [
        "signatures",
        "signature",
        "provenance",
        "statement",
        "sbom",
        "baseline",
        "drift",
    ] {
        assert!(find(&root, kind).is_some(), "no {kind} link in\n{root:#}");
    }
    let stmt = find(&root, "statement").unwrap();
    assert_eq!(fact(stmt, "builder"), Some("https://drover.dev/builder/v1"));
    let inputs: Vec<&str> = stmt["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(inputs.contains(&"definition"), "{stmt}");
    let host = env.json(&["key", "show"]);
    assert_eq!(fact(stmt, "signed by"), host["keyid"].as_str());

    // The same image reached from its release and from its tag; the tree
    // form ends by saying so.
    assert_eq!(trace(&env, &["web@1"]).0, 0);
    let text = env.ok(&["trace", "web:1"]);
    assert!(text.contains("trace: every link verified"), "{text}");
    assert!(text.contains("└─ baseline"), "{text}");

    // A layer blob changed on disk: the image link fails and says which.
    let inspect: Value = serde_json::from_str(&env.ok(&["inspect", "web:1"])).unwrap();
    let layer = inspect["manifest"]["layers"][0]["digest"].as_str().unwrap();
    let path = env
        .store()
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let (code, root) = trace(&env, &[&id]);
    assert_eq!(code, 3);
    let img = find(&root, "image").unwrap();
    assert_eq!(img["ok"], false);
    assert!(
        img["problem"].as_str().unwrap().contains(layer),
        "the problem should name the corrupt blob: {img}"
    );
}

#[test]
fn untrusted_keys_and_revocation_fail_their_links() {
    let env = sample_env();
    let digest = env.build(&["--sign"]);
    assert_eq!(trace(&env, &[&digest]).0, 0);

    // Trusting only another key: the host's signature and provenance no
    // longer count.
    let other = env.dir.path().join("other");
    env.ok(&["key", "generate", other.to_str().unwrap()]);
    let other_pub = other.with_extension("pub");
    let other_pub = other_pub.to_str().unwrap();
    let (code, root) = trace(&env, &[&digest, "--key", other_pub]);
    assert_eq!(code, 3);
    let sigs = find(&root, "signatures").unwrap();
    assert!(
        sigs["problem"]
            .as_str()
            .unwrap()
            .contains("none by a trusted key"),
        "{sigs}"
    );
    assert_eq!(find(&root, "provenance").unwrap()["ok"], false);

    // Signed by the other key too, and trusting both: everything holds.
    let other_key = other.with_extension("key");
    env.ok(&["sign", &digest, "--key", other_key.to_str().unwrap()]);
    let host_pub = env.store().join("keys/host.pub");
    let (code, root) = trace(
        &env,
        &[
            &digest,
            "--key",
            other_pub,
            "--key",
            host_pub.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{root:#}");
    let valid = find(&root, "signatures").unwrap()["children"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(valid, 2);

    // Revoked: the image link fails with the reason.
    env.ok(&["revoke", &digest, "--reason", "CVE-2026-1234"]);
    let (code, root) = trace(&env, &[&digest]);
    assert_eq!(code, 3);
    let img = find(&root, "image").unwrap();
    assert!(
        img["problem"].as_str().unwrap().contains("CVE-2026-1234"),
        "{img}"
    );

    // Something that is neither: a clear not-found (exit 4).
    let out = env.run(&["trace", "nothing-here"]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("service@N"));
}
