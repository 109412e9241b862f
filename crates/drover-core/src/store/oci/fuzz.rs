//! Fuzz target: manifests, indexes and image configs as a registry or a
//! layout hands them over (see `crate::fuzz`). Parsing never panics; what
//! parses has well-formed digests and sizes and survives a round trip; the
//! store reads a mutated manifest as a manifest or refuses it as corrupt.

use proptest::prelude::*;

use super::*;
use crate::fuzz::{any_text, apply, config, edits};
use crate::store::Store;

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 8]>().prop_map(|b| Digest::of(&b))
}

fn descriptor() -> impl Strategy<Value = Descriptor> {
    (
        proptest::sample::select(vec![
            MEDIA_MANIFEST,
            MEDIA_CONFIG,
            MEDIA_LAYER_GZIP,
            MEDIA_LAYER_ZSTD,
            MEDIA_LAYER_TAR,
            DOCKER_LAYER_GZIP,
        ]),
        digest(),
        prop_oneof![0..1_000_000u64, Just(u64::MAX)],
        proptest::collection::btree_map("[a-z.]{1,12}", any_text(), 0..2),
    )
        .prop_map(|(media, digest, size, annotations)| {
            let mut d = Descriptor::new(media, digest, size);
            d.annotations = annotations;
            d
        })
}

fn manifest() -> impl Strategy<Value = Manifest> {
    (
        descriptor(),
        proptest::collection::vec(descriptor(), 0..4),
        proptest::option::of(descriptor()),
    )
        .prop_map(|(config, layers, subject)| Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_MANIFEST.into()),
            artifact_type: None,
            config,
            layers,
            subject,
            annotations: Default::default(),
        })
}

fn index() -> impl Strategy<Value = Index> {
    proptest::collection::vec(descriptor(), 0..4).prop_map(|manifests| Index {
        schema_version: 2,
        media_type: Some(MEDIA_INDEX.into()),
        manifests,
        annotations: Default::default(),
    })
}

fn image_config() -> impl Strategy<Value = ImageConfig> {
    (
        proptest::collection::vec(digest(), 0..4),
        proptest::collection::vec(any_text(), 0..3),
        proptest::option::of(proptest::collection::vec(any_text(), 0..3)),
    )
        .prop_map(|(diff_ids, env, entrypoint)| ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            config: ContainerConfig {
                env,
                entrypoint,
                ..Default::default()
            },
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids,
            },
            ..Default::default()
        })
}

/// Parses `bytes` as `T`; what parses has canonical digests and writes out
/// to something that parses to the same value.
fn check<T>(bytes: &[u8]) -> std::result::Result<Option<T>, TestCaseError>
where
    T: serde::de::DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let Ok(value) = serde_json::from_slice::<T>(bytes) else {
        return Ok(None);
    };
    let again: T = serde_json::from_slice(&serde_json::to_vec(&value).unwrap())
        .map_err(|e| TestCaseError::fail(format!("does not read back: {e}")))?;
    prop_assert_eq!(&again, &value);
    Ok(Some(value))
}

fn check_descriptor(d: &Descriptor) -> std::result::Result<(), TestCaseError> {
    let shown = d.digest.to_string();
    prop_assert!(
        shown.len() == 71 && shown.starts_with("sha256:"),
        "{}",
        shown
    );
    prop_assert!(
        shown[7..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn mutated_manifests_and_indexes_never_panic(
        m in manifest(),
        i in index(),
        edits in edits(6),
    ) {
        let bytes = apply(&serde_json::to_vec(&m).unwrap(), &edits);
        if let Some(m) = check::<Manifest>(&bytes)? {
            for d in std::iter::once(&m.config).chain(&m.layers).chain(&m.subject) {
                check_descriptor(d)?;
            }
        }
        check::<Index>(&bytes)?;
        let bytes = apply(&serde_json::to_vec(&i).unwrap(), &edits);
        if let Some(i) = check::<Index>(&bytes)? {
            for d in &i.manifests {
                check_descriptor(d)?;
            }
        }
        check::<Manifest>(&bytes)?;
    }

    #[test]
    fn mutated_configs_never_panic(c in image_config(), edits in edits(6)) {
        let bytes = apply(&serde_json::to_vec(&c).unwrap(), &edits);
        if let Some(c) = check::<ImageConfig>(&bytes)? {
            for d in &c.rootfs.diff_ids {
                prop_assert_eq!(d.to_string().parse::<Digest>().ok(), Some(*d));
            }
        }
    }

    #[test]
    fn a_digest_parses_only_in_its_one_canonical_form(
        hex in "[0-9a-fA-F]{60,68}|[0-9a-z]{64}",
        algo in prop_oneof![Just("sha256:"), Just("SHA256:"), Just("sha512:"), Just(""), Just("sha256:sha256:")],
    ) {
        let s = format!("{algo}{hex}");
        let parsed: std::result::Result<Digest, _> = s.parse();
        let json: std::result::Result<Digest, _> = serde_json::from_value(serde_json::Value::String(s.clone()));
        prop_assert_eq!(parsed.is_ok(), json.is_ok());
        if let Ok(d) = parsed {
            prop_assert_eq!(d.to_string(), s);
        }
    }
}

proptest! {
    #![proptest_config(config(60))]

    /// The store reads what it holds: a mutated manifest is a manifest or
    /// corrupt, never a panic, never another kind of error.
    #[test]
    fn the_store_reads_a_mutated_manifest_or_calls_it_corrupt(
        m in manifest(),
        edits in edits(4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bytes = apply(&serde_json::to_vec(&m).unwrap(), &edits);
        let digest = store.put_blob(&bytes).unwrap();
        match store.manifest(&digest) {
            Ok(m) => {
                // Its config is not in the store: not found, not a panic.
                let e = store.image_config(&m).unwrap_err();
                prop_assert_eq!(e.kind(), crate::ErrorKind::NotFound, "{}", e);
            }
            Err(e) => prop_assert_eq!(e.kind(), crate::ErrorKind::Corrupt, "{}", e),
        }
    }
}
