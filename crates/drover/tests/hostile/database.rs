//! A database-level attacker (write access to drover.db, triggers dropped): policy at every start, tags re-derived from the ledger, a signed ledger head, fresh evidence in trace, xattrs in drift.

use std::process::Command;

use crate::common::{self, Env, require, sample_env, show};

/// Run `sql` on the store's database as the attacker does: with the
/// append-only triggers (ledger, releases) dropped first.
fn attack(env: &Env, sql: &str) {
    let out = Command::new("sqlite3")
        .arg(env.store().join("drover.db"))
        .arg(format!(
            "DROP TRIGGER IF EXISTS ledger_no_update; DROP TRIGGER IF EXISTS ledger_no_delete; \
             DROP TRIGGER IF EXISTS releases_immutable; DROP TRIGGER IF EXISTS releases_no_delete; {sql}"
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "sqlite3 {sql}:\n{}", show(&out));
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Review: "moving a tag in `tags` passes `verify`, `audit verify` and
/// `trace`". Tags are re-derived from the ledger's entries now.
#[test]
fn a_tag_moved_in_the_database_fails_verify_and_audit_verify() {
    if !require("sqlite3") {
        return;
    }
    let env = sample_env();
    let good = env.build(&[]);
    env.write_def(&common::SIMPLE_DEF.replace("tag = \"1.0\"", "tag = \"evil\""));
    std::fs::write(env.ctx().join("rootfs/etc/motd"), "defaced\n").unwrap();
    let evil = env.build(&[]);
    assert_ne!(good, evil);
    env.ok(&["verify"]);
    env.ok(&["audit", "verify"]);

    attack(
        &env,
        &format!("UPDATE tags SET digest = '{evil}' WHERE name = 'sample:1.0';"),
    );
    for args in [&["verify"][..], &["audit", "verify"]] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", show(&out));
        let all = show(&out);
        assert!(
            all.contains("tag sample:1.0")
                && all.contains(&format!("points at {evil} in the tags table"))
                && all.contains(&format!("says {good}")),
            "{args:?}: {all}"
        );
    }
    // A tag deleted from the table without an untag entry is caught too.
    attack(&env, "DELETE FROM tags WHERE name = 'sample:evil';");
    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        show(&out).contains("tag sample:evil has no row"),
        "{}",
        show(&out)
    );
}

/// Review: "deleting the ledger's tail and rewriting `ledger_head` passes
/// `audit verify`". The head is also signed into a file beside the
/// database, which the attacker cannot forge or roll back.
#[test]
fn a_truncated_ledger_with_a_rewritten_head_fails_audit_verify() {
    if !require("sqlite3") {
        return;
    }
    let env = sample_env();
    env.build(&[]);
    env.ok(&["tag", "sample:1.0", "a:1"]);
    env.ok(&["tag", "sample:1.0", "b:1"]);
    env.ok(&["tag", "sample:1.0", "c:1"]);
    env.ok(&["audit", "verify"]);
    assert!(env.store().join("ledger.head").exists());

    attack(
        &env,
        "DELETE FROM ledger WHERE seq > 2; \
         UPDATE ledger_head SET seq = 2, hash = (SELECT hash FROM ledger WHERE seq = 2); \
         DELETE FROM tags WHERE name IN ('b:1', 'c:1');",
    );
    let out = env.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("ledger NOT valid: entry 3: missing: entries 3 to 4"),
        "{text}"
    );
    // Nothing is appended over the gap (which would bury it), and the
    // signed head stays where it was.
    let out = env.run(&["tag", "sample:1.0", "d:1"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        show(&out).contains("entries 3 to 4 are missing"),
        "{}",
        show(&out)
    );
    let out = env.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
}

/// A kill between the database commit and the signed head's write leaves
/// the file behind the chain: that is not tampering.
#[test]
fn a_signed_head_that_lags_the_chain_is_not_tampering() {
    let env = sample_env();
    env.build(&[]);
    let head = env.store().join("ledger.head");
    let first = std::fs::read(&head).unwrap();
    env.ok(&["tag", "sample:1.0", "a:1"]);
    env.ok(&["tag", "sample:1.0", "b:1"]);
    // Put back the head signed after entry 1, as if the process died
    // before writing the later ones.
    std::fs::write(&head, &first).unwrap();
    let text = env.ok(&["audit", "verify"]);
    assert!(text.contains("ledger valid: 3 entries"), "{text}");
    // The next commit moves it forward again.
    env.ok(&["tag", "sample:1.0", "c:1"]);
    let now: serde_json::Value = serde_json::from_slice(&std::fs::read(&head).unwrap()).unwrap();
    assert_eq!(now["seq"], 4);
}

