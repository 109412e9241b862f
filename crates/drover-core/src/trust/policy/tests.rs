use super::*;
use crate::builder::{self, BuildOptions, NoProgress};
use crate::keys::{SigningKey, dsse::Envelope};
use crate::store::artifact;
use crate::trust::attest::Statement;

fn fails(text: &str, line: usize, column: usize, key: &str, says: &str) {
    let dir = tempfile::tempdir().unwrap();
    match parse(text, Path::new("policy.toml"), dir.path()) {
        Err(Error::Definition {
            file,
            line: l,
            column: col,
            key: k,
            message,
        }) => {
            assert_eq!(file, Path::new("policy.toml"));
            assert_eq!((l, col), (line, column), "{message}");
            assert_eq!(k.as_deref(), Some(key), "{message}");
            assert!(message.contains(says), "{message:?} lacks {says:?}");
            let shown = Error::Definition {
                file,
                line: l,
                column: col,
                key: k,
                message,
            }
            .to_string();
            assert!(
                shown.starts_with(&format!("policy.toml:{line}:{column}: {key}: ")),
                "{shown}"
            );
        }
        other => panic!("expected a located error, got {other:?}"),
    }
}

#[test]
fn errors_name_file_line_column_and_key() {
    fails(
        "require_signatures = true\n",
        1,
        1,
        "require_signatures",
        "unknown key",
    );
    fails(
        "require_signature = \"yes\"\n",
        1,
        21,
        "require_signature",
        "a boolean",
    );
    fails(
        "trusted_keys = [\"keys/nope.pub\"]\n",
        1,
        17,
        "trusted_keys[0]",
        "cannot use",
    );
    fails(
        "trusted_keys = []\n",
        1,
        16,
        "trusted_keys",
        "no key is trusted",
    );
    fails(
        "require_provenance = true\ntrusted_builders = []\n",
        2,
        20,
        "trusted_builders",
        "no builder is trusted",
    );
    fails(
        "allowed_registries = [\"ok.example\", \"https://x/y\"]\n",
        1,
        37,
        "allowed_registries[1]",
        "not a registry host",
    );
    fails(
        "allowed_base_images = [\"sha256:12\"]\n",
        1,
        24,
        "allowed_base_images[0]",
        "",
    );
    fails(
        "allowed_base_images = [\"busybox\"]\n",
        1,
        24,
        "allowed_base_images[0]",
        "tag pattern",
    );
}

#[test]
fn a_file_overrides_only_what_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let other = SigningKey::generate().unwrap();
    other
        .write(&dir.path().join("ci.key"), &dir.path().join("ci.pub"))
        .unwrap();
    let p = parse(
        "trusted_keys = [\"ci.pub\", \"keys/host.pub\"]\nreplace_revoked = false\n\
             allowed_registries = [\"127.0.0.1:5000\"]\n",
        Path::new("policy.toml"),
        dir.path(),
    )
    .err()
    .unwrap();
    // keys/host.pub does not exist until the host key is made.
    assert!(p.to_string().contains("trusted_keys[1]"), "{p}");
    crate::keys::host_key(dir.path()).unwrap();
    let p = parse(
        "trusted_keys = [\"ci.pub\", \"keys/host.pub\"]\nreplace_revoked = false\n\
             allowed_registries = [\"127.0.0.1:5000\"]\n",
        Path::new("policy.toml"),
        dir.path(),
    )
    .unwrap();
    assert_eq!(p.keys().len(), 2);
    assert_eq!(p.keys()[0], other.public());
    assert!(p.require_signature && p.require_provenance && !p.replace_revoked);
    assert_eq!(p.trusted_builders, vec![attest::BUILDER_ID.to_string()]);
    // What `policy show` prints parses back to the same policy.
    let again = parse(&p.to_toml(), Path::new("again.toml"), dir.path()).unwrap();
    assert_eq!(again.trusted_keys, p.trusted_keys);
    assert_eq!(again.allowed_registries, p.allowed_registries);
    assert_eq!(again.replace_revoked, p.replace_revoked);
    let d = Policy::default_for(dir.path()).unwrap();
    let back = parse(&d.to_toml(), Path::new("d.toml"), dir.path()).unwrap();
    assert_eq!(back.keys(), d.keys());
    assert!(matches!(d.source, Source::Default(_)));
}

