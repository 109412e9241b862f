use super::*;

const HEX: &str = "fab9a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e";

fn usage(s: &str) -> String {
    match parse(s) {
        Err(Error::Usage(m)) => m,
        other => panic!("{s:?}: expected a usage error, got {other:?}"),
    }
}

#[test]
fn names_and_tags() {
    assert_eq!(
        parse("hello").unwrap(),
        ImageRef::Tag {
            name: "hello:latest".into(),
            hex: None
        }
    );
    assert_eq!(
        parse("team/web:1.0").unwrap(),
        ImageRef::Tag {
            name: "team/web:1.0".into(),
            hex: None
        }
    );
    // A hex word may be a tag or a prefix.
    assert_eq!(
        parse("cafe01").unwrap(),
        ImageRef::Tag {
            name: "cafe01:latest".into(),
            hex: Some("cafe01".into())
        }
    );
}

/// Regression (issue 19): `inspect 'Hello::1'` said "not found", exit 4.
#[test]
fn an_invalid_reference_is_a_usage_error() {
    for bad in [
        "Hello::1",
        "Hello",
        "a b",
        "x:",
        ":1",
        "hello@sha256:abc",
        "hello@",
    ] {
        let m = usage(bad);
        assert!(m.starts_with("invalid reference"), "{bad}: {m}");
    }
}

/// Regression (issue 19): `inspect fab9` said "not found", exit 4.
#[test]
fn a_short_prefix_is_a_usage_error() {
    assert!(
        usage("sha256:fab9").contains("a digest prefix needs at least 6 hex digits"),
        "{}",
        usage("sha256:fab9")
    );
    assert!(usage("FAB9").contains("at least 6 hex digits"));
    // `fab9` may still be a tag (fab9:latest); the store decides.
    assert!(matches!(
        parse("fab9").unwrap(),
        ImageRef::Tag { hex: Some(_), .. }
    ));
}

/// Regression (issue 19): `inspect sha256:<12 hex>` said "not a digest".
#[test]
fn prefixes_and_digests() {
    assert_eq!(
        parse(&format!("sha256:{}", &HEX[..12])).unwrap(),
        ImageRef::Prefix(HEX[..12].into())
    );
    assert_eq!(
        parse(&HEX[..12].to_uppercase()).unwrap(),
        ImageRef::Prefix(HEX[..12].into())
    );
    let full = format!("sha256:{HEX}");
    assert_eq!(
        parse(&full).unwrap(),
        ImageRef::Digest(full.parse().unwrap())
    );
    assert!(usage(&format!("sha256:{HEX}0")).starts_with("invalid reference"));
    assert!(usage("sha256:xyz123").starts_with("invalid reference"));
}

#[test]
fn pinned_names() {
    let full = format!("sha256:{HEX}");
    for name in [
        "hello",
        "hello:1",
        "127.0.0.1:5000/hello",
        "127.0.0.1:5000/hello:1",
    ] {
        assert_eq!(
            parse(&format!("{name}@{full}")).unwrap(),
            ImageRef::Pinned {
                name: name.into(),
                digest: full.parse().unwrap()
            }
        );
    }
    assert!(matches!(
        parse("127.0.0.1:5000/hello:1").unwrap(),
        ImageRef::Remote(_)
    ));
}

#[test]
fn split_tags_and_repository_forms() {
    assert_eq!(split_tag("hello:1"), ("hello", Some("1")));
    assert_eq!(
        split_tag("localhost:5000/hello"),
        ("localhost:5000/hello", None)
    );
    assert_eq!(
        repository_forms("127.0.0.1:5000/team/hello"),
        ["127.0.0.1:5000/team/hello", "team/hello"]
    );
    assert_eq!(
        repository_forms("docker.io/library/busybox"),
        ["busybox", "docker.io/library/busybox"]
    );
    assert_eq!(repository_forms("hello"), ["hello"]);
}

/// A store holding small manifests (no layers) to resolve.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        Fixture { _dir: dir, store }
    }

    /// A manifest blob, distinct per `n`.
    fn image(&self, n: u32) -> Descriptor {
        let bytes = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": super::super::oci::MEDIA_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": Digest::of(b"{}").to_string(), "size": 2},
            "layers": [],
            "annotations": {"n": n.to_string()},
        }))
        .unwrap();
        let digest = self.store.put_blob(&bytes).unwrap();
        Descriptor::new(
            super::super::oci::MEDIA_MANIFEST,
            digest,
            bytes.len() as u64,
        )
    }

    fn tag(&mut self, name: &str, d: &Descriptor) {
        self.store.mutate(|m| m.set_tag(name, d).map(drop)).unwrap();
    }

    /// What `registry::pull` records, without a registry.
    fn record_pull(&mut self, d: &Descriptor, remote: &str) {
        self.store
            .mutate(|m| {
                m.record(crate::ledger::NewEntry::new(
                    "image.pull",
                    vec![d.digest.to_string()],
                    serde_json::json!({ "remote": remote }),
                ))
            })
            .unwrap();
    }
}

fn kind(r: Result<Descriptor>) -> crate::ErrorKind {
    r.unwrap_err().kind()
}