fn ps(env: &Env) -> Vec<serde_json::Value> {
    env.items(&["ps"])
}

fn trace(env: &Env, target: &str) -> (i32, serde_json::Value) {
    let out = env.run(&["--json", "trace", target]);
    let v = common::doc(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(v["kind"], "Trace");
    (out.status.code().unwrap_or(-1), v["root"].clone())
}

/// Every link that does not hold, as "kind: problem".
fn failures(l: &serde_json::Value, out: &mut Vec<String>) {
    if l["ok"] == false {
        out.push(format!("{}: {}", l["kind"], l["problem"]));
    }
    for c in l["children"].as_array().into_iter().flatten() {
        failures(c, out);
    }
}

/// Review: "changing a release's image digest in the DB makes `serve` heal
/// with an unsigned image; only `trace` notices". Every start checks its
/// image against the deploy policy now, and the refusal is ledgered.
#[test]
fn a_release_pointed_at_an_unsigned_image_starts_nothing() {
    if !require("sqlite3") {
        return;
    }
    let Some(env) = common::web_env() else { return };
    let fleet = env.ctx().join("fleet.toml");
    common::write(
        &fleet,
        b"[service.web]\nimage = \"web:1\"\nmin_healthy = \"0s\"\nreplicas = 1\n",
        0o644,
    );
    env.ok(&["apply", "-f", fleet.to_str().unwrap()]);
    let before = ps(&env);
    assert_eq!(before.len(), 1);
    // An image built here but never signed: the policy refuses it.
    std::fs::write(env.ctx().join("rootfs-1/www/index.html"), "unsigned\n").unwrap();
    let def = std::fs::read_to_string(env.ctx().join("web-1.toml"))
        .unwrap()
        .replace("tag = \"1\"", "tag = \"unsigned\"");
    std::fs::write(env.ctx().join("web-unsigned.toml"), def).unwrap();
    let file = env.ctx().join("web-unsigned.toml");
    let evil = common::last_line(&env.ok(&["build", "-f", file.to_str().unwrap()]));

    attack(
        &env,
        &format!("UPDATE releases SET image = '{evil}' WHERE service = 'web';"),
    );
    // The instance dies; the heal must not start the unsigned image.
    let id = before[0]["id"].as_str().unwrap();
    env.ok(&["rm", "--force", id]);
    let out = env.run(&["apply", "-f", fleet.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        show(&out).contains("require_signature"),
        "the refusal names its rule: {}",
        show(&out)
    );
    assert!(
        ps(&env).iter().all(|i| i["image"] != evil.as_str()),
        "{:?}",
        ps(&env)
    );
    let refusals = env.ok(&["--json", "audit", "--action", "policy.refuse"]);
    assert!(refusals.contains(&evil), "{refusals}");
}

/// Review: "`run` reuses an unpacked root that drift already found tampered
/// (serves the defaced file)". A root with file drift is moved aside when
/// the drift is found, so the next start unpacks a fresh verified copy.
#[test]
fn run_never_reuses_a_root_drift_found_tampered() {
    let Some(env) = common::web_env() else { return };
    let first = common::last_line(&env.ok(&["run", "web:1"]));
    let image = ps(&env)[0]["image"].as_str().unwrap().to_string();
    let root = env
        .store()
        .join("rootfs")
        .join(image.trim_start_matches("sha256:"));
    let page = root.join("www/index.html");
    std::fs::write(&page, "defaced\n").unwrap();
    let out = env.run(&["drift"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));

    let second = common::last_line(&env.ok(&["run", "web:1"]));
    assert_ne!(first, second);
    assert_eq!(std::fs::read_to_string(&page).unwrap(), "version one\n");
    let pid = ps(&env)
        .into_iter()
        .find(|i| i["id"] == second.as_str())
        .and_then(|i| i["pid"].as_u64())
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/root/www/index.html")).unwrap(),
        "version one\n"
    );
}

/// Review: "`trace` right after a `config.json` edit says 'every link
/// verified' (it reports the last scan)". The config and the root are
/// checked when trace runs.
#[test]
fn trace_checks_config_and_root_now() {
    let Some(env) = common::web_env() else { return };
    let id = common::last_line(&env.ok(&["run", "web:1"]));
    let (code, root) = trace(&env, &id);
    let mut bad = Vec::new();
    failures(&root, &mut bad);
    assert!(code == 0 && bad.is_empty(), "{bad:?}");

    let config = env.store().join("instances").join(&id).join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    spec["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push("LD_PRELOAD=/tmp/evil.so".into());
    std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
    let (code, root) = trace(&env, &id);
    let mut bad = Vec::new();
    failures(&root, &mut bad);
    assert_eq!(code, 3, "{root:#}");
    assert!(bad.iter().any(|b| b.starts_with("\"config\"")), "{bad:?}");

    let image = ps(&env)[0]["image"].as_str().unwrap().to_string();
    let page = env
        .store()
        .join("rootfs")
        .join(image.trim_start_matches("sha256:"))
        .join("www/index.html");
    std::fs::write(&page, "defaced\n").unwrap();
    let (_, root) = trace(&env, &id);
    let mut bad = Vec::new();
    failures(&root, &mut bad);
    assert!(
        bad.iter()
            .any(|b| b.starts_with("\"root\"") && b.contains("/www/index.html")),
        "{bad:?}"
    );
}

/// The same attack with a signed image (one the policy admits): a release
/// row must still say what the signed ledger entry that created it says.
#[test]
fn a_release_pointed_at_another_signed_image_starts_nothing() {
    if !require("sqlite3") {
        return;
    }
    let Some(env) = common::web_env() else { return };
    let fleet = env.ctx().join("fleet.toml");
    common::write(
        &fleet,
        b"[service.web]\nimage = \"web:1\"\nmin_healthy = \"0s\"\nreplicas = 1\n",
        0o644,
    );
    env.ok(&["apply", "-f", fleet.to_str().unwrap()]);
    let id = ps(&env)[0]["id"].as_str().unwrap().to_string();
    let inspect = env.items(&["images"]);
    let two = inspect
        .iter()
        .find(|t| t["name"].as_str().is_some_and(|n| n.ends_with("web:2")))
        .and_then(|t| t["digest"].as_str())
        .unwrap_or_else(|| panic!("no web:2 in {inspect:#?}"))
        .to_string();
    attack(
        &env,
        &format!("UPDATE releases SET image = '{two}' WHERE service = 'web';"),
    );
    env.ok(&["rm", "--force", &id]);
    let out = env.run(&["apply", "-f", fleet.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        show(&out).contains("release_record") && show(&out).contains("ledger entry"),
        "{}",
        show(&out)
    );
    assert!(ps(&env).iter().all(|i| i["image"] != two.as_str()));
}

/// Set extended attribute `name` of `path` (not following a symlink).
fn setxattr(path: &std::path::Path, name: &str, value: &str) {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import os, sys; os.setxattr(sys.argv[1], sys.argv[2], sys.argv[3].encode(), follow_symlinks=False)")
        .arg(path)
        .arg(name)
        .arg(value)
        .output()
        .unwrap();
    assert!(out.status.success(), "setxattr {name}: {}", show(&out));
}

/// Review: "an xattr added to a root file is not reported as drift". The
/// baseline records extended attributes (an image built with
/// `xattrs = true` carries them, and unpacks and scans clean); one added,
/// changed or removed in the root is a finding.
#[test]
fn an_xattr_added_to_a_root_file_is_drift() {
    if !require("python3") {
        return;
    }
    let env = sample_env();
    setxattr(&env.ctx().join("rootfs/etc/motd"), "user.origin", "image");
    env.write_def(&common::SIMPLE_DEF.replace(
        "src = \"rootfs\"\ndest = \"/\"",
        "src = \"rootfs\"\ndest = \"/\"\nxattrs = true",
    ));
    let digest = env.build(&[]);
    let out = env.ok(&["drift", "--image", "sample:1.0"]);
    assert!(common::last_line(&out).ends_with("no drift"), "{out}");

    let root = env
        .store()
        .join("rootfs")
        .join(digest.trim_start_matches("sha256:"));
    setxattr(&root.join("bin/tool"), "user.evil", "1");
    setxattr(&root.join("etc/motd"), "user.origin", "changed");
    let out = env.run(&["drift", "--image", "sample:1.0"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.contains("/bin/tool: extended attribute user.evil added")
            && text.contains("/etc/motd: extended attribute user.origin changed"),
        "{text}"
    );
}

/// A release's config edited in place (capabilities added, keeping its
/// config digest): the config no longer hashes to its digest.
#[test]
fn a_release_config_edited_in_place_starts_nothing() {
    if !require("sqlite3") {
        return;
    }
    let Some(env) = common::web_env() else { return };
    let fleet = env.ctx().join("fleet.toml");
    common::write(
        &fleet,
        b"[service.web]\nimage = \"web:1\"\nmin_healthy = \"0s\"\nreplicas = 1\n",
        0o644,
    );
    env.ok(&["apply", "-f", fleet.to_str().unwrap()]);
    let id = ps(&env)[0]["id"].as_str().unwrap().to_string();
    attack(
        &env,
        "UPDATE releases SET config = json_set(config, '$.cap_add', json('[\"CAP_SYS_ADMIN\"]')) WHERE service = 'web';",
    );
    env.ok(&["rm", "--force", &id]);
    let out = env.run(&["apply", "-f", fleet.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        show(&out).contains("release_record") && show(&out).contains("the config was edited"),
        "{}",
        show(&out)
    );
    assert!(ps(&env).is_empty(), "{:?}", ps(&env));
}

/// A revocation deleted from the `revocations` table: the ledger still
/// revokes the image, and no start takes the table's word for it.
#[test]
fn a_revocation_deleted_from_the_database_still_refuses() {
    if !require("sqlite3") {
        return;
    }
    let Some(env) = common::web_env() else { return };
    env.ok(&["revoke", "web:1", "--reason", "CVE-2026-0001"]);
    let out = env.run(&["run", "web:1"]);
    assert_eq!(out.status.code(), Some(6), "{}", show(&out));
    attack(&env, "DELETE FROM revocations;");
    let out = env.run(&["run", "web:1"]);
    assert_eq!(out.status.code(), Some(6), "{}", show(&out));
    assert!(
        show(&out).contains("the ledger revokes it"),
        "{}",
        show(&out)
    );
    assert!(ps(&env).is_empty());
}

/// What `sqlite3` prints for `sql` on the store's database.
fn query(env: &Env, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(env.store().join("drover.db"))
        .arg(sql)
        .output()
        .unwrap();
    assert!(out.status.success(), "sqlite3 {sql}:\n{}", show(&out));
    stdout(&out).trim().to_string()
}

/// Review of the signed head: "while the signed head leads the chain,
/// drover refuses every append — `stop` and `rm` included", the full
/// disk's lock-out again. Freeing transitions proceed (warning about the
/// gap), other appends are refused with the way out, `audit verify` keeps
/// naming the gap, and `audit accept-truncation` ledgers it and re-signs.
#[test]
fn a_truncated_tail_still_lets_stop_and_rm_work_and_accepting_it_is_ledgered() {
    if !require("sqlite3") {
        return;
    }
    let Some(env) = common::web_env() else { return };
    let id = common::last_line(&env.ok(&["run", "web:1"]));
    let end: u64 = query(&env, "SELECT max(seq) FROM ledger;").parse().unwrap();
    let head: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.store().join("ledger.head")).unwrap()).unwrap();
    assert_eq!(head["seq"], end);
    attack(
        &env,
        &format!(
            "DELETE FROM ledger WHERE seq = {end}; \
             UPDATE ledger_head SET seq = {prev}, hash = (SELECT hash FROM ledger WHERE seq = {prev});",
            prev = end - 1
        ),
    );
    let out = env.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        stdout(&out).contains(&format!("missing: entry {end}")),
        "{}",
        show(&out)
    );

    // Stop and remove still work (the exit may be recorded by the
    // instance's monitor, whose warning goes to its log), and say why
    // they warn.
    let out = env.run(&["stop", &id]);
    assert!(out.status.success(), "{}", show(&out));
    let out = env.run(&["rm", &id]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        show(&out).contains("the ledger has a gap"),
        "{}",
        show(&out)
    );
    assert!(ps(&env).iter().all(|i| i["id"] != id.as_str()));
    // The head was not re-signed over the gap: still not valid.
    let out = env.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));

    // Anything else is refused, with the way out.
    let out = env.run(&["tag", "web:1", "other:1"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        show(&out).contains(&format!("the host key signed entry {end}"))
            && show(&out).contains("drover audit accept-truncation"),
        "{}",
        show(&out)
    );

    // Accepting needs a reason, and a gap.
    let out = env.run(&["audit", "accept-truncation", "--reason", " "]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let text = env.ok(&[
        "audit",
        "accept-truncation",
        "--reason",
        "restored last night's backup",
    ]);
    assert!(text.contains("accepted"), "{text}");
    let accepted = env.items(&["audit", "--action", "ledger.accept_truncation"]);
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    let d = &accepted[0]["details"];
    assert_eq!(d["signed_head_seq"], end);
    assert_eq!(d["signed_head_hash"], head["hash"]);
    assert_eq!(d["reason"], "restored last night's backup");
    assert!(accepted[0]["signature"].is_string());
    let text = env.ok(&["audit", "verify"]);
    assert!(text.contains("ledger valid"), "{text}");
    env.ok(&["tag", "web:1", "other:1"]);
    let out = env.run(&["audit", "accept-truncation", "--reason", "again"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(show(&out).contains("no gap to accept"), "{}", show(&out));
}

/// Lowercase hex SHA-256, `sha256:`-prefixed, as the ledger hashes.
fn sha256(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Review of the release check: it "reads `store_meta.ledger_signed_from`
/// from the database and accepts unsigned entries below it". An attacker
/// raises that value, strips the signature of the `release.create` entry,
/// recomputes its hash over another image, and points the release there.
/// Where signing began is taken from the signed head, and an unsigned
/// entry must link to a signed one: the heal is refused.
#[test]
fn a_raised_signed_from_and_a_stripped_release_signature_start_nothing() {
    if !require("sqlite3") {
        return;
    }
    let Some(env) = common::web_env() else { return };
    let fleet = env.ctx().join("fleet.toml");
    common::write(
        &fleet,
        b"[service.web]\nimage = \"web:1\"\nmin_healthy = \"0s\"\nreplicas = 1\n",
        0o644,
    );
    env.ok(&["apply", "-f", fleet.to_str().unwrap()]);
    let id = ps(&env)[0]["id"].as_str().unwrap().to_string();
    let images = env.items(&["images"]);
    let two = images
        .iter()
        .find(|t| t["name"].as_str().is_some_and(|n| n.ends_with("web:2")))
        .and_then(|t| t["digest"].as_str())
        .unwrap()
        .to_string();
    let entries = env.items(&["audit", "--action", "release.create"]);
    let mut e = entries[0].clone();
    let seq = e["seq"].as_u64().unwrap();
    e["details"]["image"] = two.clone().into();
    let content = serde_json::json!({
        "action": e["action"],
        "actor": e["actor"],
        "details": e["details"],
        "prev_hash": e["prev_hash"],
        "seq": e["seq"],
        "subjects": e["subjects"],
        "time": e["time"],
    });
    let hash = sha256(content.to_string().as_bytes());
    let details = e["details"].to_string().replace('\'', "''");
    attack(
        &env,
        &format!(
            "INSERT OR REPLACE INTO store_meta (key, value) VALUES ('ledger_signed_from', '{}'); \
             UPDATE ledger SET details = '{details}', hash = '{hash}', keyid = NULL, signature = NULL WHERE seq = {seq}; \
             UPDATE releases SET image = '{two}' WHERE service = 'web';",
            seq + 1
        ),
    );
    env.ok(&["rm", "--force", &id]);
    let out = env.run(&["apply", "-f", fleet.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        show(&out).contains("release_record")
            && show(&out).contains(&format!("ledger entry {seq} that created it")),
        "{}",
        show(&out)
    );
    assert!(ps(&env).iter().all(|i| i["image"] != two.as_str()));
    // `audit verify` trusts the signed head's record, not the raised one.
    let out = env.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        show(&out).contains("the database's record was edited"),
        "{}",
        show(&out)
    );
}