#[test]
fn globs() {
    assert!(glob("busybox:*", "busybox:1.36"));
    assert!(glob("*/base:1", "team/base:1"));
    assert!(glob("a*b*c", "aXXbYYc"));
    assert!(!glob("busybox:*", "busybox-evil:1"));
    assert!(!glob("a*b", "ab c"));
}

/// A store with `app:1` (FROM scratch) and its host key.
fn store() -> (tempfile::TempDir, Store, Digest) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("store")).unwrap();
    let text = "[image]\nname = \"app\"\ntag = \"1\"\n\
                    [[layer]]\nkind = \"file\"\ndest = \"/app\"\ncontent = \"x\"\n";
    let def = builder::def::parse(text, Path::new("drover.toml")).unwrap();
    let built = builder::build(&mut store, &def, &BuildOptions::default(), &NoProgress).unwrap();
    let digest = built.digest;
    // Without the build's own provenance: the tests attach their own.
    let attached = store
        .referrers(&digest, Some(PROVENANCE_ARTIFACT_TYPE))
        .unwrap();
    store
        .mutate(|m| {
            attached
                .iter()
                .try_for_each(|r| m.remove_referrer(&r.digest))
        })
        .unwrap();
    (dir, store, digest)
}

fn rule(v: Verdict) -> &'static str {
    match v {
        Verdict::Refused(r) => r.rule,
        Verdict::Allowed { .. } => "allowed",
    }
}

/// Attach provenance naming `builder` and `base`, signed by `key`.
fn provenance(
    store: &mut Store,
    image: &Digest,
    key: &SigningKey,
    builder: &str,
    base: Option<&Digest>,
) {
    let deps: Vec<Json> = base
        .map(|b| json!({"name": "base-image", "uri": "oci:x", "digest": {"sha256": b.hex()}}))
        .into_iter()
        .collect();
    let st = Statement::about(
        image,
        "app:1",
        SLSA_PREDICATE_TYPE,
        json!({"buildDefinition": {"resolvedDependencies": deps},
                   "runDetails": {"builder": {"id": builder}}}),
    );
    let desc = store.resolve(&image.to_string()).unwrap();
    let art = attest::put(store, &desc, PROVENANCE_ARTIFACT_TYPE, &st, key).unwrap();
    store
        .mutate(|m| m.add_referrer(&art, image, PROVENANCE_ARTIFACT_TYPE))
        .unwrap();
}

#[test]
fn evaluate_checks_each_rule_in_order() {
    let (_dir, mut store, image) = store();
    let host = crate::keys::host_key(store.root()).unwrap();
    let mut p = Policy::default_for(store.root()).unwrap();
    let v = p.evaluate(&store, &image, Origin::Local).unwrap();
    assert!(
        matches!(&v, Verdict::Refused(r) if r.rule == "require_signature" && r.reason.contains("not signed") && r.image == image.to_string()),
        "{v:?}"
    );
    // Signed by another key: still not trusted.
    let other = SigningKey::generate().unwrap();
    signature::sign(&mut store, "app:1", &other).unwrap();
    let v = p.evaluate(&store, &image, Origin::Local).unwrap();
    assert!(
        matches!(&v, Verdict::Refused(r) if r.reason.contains("none by a trusted key")),
        "{v:?}"
    );
    signature::sign(&mut store, "app:1", &host).unwrap();
    assert_eq!(
        rule(p.evaluate(&store, &image, Origin::Local).unwrap()),
        "require_provenance"
    );
    // Provenance by the wrong builder, then by the wrong key, then right.
    provenance(
        &mut store,
        &image,
        &host,
        "https://evil.example/builder",
        None,
    );
    let v = p.evaluate(&store, &image, Origin::Local).unwrap();
    assert!(
        matches!(&v, Verdict::Refused(r) if r.reason.contains("evil.example")),
        "{v:?}"
    );
    provenance(&mut store, &image, &host, attest::BUILDER_ID, None);
    assert_eq!(
        rule(p.evaluate(&store, &image, Origin::Local).unwrap()),
        "allowed"
    );

    // Registries: only listed ones, when any are listed.
    p.allowed_registries = vec!["registry.example.com".into()];
    assert_eq!(
        rule(
            p.evaluate(&store, &image, Origin::Registry("evil.example"))
                .unwrap()
        ),
        "allowed_registries"
    );
    assert_eq!(
        rule(
            p.evaluate(&store, &image, Origin::Registry("registry.example.com"))
                .unwrap()
        ),
        "allowed"
    );
    assert_eq!(
        rule(p.evaluate(&store, &image, Origin::Local).unwrap()),
        "allowed"
    );

    // Revoked beats everything.
    revoke(&mut store, "app:1", "CVE-2026-0001").unwrap();
    let v = p.evaluate(&store, &image, Origin::Local).unwrap();
    assert!(
        matches!(&v, Verdict::Refused(r) if r.rule == "revoked" && r.reason.contains("CVE-2026-0001")),
        "{v:?}"
    );
}

