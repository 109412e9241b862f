use super::*;
use crate::keys::SigningKey;
use crate::store::Descriptor;
use serde_json::json;

fn predicate(finished: &str, base: Option<&Digest>) -> Predicate {
    let mut deps = vec![Dependency::new(
        DEFINITION,
        Some("file:drover.toml".into()),
        &Digest::of(b"toml"),
    )];
    if let Some(b) = base {
        deps.push(Dependency::new(BASE_IMAGE, Some(format!("oci:{b}")), b));
    }
    Predicate {
        build_definition: BuildDefinition {
            build_type: BUILD_TYPE.into(),
            external_parameters: json!({ "tag": "app:1" }),
            internal_parameters: json!({ "threads": 2 }),
            resolved_dependencies: deps,
        },
        run_details: RunDetails {
            builder: Builder {
                id: BUILDER_ID.into(),
                version: BTreeMap::from([("drover".into(), "0.1.0".into())]),
            },
            metadata: Metadata {
                invocation_id: invocation_id(),
                started_on: "2026-11-22T09:00:00.000Z".into(),
                finished_on: finished.into(),
            },
            byproducts: Vec::new(),
        },
    }
}

#[test]
fn the_predicate_has_the_slsa_field_names() {
    let base = Digest::of(b"base");
    let v = serde_json::to_value(predicate("2026-11-22T09:00:01.000Z", Some(&base))).unwrap();
    let bd = &v["buildDefinition"];
    assert_eq!(bd["buildType"], BUILD_TYPE);
    assert_eq!(bd["externalParameters"]["tag"], "app:1");
    assert_eq!(bd["internalParameters"]["threads"], 2);
    assert_eq!(
        bd["resolvedDependencies"][1],
        json!({ "name": "base-image", "uri": format!("oci:{base}"), "digest": { "sha256": base.hex() } })
    );
    assert_eq!(v["runDetails"]["builder"]["id"], BUILDER_ID);
    assert_eq!(v["runDetails"]["builder"]["version"]["drover"], "0.1.0");
    assert!(
        v["runDetails"]["metadata"]["invocationId"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:")
    );
    assert_eq!(
        v["runDetails"]["metadata"]["finishedOn"],
        "2026-11-22T09:00:01.000Z"
    );
}

#[test]
fn a_build_names_its_definition_base_and_every_input() {
    use crate::builder::def::{CopyLayer, FileLayer};
    use crate::store::baseline::FileKind;
    let base = Digest::of(b"base manifest");
    let copy = LayerDef::Copy(CopyLayer {
        src: "rootfs".into(),
        dest: "/".into(),
        include: vec!["**".into()],
        exclude: Vec::new(),
        mode: None,
        dir_mode: None,
        owner: None,
        xattrs: false,
    });
    let file = LayerDef::File(FileLayer {
        dest: "/etc/x".into(),
        content: "x\n".into(),
        mode: 0o644,
        owner: (0, 0),
    });
    let def = ImageDef {
        file: "/ctx/drover.toml".into(),
        context: "/ctx".into(),
        name: "app".into(),
        tag: "1".into(),
        compression: None,
        compression_level: None,
        base: Base::Layout {
            dir: "/ctx/base-oci".into(),
            digest: base,
        },
        layers: vec![copy.clone(), file.clone()],
        accounts: vec![],
        config: Default::default(),
    };
    let record = |content: &[u8]| FileRecord {
        path: "/a".into(),
        kind: FileKind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: content.len() as u64,
        sha256: Some(Digest::of(content)),
        link: None,
        xattrs: Default::default(),
    };
    let diff_id = Digest::of(b"tar");
    let input = |content: &[u8]| {
        layer_input(&copy, "copy rootfs -> /", &[record(content)], &diff_id).unwrap()
    };
    let facts = BuildFacts {
        def: &def,
        definition: Some(Digest::of(b"toml")),
        tag: "app:1",
        compression: Compression::Zstd,
        level: 3,
        epoch: 7,
        threads: 2,
        no_cache: false,
        inputs: vec![
            input(b"one"),
            layer_input(&file, "file /etc/x", &[], &diff_id).unwrap(),
        ],
        started_on: "2026-11-22T09:00:00.000Z".into(),
        baseline: Digest::of(b"baseline"),
        sbom: Digest::of(b"sbom"),
    };
    let p = super::predicate(facts);
    let v = serde_json::to_value(&p).unwrap();
    let ext = &v["buildDefinition"]["externalParameters"];
    assert_eq!(
        ext["definition"]["digest"]["sha256"],
        Digest::of(b"toml").hex()
    );
    assert_eq!(ext["compression"], "zstd");
    assert_eq!(ext["source_date_epoch"], 7);
    let deps = &p.build_definition.resolved_dependencies;
    let names: Vec<&str> = deps.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "definition",
            "base-image",
            "copy rootfs -> /",
            "file /etc/x"
        ]
    );
    assert_eq!(
        deps[1].uri.as_deref(),
        Some(format!("oci:base-oci@{base}").as_str())
    );
    assert_eq!(deps[1].sha256(), Some(base));
    assert_eq!(deps[2].annotations["diffId"], json!(diff_id));
    assert_eq!(deps[3].sha256(), Some(Digest::of(b"x\n")));
    // The copy source's digest follows its files' content.
    assert_ne!(input(b"one").digest, input(b"two").digest);
    assert_eq!(input(b"one").digest, input(b"one").digest);
}

#[test]
fn invocation_ids_differ() {
    assert_ne!(invocation_id(), invocation_id());
}

#[test]
fn read_returns_the_newest_verified_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let image = store
        .put_json(crate::store::oci::MEDIA_CONFIG, &json!({ "an": "image" }))
        .unwrap();
    let image = Descriptor::new(crate::store::oci::MEDIA_MANIFEST, image.digest, image.size);
    let key = SigningKey::generate().unwrap();
    let other = SigningKey::generate().unwrap();
    let base = Digest::of(b"base");
    let mut put = |finished: &str, k: &SigningKey| {
        let st = predicate(finished, Some(&base))
            .statement(&image.digest, "app:1")
            .unwrap();
        let d = attest::put(&store, &image, PROVENANCE_ARTIFACT_TYPE, &st, k).unwrap();
        store
            .mutate(|m| m.add_referrer(&d, &image.digest, PROVENANCE_ARTIFACT_TYPE))
            .unwrap();
        d
    };
    put("2026-11-22T09:00:01.000Z", &key);
    let newest = put("2026-11-22T09:00:03.000Z", &key);
    // Newer still, but signed by a key the reader does not trust.
    put("2026-11-22T09:00:09.000Z", &other);
    let p = read(&store, &image.digest, &[key.public()])
        .unwrap()
        .unwrap();
    assert_eq!(p.artifact, newest.digest);
    assert_eq!(p.keyid, key.keyid());
    assert_eq!(p.builder_id, BUILDER_ID);
    assert_eq!(p.base_image, Some(base));
    assert_eq!(p.definition, Some(Digest::of(b"toml")));
    assert_eq!(p.finished_on, "2026-11-22T09:00:03.000Z");
    assert_eq!(
        verified(&store, &image.digest, &[key.public()])
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        read(&store, &Digest::of(b"nothing"), &[key.public()]).unwrap(),
        None
    );
}