/// Regression (issue 19): `drover run doesnotexist@sha256:<real digest>`
/// ran the image, ignoring the name.
#[test]
fn name_at_digest_is_checked_against_the_name() {
    let mut f = Fixture::new();
    let app = f.image(1);
    let other = f.image(2);
    f.tag("app:1", &app);
    f.tag("other:1", &other);
    let d = app.digest;
    let s = &f.store;
    assert_eq!(s.resolve(&format!("app@{d}")).unwrap().digest, d);
    assert_eq!(s.resolve(&format!("app:1@{d}")).unwrap().digest, d);
    let e = s.resolve(&format!("doesnotexist@{d}")).unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::NotFound);
    assert!(e.to_string().contains("its names: app"), "{e}");
    // A tag written with the digest must not point elsewhere.
    assert_eq!(
        kind(s.resolve(&format!("other:1@{d}"))),
        crate::ErrorKind::NotFound
    );
    // An image not in the store is not found either way.
    let absent = Digest::of(b"absent");
    assert_eq!(
        kind(s.resolve(&format!("app@{absent}"))),
        crate::ErrorKind::NotFound
    );
}

#[test]
fn name_at_digest_knows_where_an_image_was_pulled_from() {
    let mut f = Fixture::new();
    let img = f.image(1);
    let d = img.digest;
    f.record_pull(&img, &format!("127.0.0.1:5000/team/hello@{d}"));
    let s = &f.store;
    for name in ["127.0.0.1:5000/team/hello", "team/hello"] {
        assert_eq!(
            s.resolve(&format!("{name}@{d}")).unwrap().digest,
            d,
            "{name}"
        );
    }
    assert!(s.resolve(&format!("127.0.0.1:5000/hello@{d}")).is_err());
    // Docker Hub names, normalised.
    let hub = f.image(2);
    f.record_pull(&hub, "docker.io/library/busybox:1.36");
    let s = &f.store;
    let h = hub.digest;
    for name in ["busybox", "docker.io/library/busybox", "busybox:1.36"] {
        assert_eq!(
            s.resolve(&format!("{name}@{h}")).unwrap().digest,
            h,
            "{name}"
        );
    }
}

/// Regression (issue 19): an image pulled by digest (by `apply`) was found
/// by no prefix: prefixes covered tagged images only.
#[test]
fn prefixes_reach_untagged_images() {
    let mut f = Fixture::new();
    let pulled = f.image(1);
    let d = pulled.digest;
    f.record_pull(&pulled, &format!("127.0.0.1:5000/hello@{d}"));
    let tagged = f.image(2);
    f.tag("app:1", &tagged);
    let s = &f.store;
    assert_eq!(s.resolve(&d.hex()[..12]).unwrap().digest, d);
    assert_eq!(
        s.resolve(&format!("sha256:{}", &d.hex()[..6]))
            .unwrap()
            .digest,
        d
    );
    assert_eq!(s.resolve(&d.to_string()).unwrap().digest, d);
    let listed: Vec<Digest> = s.images(true).unwrap().iter().map(|i| i.digest).collect();
    assert!(listed.contains(&d) && listed.contains(&tagged.digest));
    let tagged_only: Vec<Digest> = s.images(false).unwrap().iter().map(|i| i.digest).collect();
    assert_eq!(tagged_only, [tagged.digest]);
    // A blob nobody names is no image of `images`.
    let loose = f.image(3);
    assert_eq!(
        kind(f.store.resolve(&loose.digest.hex()[..12])),
        crate::ErrorKind::NotFound
    );
}

#[test]
fn a_short_hex_word_is_a_tag_or_too_short() {
    let mut f = Fixture::new();
    let img = f.image(1);
    f.tag("fab9:latest", &img);
    assert_eq!(f.store.resolve("fab9").unwrap().digest, img.digest);
    let e = f.store.resolve("fab8").unwrap_err();
    assert!(e.to_string().contains("at least 6 hex digits"), "{e}");
}

#[test]
fn an_ambiguous_prefix_lists_the_candidates() {
    let info = |first: u8, last: u8, tags: &[&str]| {
        let mut raw = [7u8; 32];
        raw[0] = first;
        raw[31] = last;
        ImageInfo {
            digest: Digest::from_bytes(raw),
            media_type: String::new(),
            size: 0,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            created: None,
            held_by: Vec::new(),
        }
    };
    let images = || {
        vec![
            info(0xab, 1, &["a:1"]),
            info(0xab, 2, &[]),
            info(0xcd, 1, &["c:1"]),
        ]
    };
    let e = pick("ab0707", "ab0707", images()).unwrap_err();
    assert!(matches!(e, Error::Usage(_)));
    let m = e.to_string();
    assert!(
        m.contains("more than one image") && m.contains("a:1") && m.contains("untagged"),
        "{m}"
    );
    assert_eq!(pick("cd07", "cd0707", images()).unwrap().tags, ["c:1"]);
    assert_eq!(
        pick("ee", "eeeeee", images()).unwrap_err().kind(),
        crate::ErrorKind::NotFound
    );
}