/// A tampered copy beside the genuine signature changes nothing (review:
/// anyone able to attach an artifact could otherwise block an approved
/// image); a tampered signature alone refuses the image.
#[test]
fn a_tampered_signature_refuses_only_without_a_good_one() {
    let (_dir, mut store, image) = store();
    let host = crate::keys::host_key(store.root()).unwrap();
    let mut p = Policy::default_for(store.root()).unwrap();
    p.require_provenance = false;
    signature::sign(&mut store, "app:1", &host).unwrap();
    assert_eq!(
        rule(p.evaluate(&store, &image, Origin::Local).unwrap()),
        "allowed"
    );
    // Someone with write access to the store attaches a copy of the
    // signature whose statement was edited after signing.
    let sig = signature::check(&store, &image, p.keys()).unwrap().valid[0].0;
    let bytes = artifact::content(&store, &sig, &image).unwrap();
    let mut env = Envelope::parse(&bytes).unwrap();
    let payload = String::from_utf8(env.payload_bytes().unwrap())
        .unwrap()
        .replace("signedAt", "signedAT");
    env.payload = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, payload);
    let desc = store.resolve("app:1").unwrap();
    let art = artifact::put(
        &store,
        &desc,
        signature::ARTIFACT_TYPE,
        crate::keys::dsse::MEDIA_TYPE,
        &env.to_bytes(),
    )
    .unwrap();
    store
        .mutate(|m| m.add_referrer(&art, &image, signature::ARTIFACT_TYPE))
        .unwrap();
    assert_eq!(
        rule(p.evaluate(&store, &image, Origin::Local).unwrap()),
        "allowed"
    );
    store.mutate(|m| m.remove_referrer(&sig)).unwrap();
    let v = p.evaluate(&store, &image, Origin::Local).unwrap();
    assert!(
        matches!(&v, Verdict::Refused(r) if r.rule == "require_signature" && r.reason.contains("does not verify")),
        "{v:?}"
    );
}

/// As with signatures: a tampered copy beside the genuine statement is
/// ignored; alone, it refuses the image.
#[test]
fn a_tampered_provenance_refuses_only_without_a_good_one() {
    let (_dir, mut store, image) = store();
    let host = crate::keys::host_key(store.root()).unwrap();
    let p = Policy::default_for(store.root()).unwrap();
    signature::sign(&mut store, "app:1", &host).unwrap();
    provenance(&mut store, &image, &host, attest::BUILDER_ID, None);
    assert_eq!(
        rule(p.evaluate(&store, &image, Origin::Local).unwrap()),
        "allowed"
    );
    let good = attest::list(&store, &image, PROVENANCE_ARTIFACT_TYPE).unwrap()[0].artifact;
    let mut env = Envelope::parse(&artifact::content(&store, &good, &image).unwrap()).unwrap();
    let sig = &mut env.signatures[0].sig;
    let first = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(..1, first);
    let desc = store.resolve("app:1").unwrap();
    let art = artifact::put(
        &store,
        &desc,
        PROVENANCE_ARTIFACT_TYPE,
        crate::keys::dsse::MEDIA_TYPE,
        &env.to_bytes(),
    )
    .unwrap();
    store
        .mutate(|m| m.add_referrer(&art, &image, PROVENANCE_ARTIFACT_TYPE))
        .unwrap();
    assert_eq!(
        rule(p.evaluate(&store, &image, Origin::Local).unwrap()),
        "allowed"
    );
    store.mutate(|m| m.remove_referrer(&good)).unwrap();
    let v = p.evaluate(&store, &image, Origin::Local).unwrap();
    assert!(
        matches!(&v, Verdict::Refused(r) if r.rule == "require_provenance" && r.reason.contains("does not verify")),
        "{v:?}"
    );
}

