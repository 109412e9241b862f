//! The basic loop through the real binary: build, list, inspect, tag, rmi, gc.
use crate::common;
use common::*;

#[test]
fn build_tag_inspect_rmi_gc() {
    let env = sample_env();
    let digest = env.build(&[]);
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert!(env.ok(&["images"]).contains("sample:1.0"));
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "sample:1.0"])).unwrap();
    assert_eq!(inspect["digest"], digest.as_str());
    assert_eq!(inspect["config"]["config"]["Entrypoint"][0], "/bin/tool");
    env.ok(&["tag", "sample:1.0", "other:2"]);
    env.ok(&["rmi", "sample:1.0"]);
    assert!(!env.ok(&["images"]).contains("sample:1.0"));
    env.ok(&["gc"]);
    env.ok(&["verify"]);
    assert_eq!(last_line(&env.ok(&["inspect", "other:2"])).len(), 1); // "}" — still there
    env.ok(&["rmi", "other:2"]);
    let gc: serde_json::Value = env.json(&["gc"]);
    assert!(gc["removed_blobs"].as_u64().unwrap() >= 4, "{gc}");
    let audit = env.ok(&["audit"]);
    for action in ["image.build", "image.tag", "image.untag", "store.gc"] {
        assert!(
            audit.contains(action),
            "{action} missing from ledger:\n{audit}"
        );
    }
    env.ok(&["audit", "verify"]);
}
