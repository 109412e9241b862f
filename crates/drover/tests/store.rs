//! The store through the real binary: corruption is found and named with
//! what it breaks, a `--no-cache` rebuild heals it, gc keeps exactly what tags
//! reach, references resolve (or fail with exit 4), the ledger records every
//! mutation and `audit verify` catches tampering, and `index.json` comes back
//! when deleted.
use crate::common;
use common::*;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// sha256 of `{}`, the empty config every artifact manifest points at.
const EMPTY_JSON: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

fn inspect(env: &Env, reference: &str) -> Value {
    json(&env.ok(&["inspect", reference]))
}

fn blob_path(env: &Env, digest: &str) -> PathBuf {
    env.store()
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn blob_json(env: &Env, digest: &str) -> Value {
    json(&fs::read_to_string(blob_path(env, digest)).unwrap())
}

/// Flip one bit in the middle of a file, keeping its size.
fn flip_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

fn blobs_on_disk(env: &Env) -> BTreeSet<String> {
    fs::read_dir(env.store().join("blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_str().unwrap()))
        .collect()
}

/// Every blob an image reaches: manifest, config, layers, and its attached
/// artifacts with their config and layers.
fn reachable(env: &Env, reference: &str) -> BTreeSet<String> {
    let i = inspect(env, reference);
    let mut out = BTreeSet::new();
    let mut manifest = |digest: &str, m: &Value| {
        out.insert(digest.to_string());
        out.insert(m["config"]["digest"].as_str().unwrap().to_string());
        for l in m["layers"].as_array().unwrap() {
            out.insert(l["digest"].as_str().unwrap().to_string());
        }
    };
    manifest(i["digest"].as_str().unwrap(), &i["manifest"]);
    for r in i["referrers"].as_array().unwrap() {
        let d = r["digest"].as_str().unwrap();
        manifest(d, &blob_json(env, d));
    }
    out
}

fn first_layer(env: &Env, reference: &str) -> String {
    inspect(env, reference)["manifest"]["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn config_of(env: &Env, reference: &str) -> String {
    inspect(env, reference)["manifest"]["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The digest of the baseline's content blob (the artifact's only layer).
fn baseline_content(env: &Env, reference: &str) -> String {
    let i = inspect(env, reference);
    let artifact = i["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["artifact_type"] == "application/vnd.drover.baseline.v1+json")
        .expect("a baseline referrer")["digest"]
        .as_str()
        .unwrap();
    blob_json(env, artifact)["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ledger(env: &Env, args: &[&str]) -> Vec<(u64, String)> {
    let mut a = vec!["--json", "audit"];
    a.extend_from_slice(args);
    items(&env.ok(&a))
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn sqlite(env: &Env, sql: &str) {
    let out = Command::new("sqlite3")
        .arg(env.store().join("drover.db"))
        .arg(sql)
        .output()
        .unwrap();
    assert!(out.status.success(), "sqlite3 {sql}:\n{}", show(&out));
}

// --- corruption -------------------------------------------------------------

#[test]
fn corrupt_layer_is_named_with_its_path_and_what_uses_it() {
    let env = sample_env();
    let image = env.build(&[]);
    let layer = first_layer(&env, "sample:1.0");
    let path = blob_path(&env, &layer);
    flip_byte(&path);

    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("CORRUPT {layer}")), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    let manifest_short = &image.strip_prefix("sha256:").unwrap()[..12];
    assert!(
        text.contains(&format!(
            "layer of image sample:1.0 (manifest {manifest_short})"
        )),
        "{text}"
    );

    let out = env.run(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let report = doc(&stdout(&out));
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report:#}");
    let p = &problems[0];
    assert_eq!(p["digest"], layer.as_str());
    assert_eq!(p["problem"], "corrupt");
    assert_eq!(p["path"], path.display().to_string().as_str());
    assert!(
        p["referenced_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains(manifest_short)),
        "{p:#}"
    );

    // verify's purpose is to say which images are affected: the tag that
    // reaches the layer should appear, not only the manifest's digest.
    assert!(
        text.contains("sample:1.0"),
        "verify does not name the affected image sample:1.0:\n{text}"
    );
}

#[test]
fn corrupt_config_fails_inspect_naming_digest_and_path() {
    let env = sample_env();
    env.build(&[]);
    let config = config_of(&env, "sample:1.0");
    let path = blob_path(&env, &config);
    flip_byte(&path);

    let out = env.run(&["inspect", "sample:1.0"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains(&config), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");

    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        stdout(&out).contains(&format!("CORRUPT {config}")),
        "{}",
        show(&out)
    );
}

#[test]
fn corrupt_baseline_fails_baseline_naming_digest_and_path() {
    let env = sample_env();
    env.build(&[]);
    let content = baseline_content(&env, "sample:1.0");
    let path = blob_path(&env, &content);
    flip_byte(&path);

    let out = env.run(&["baseline", "sample:1.0"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains(&content), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");

    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        stdout(&out).contains(&format!("CORRUPT {content}")),
        "{}",
        show(&out)
    );
}

#[test]
fn deleted_blob_is_reported_missing_with_its_referrer() {
    let env = sample_env();
    let image = env.build(&[]);
    let layer = first_layer(&env, "sample:1.0");
    fs::remove_file(blob_path(&env, &layer)).unwrap();

    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let text = stdout(&out);
    let manifest_short = &image.strip_prefix("sha256:").unwrap()[..12];
    assert!(text.contains(&format!("MISSING {layer}")), "{text}");
    assert!(
        text.contains(&format!(
            "layer of image sample:1.0 (manifest {manifest_short})"
        )),
        "{text}"
    );

    let report = doc(&stdout(&env.run(&["--json", "verify"])));
    let p = &report["problems"][0];
    assert_eq!(p["digest"], layer.as_str(), "{report:#}");
    assert_eq!(p["problem"], "missing", "{report:#}");
    assert!(
        !p["referenced_by"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
}

#[test]
fn no_cache_rebuild_heals_a_corrupt_config() {
    let env = sample_env();
    let image = env.build(&[]);
    let config = config_of(&env, "sample:1.0");
    flip_byte(&blob_path(&env, &config));
    assert_eq!(env.run(&["verify"]).status.code(), Some(3));
    assert_eq!(env.build(&["--no-cache"]), image);
    env.ok(&["verify"]);
}

#[test]
fn no_cache_rebuild_heals_a_corrupt_layer() {
    let env = sample_env();
    let image = env.build(&[]);
    let layer = first_layer(&env, "sample:1.0");
    flip_byte(&blob_path(&env, &layer));
    assert_eq!(env.run(&["verify"]).status.code(), Some(3));
    assert_eq!(env.build(&["--no-cache"]), image);
    let out = env.run(&["verify"]);
    assert!(
        out.status.success(),
        "`build --no-cache` left the corrupt layer {layer} in place:\n{}",
        show(&out)
    );
}

/// A multi-chunk layer built with `flags`, then chunk 0 of its blob damaged
/// and the last file edited (same size, so chunk boundaries stay put): the
/// next build of the layer would copy chunk 0 out of the damaged blob.
/// Returns the env, the damaged layer's digest, and the digest a clean store
/// builds from the edited context.
fn corrupt_first_chunk_then_edit(flags: &[&str]) -> (Env, String, String) {
    let env = Env::new();
    // ~1.3 MiB of text in 40 files: several chunks, and the last file lives in the last one.
    for i in 0..40 {
        let line = format!(
            "file {i:02}: the quick brown fox jumps over the lazy dog {}\n",
            i * 7919
        );
        let body = line.repeat(32 * 1024 / line.len());
        write(
            &env.ctx().join(format!("rootfs/f{i:02}.txt")),
            body.as_bytes(),
            0o644,
        );
    }
    env.write_def(&SIMPLE_DEF.replace(
        "[[layer]]\nkind = \"file\"\ndest = \"/etc/greeting\"\ncontent = \"hello\\n\"\n",
        "",
    ));
    env.build(flags);
    let layer = first_layer(&env, "sample:1.0");

    // Find the chunk map the builder keeps for this layer and damage chunk 0.
    let record = fs::read_dir(env.store().join("cache/layers"))
        .unwrap()
        .map(|e| json(&fs::read_to_string(e.unwrap().path()).unwrap()))
        .find(|r| r["blob"] == layer.as_str())
        .expect("a cache record for the layer");
    let chunks = record["chunks"].as_array().unwrap();
    assert!(
        chunks.len() >= 3,
        "need several chunks for this test, got {}",
        chunks.len()
    );
    let (coff, clen) = (
        chunks[0]["coff"].as_u64().unwrap(),
        chunks[0]["clen"].as_u64().unwrap(),
    );
    let path = blob_path(&env, &layer);
    let mut bytes = fs::read(&path).unwrap();
    bytes[(coff + clen / 2) as usize] ^= 0x01;
    fs::write(&path, bytes).unwrap();

    let last = env.ctx().join("rootfs/f39.txt");
    let mut body = fs::read(&last).unwrap();
    body[0] = b'F';
    fs::write(&last, body).unwrap();

    let def = env.ctx().join("drover.toml");
    let expected = last_line(&Env::new().ok(&["build", "-f", def.to_str().unwrap()]));
    (env, layer, expected)
}

/// Regression guard: the next build of a layer copies unchanged compressed
/// chunks out of the previous blob. If that blob is corrupt, the copy must not
/// launder the damage into a new blob with a valid name: the build either
/// refuses (exit 3, naming the blob) or produces the same image as a clean
/// store would.
#[test]
fn corrupt_previous_layer_is_not_reused_by_the_next_build() {
    let (env, layer, expected) = corrupt_first_chunk_then_edit(&[]);
    let def = env.ctx().join("drover.toml");
    let out = env.run(&["build", "-f", def.to_str().unwrap()]);
    if out.status.success() {
        assert_eq!(
            last_line(&stdout(&out)),
            expected,
            "rebuilding over the corrupt layer {layer} gave a different image than a clean store:\n{}",
            show(&out)
        );
    } else {
        // Refused: exit 3, naming the corrupt blob (by digest or by its path).
        assert_eq!(out.status.code(), Some(3), "{}", show(&out));
        let hex = layer.strip_prefix("sha256:").unwrap();
        assert!(stderr(&out).contains(hex), "{}", show(&out));
        // And the store still says which blob is bad.
        let out = env.run(&["verify"]);
        assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    }
}

/// `--no-cache` promises to rebuild every layer, and is what the refusal
/// above tells the user to run; so it must not reuse chunks of the previous
/// (`--no-cache`) build of the layer, and must succeed.
#[test]
fn no_cache_build_ignores_a_corrupt_previous_layer() {
    let (env, layer, expected) = corrupt_first_chunk_then_edit(&["--no-cache"]);
    let def = env.ctx().join("drover.toml");
    let out = env.run(&["build", "--no-cache", "-f", def.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "`build --no-cache` reused chunks of the corrupt layer {layer}:\n{}",
        show(&out)
    );
    assert_eq!(last_line(&stdout(&out)), expected);
}

// --- gc ---------------------------------------------------------------------

#[test]
fn gc_keeps_what_tags_reach_and_removes_the_rest() {
    let env = sample_env();
    env.build(&[]);
    let first = reachable(&env, "sample:1.0");
    assert!(
        first.contains(EMPTY_JSON),
        "the artifact's empty config is reachable: {first:?}"
    );
    assert!(first.contains(&baseline_content(&env, "sample:1.0")));
    assert_eq!(
        first.len(),
        11,
        "manifest, config, 2 layers, empty config, and the manifest and content of \
         3 artifacts (baseline, SBOM, provenance): {first:?}"
    );
    assert_eq!(blobs_on_disk(&env), first);

    // Nothing is unreferenced: gc removes nothing, but does clear temp files.
    write(&env.store().join("tmp/blob-999-0.tmp"), b"partial", 0o644);
    let gc = env.json(&["gc"]);
    assert_eq!(gc["removed_blobs"], 0, "{gc}");
    assert_eq!(gc["kept_blobs"], 11, "{gc}");
    assert_eq!(gc["removed_temp_files"], 1, "{gc}");
    assert_eq!(blobs_on_disk(&env), first);
    env.ok(&["verify"]);

    // A second image shares the copy layer and the empty config.
    env.write_def(
        &SIMPLE_DEF
            .replace("tag = \"1.0\"", "tag = \"2.0\"")
            .replace("hello\\n", "bye\\n"),
    );
    env.build(&[]);
    let second = reachable(&env, "sample:2.0");
    assert_eq!(blobs_on_disk(&env), &first | &second);

    env.ok(&["rmi", "sample:1.0"]);
    let gc = env.json(&["gc"]);
    let gone: BTreeSet<String> = &first - &second;
    assert_eq!(
        gc["removed_blobs"].as_u64(),
        Some(gone.len() as u64),
        "{gc}"
    );
    // The baseline, the SBOM and the provenance of sample:1.0.
    assert_eq!(gc["removed_referrers"].as_array().unwrap().len(), 3, "{gc}");
    assert_eq!(blobs_on_disk(&env), second);
    env.ok(&["verify"]);
    env.ok(&["baseline", "sample:2.0"]);
    env.ok(&["audit", "verify"]);
}

// --- references -------------------------------------------------------------

#[test]
fn images_json_lists_every_tag() {
    let env = sample_env();
    let digest = env.build(&[]);
    env.ok(&["tag", "sample:1.0", "other:2"]);
    let rows = env.items(&["images"]);
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["other:2", "sample:1.0"]);
    let i = inspect(&env, "sample:1.0");
    let size = i["manifest"]["config"]["size"].as_u64().unwrap()
        + i["manifest"]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .sum::<u64>();
    for r in rows {
        assert_eq!(r["digest"], digest.as_str(), "{r}");
        assert_eq!(r["layers"], 2, "{r}");
        assert_eq!(r["size"].as_u64(), Some(size), "{r}");
        assert!(r["tagged"].as_str().is_some_and(|t| t.contains('T')), "{r}");
    }
}

#[test]
fn inspect_resolves_digests_prefixes_and_name_at_digest() {
    let env = sample_env();
    let digest = env.build(&[]);
    let hex = digest.strip_prefix("sha256:").unwrap();
    for reference in [
        digest.clone(),
        hex[..12].to_string(),
        hex[..6].to_string(),
        format!("sample@{digest}"),
    ] {
        let i = inspect(&env, &reference);
        assert_eq!(i["digest"], digest.as_str(), "{reference}");
        assert_eq!(i["tags"][0], "sample:1.0", "{reference}");
    }

    let unknown_digest = format!("sha256:{}", "0".repeat(64));
    for reference in [
        "nosuch:1",
        "sample:9.9",
        "abcdef0123",
        unknown_digest.as_str(),
        // Issue 19: name@digest is checked against the name.
        &format!("whatever@{digest}"),
    ] {
        let out = env.run(&["inspect", reference]);
        assert_eq!(
            out.status.code(),
            Some(4),
            "inspect {reference}:\n{}",
            show(&out)
        );
        let err = stderr(&out);
        assert!(err.contains("not found"), "inspect {reference}:\n{err}");
        assert!(
            err.contains(reference.trim_start_matches("sha256:")),
            "inspect {reference} does not name it:\n{err}"
        );
    }
    // Issue 19: too few digits for a prefix is a usage error (exit 2).
    let out = env.run(&["inspect", &hex[..5]]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let out = env.run(&["inspect", "nosuch:1"]);
    assert!(
        stderr(&out).contains("drover images"),
        "a hint where to look:\n{}",
        show(&out)
    );
}

#[test]
fn ambiguous_prefix_exits_2_and_asks_for_more_digits() {
    if !require("sqlite3") {
        return;
    }
    let env = sample_env();
    let digest = env.build(&[]);
    let hex = digest.strip_prefix("sha256:").unwrap();
    // No two real images share 6 hex digits in a test's lifetime; plant a tag that does.
    let twin = format!("sha256:{}{}", &hex[..8], "f".repeat(56));
    assert_ne!(twin, digest);
    sqlite(
        &env,
        &format!(
            "INSERT INTO tags VALUES ('twin:1', '{twin}', 'application/vnd.oci.image.manifest.v1+json', 2, '2024-01-01T00:00:00Z')"
        ),
    );
    let out = env.run(&["inspect", &hex[..8]]);
    let err = stderr(&out);
    assert!(
        err.contains("more than one image") && err.contains("more digits"),
        "{}",
        show(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "an ambiguous reference is a usage error (exit 2):\n{}",
        show(&out)
    );
}

#[test]
fn tag_with_an_invalid_name_exits_2_and_changes_nothing() {
    let env = sample_env();
    env.build(&[]);
    let before = ledger(&env, &[]);
    for name in ["Bad:1", "a b:1", "x:", "_x:1", "x:.1", "x:ta/g"] {
        let out = env.run(&["tag", "sample:1.0", name]);
        assert_eq!(out.status.code(), Some(2), "tag {name:?}:\n{}", show(&out));
        assert!(
            stderr(&out).contains(name),
            "tag {name:?} does not name it:\n{}",
            show(&out)
        );
    }
    assert_eq!(ledger(&env, &[]), before);
    let rows = env.items(&["images"]);
    assert_eq!(rows.len(), 1, "{rows:#?}");
}

// --- ledger -----------------------------------------------------------------

/// build, tag, untag, gc: ledger entries 1..=4.
fn four_entries() -> (Env, String) {
    let env = sample_env();
    let digest = env.build(&[]);
    env.ok(&["tag", "sample:1.0", "other:2"]);
    env.ok(&["rmi", "other:2"]);
    env.ok(&["gc"]);
    (env, digest)
}

#[test]
fn ledger_records_every_mutation_and_filters() {
    let (env, digest) = four_entries();
    let all = ledger(&env, &[]);
    let actions: Vec<&str> = all.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(
        actions,
        ["image.build", "image.tag", "image.untag", "store.gc"]
    );
    let seqs = |v: Vec<(u64, String)>| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
    assert_eq!(seqs(all), [1, 2, 3, 4]);
    assert_eq!(seqs(ledger(&env, &["--action", "image.build"])), [1]);
    assert_eq!(seqs(ledger(&env, &["--action", "image.*"])), [1, 2, 3]);
    let prefix = &digest.strip_prefix("sha256:").unwrap()[..12];
    assert_eq!(seqs(ledger(&env, &["--subject", prefix])), [1, 2, 3]);
    assert_eq!(seqs(ledger(&env, &["-n", "1"])), [4]);
    assert_eq!(
        seqs(ledger(&env, &["-n", "2", "--action", "image.*"])),
        [2, 3]
    );

    // Details say what happened.
    let entries = env.items(&["audit"]);
    assert_eq!(entries[0]["details"]["tag"], "sample:1.0");
    assert_eq!(entries[0]["subjects"][0], digest.as_str());
    assert_eq!(entries[1]["details"]["tag"], "other:2");
    assert_eq!(entries[2]["details"]["tags"][0], "other:2");
    let text = env.ok(&["audit", "verify"]);
    assert!(text.contains("4 entries"), "{text}");
}

#[test]
fn changed_ledger_details_are_caught_by_seq() {
    if !require("sqlite3") {
        return;
    }
    let (env, _) = four_entries();
    sqlite(
        &env,
        r#"DROP TRIGGER ledger_no_update; UPDATE ledger SET details = '{"previous":null,"tag":"evil:2"}' WHERE seq = 2;"#,
    );
    let out = env.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(stdout(&out).contains("entry 2:"), "{}", show(&out));
    let report = doc(&stdout(&env.run(&["--json", "audit", "verify"])));
    assert_eq!(report["problem"]["seq"], 2, "{report:#}");
}

#[test]
fn deleted_ledger_row_is_caught_as_a_gap() {
    if !require("sqlite3") {
        return;
    }
    let (env, _) = four_entries();
    sqlite(
        &env,
        "DROP TRIGGER ledger_no_delete; DELETE FROM ledger WHERE seq = 2;",
    );
    let out = env.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.contains("entry 2:") && text.contains("jumps from 1 to 3"),
        "{text}"
    );
}

// --- index.json -------------------------------------------------------------

fn index_refs(env: &Env) -> Vec<(String, String)> {
    let index = json(&fs::read_to_string(env.store().join("index.json")).unwrap());
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            let name = m["annotations"]["org.opencontainers.image.ref.name"].as_str()?;
            Some((name.to_string(), m["digest"].as_str().unwrap().to_string()))
        })
        .collect()
}

#[test]
fn index_json_is_regenerated_when_deleted_or_garbled() {
    let env = sample_env();
    let digest = env.build(&[]);
    let expected = vec![("sample:1.0".to_string(), digest.clone())];
    assert_eq!(index_refs(&env), expected);

    fs::remove_file(env.store().join("index.json")).unwrap();
    env.ok(&["images"]);
    assert_eq!(index_refs(&env), expected);
    let index = json(&fs::read_to_string(env.store().join("index.json")).unwrap());
    assert!(
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["artifactType"].as_str().is_some()),
        "the baseline artifact is listed too: {index:#}"
    );

    fs::write(env.store().join("index.json"), b"{ not json").unwrap();
    env.ok(&["images"]);
    assert_eq!(index_refs(&env), expected);
    env.ok(&["verify"]);
}