#[test]
fn bases_are_checked_from_provenance() {
    let (_dir, mut store, image) = store();
    let host = crate::keys::host_key(store.root()).unwrap();
    let mut p = Policy::default_for(store.root()).unwrap();
    signature::sign(&mut store, "app:1", &host).unwrap();
    let base: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
    provenance(&mut store, &image, &host, attest::BUILDER_ID, Some(&base));
    assert_eq!(
        rule(p.evaluate(&store, &image, Origin::Local).unwrap()),
        "allowed"
    );
    p.allowed_base_images = vec!["busybox:*".into()];
    let v = p.evaluate(&store, &image, Origin::Local).unwrap();
    assert!(
        matches!(&v, Verdict::Refused(r) if r.rule == "allowed_base_images" && r.reason.contains(&base.to_string())),
        "{v:?}"
    );
    p.allowed_base_images.push(base.to_string());
    assert_eq!(
        rule(p.evaluate(&store, &image, Origin::Local).unwrap()),
        "allowed"
    );
    // The image itself as a base, allowed by its tag.
    assert_eq!(
        p.check_base(&store, &image).unwrap().map(|r| r.0),
        Some("allowed_base_images")
    );
    p.allowed_base_images = vec!["app:*".into()];
    assert_eq!(p.check_base(&store, &image).unwrap(), None);
    revoke(&mut store, &base.to_string(), "bad base").unwrap();
    let v = p.evaluate(&store, &image, Origin::Local).unwrap();
    assert!(
        matches!(&v, Verdict::Refused(r) if r.rule == "revoked"
                && r.reason.contains(&format!("built on {base}")) && r.reason.contains("bad base")),
        "{v:?}"
    );

    // Regression (review): only the direct base was checked, and only
    // through trusted provenance. An image built on `image` (provenance
    // by a key nobody trusts) is refused too, two levels above `base`.
    let text = "[image]\nname = \"top\"\ntag = \"1\"\n\
                    [[layer]]\nkind = \"file\"\ndest = \"/top\"\ncontent = \"y\"\n";
    let def = builder::def::parse(text, Path::new("drover.toml")).unwrap();
    let top = builder::build(&mut store, &def, &BuildOptions::default(), &NoProgress)
        .unwrap()
        .digest;
    let stranger = SigningKey::generate().unwrap();
    provenance(
        &mut store,
        &top,
        &stranger,
        attest::BUILDER_ID,
        Some(&image),
    );
    let reached = revocation_of(&store, &top).unwrap().unwrap();
    assert_eq!(reached.via, vec![image, base]);
    assert_eq!(reached.revocation.digest, base);
    assert!(
        reached.describe().contains(&format!("through {image}")),
        "{}",
        reached.describe()
    );
    assert!(matches!(
        p.check_base(&store, &top).unwrap(),
        Some(("revoked", _))
    ));
    assert_eq!(revocation_of(&store, &base).unwrap().unwrap().via, vec![]);
}

#[test]
fn refusals_and_revocations_are_ledgered() {
    let (_dir, mut store, image) = store();
    let err = enforce(&mut store, &image, Origin::Local, Operation::Run).unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "policy refuses image {image}: rule require_signature: it is not signed"
        )),
        "{err}"
    );
    let (r, new) = revoke(&mut store, "app:1", "compromised").unwrap();
    assert!(new && r.digest == image);
    assert!(!revoke(&mut store, &image.to_string(), "again").unwrap().1);
    assert!(revoke(&mut store, "app:1", " ").is_err());
    let db = store.db();
    assert_eq!(db.read().revocations().unwrap().len(), 1);
    assert!(unrevoke(&mut store, "app:1", "").is_err());
    assert_eq!(
        unrevoke(&mut store, "app:1", "wrong digest")
            .unwrap()
            .reason,
        "compromised"
    );
    assert!(matches!(
        unrevoke(&mut store, "app:1", "again"),
        Err(Error::NotFound { .. })
    ));
    let db = store.db();
    assert!(db.read().revocation(&image).unwrap().is_none());
    assert_eq!(
        db.read()
            .ledger(&ledger::Filter::default())
            .unwrap()
            .iter()
            .filter(|e| e.action == "image.unrevoke")
            .count(),
        1
    );
    let entries = db.read().ledger(&ledger::Filter::default()).unwrap();
    let refuse = entries
        .iter()
        .find(|e| e.action == "policy.refuse")
        .unwrap();
    assert_eq!(refuse.subjects, vec![image.to_string()]);
    assert_eq!(refuse.details["rule"], "require_signature");
    assert_eq!(refuse.details["operation"], "run");
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.action == "image.revoke")
            .count(),
        1
    );
}
