//! The store is a plain OCI image layout: other tools read what drover builds.
//! skopeo inspects and copies it, umoci unpacks it to the tree it came from,
//! buildah makes a container of it, and drover itself builds on top of an
//! image in another layout.
//!
//! umoci 0.4 refuses zstd layers ("blob is not correct mediatype"), so zstd
//! images are unpacked with umoci only when it can, and always checked with
//! skopeo, buildah and by decompressing every layer with `zstd`.
use crate::common;
use common::*;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

#[test]
fn skopeo_inspect_reports_drovers_digest() {
    if !require("skopeo") {
        return;
    }
    let env = sample_env();
    for compression in ["gzip", "zstd"] {
        let digest = env.build(&[
            "--compression",
            compression,
            "--tag",
            &format!("sample:{compression}"),
        ]);
        let image = format!("oci:{}:sample:{compression}", env.store().display());
        let inspect = json(Command::new("skopeo").args(["inspect", &image]));
        assert_eq!(
            inspect["Digest"],
            digest.as_str(),
            "{compression}: {inspect}"
        );
        assert_eq!(inspect["Env"][0], "PATH=/bin", "{compression}");
        let raw = json(Command::new("skopeo").args(["inspect", "--raw", &image]));
        let ours = manifest(&env, &digest);
        assert_eq!(
            raw, ours,
            "{compression}: skopeo reads the manifest drover wrote"
        );
        let media = format!("application/vnd.oci.image.layer.v1.tar+{compression}");
        for layer in raw["layers"].as_array().unwrap() {
            assert_eq!(layer["mediaType"], media.as_str(), "{compression}");
        }
    }
}

#[test]
fn skopeo_copy_keeps_the_digest() {
    if !require("skopeo") {
        return;
    }
    let env = sample_env();
    let gzip = env.build(&[]);
    let zstd = env.build(&["--compression", "zstd", "--tag", "sample:zstd"]);
    let other = env.dir.path().join("other");
    for (tag, digest) in [("1.0", &gzip), ("zstd", &zstd)] {
        let src = format!("oci:{}:sample:{tag}", env.store().display());
        let dst = format!("oci:{}:x-{tag}", other.display());
        // Same formats on both sides: skopeo copies the blobs as they are.
        run(Command::new("skopeo").args(["copy", "--quiet", &src, &dst]));
        let copied = json(Command::new("skopeo").args(["inspect", &dst]));
        assert_eq!(copied["Digest"], digest.as_str(), "copy of sample:{tag}");
    }
    let index: Value =
        serde_json::from_slice(&fs::read(other.join("index.json")).unwrap()).unwrap();
    let digests: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests, [gzip.as_str(), zstd.as_str()], "{index}");
}

#[test]
fn umoci_unpacks_the_source_tree() {
    if !require("umoci") {
        return;
    }
    let env = sample_env();
    env.build(&[]);
    let bundle = env.dir.path().join("bundle");
    umoci_unpack(&env.store(), "sample:1.0", &bundle).expect("umoci unpack of a gzip image");
    assert_same_tree(
        &bundle.join("rootfs"),
        &env.ctx().join("rootfs"),
        &[("etc/greeting", "hello\n")],
    );
}

#[test]
fn zstd_images_unpack_to_the_source_tree() {
    if !require("skopeo") || !require("buildah") || !require("zstd") {
        return;
    }
    let env = sample_env();
    let gzip = env.build(&[]);
    let zstd = env.build(&["--compression", "zstd", "--tag", "sample:zstd"]);
    let expected = [("etc/greeting", "hello\n")];

    // Every layer decompresses to the tar its diff_id names — the same tars
    // as the gzip build's.
    let (gz_manifest, zs_manifest) = (manifest(&env, &gzip), manifest(&env, &zstd));
    let diff_ids = |m: &Value| config(&env, m)["rootfs"]["diff_ids"].clone();
    assert_eq!(
        diff_ids(&zs_manifest),
        diff_ids(&gz_manifest),
        "zstd and gzip layers hold different tars"
    );
    for (m, tool) in [(&gz_manifest, "gzip"), (&zs_manifest, "zstd")] {
        for (layer, diff_id) in m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .zip(diff_ids(m).as_array().unwrap())
        {
            let blob = blob_path(&env, layer["digest"].as_str().unwrap());
            assert_eq!(
                &uncompressed_digest(&blob, tool),
                diff_id,
                "{tool} layer {}",
                layer["digest"]
            );
        }
    }

    // umoci 0.4 does not read zstd layers; newer versions may.
    let bundle = env.dir.path().join("bundle");
    match umoci_unpack(&env.store(), "sample:zstd", &bundle) {
        Ok(()) => assert_same_tree(&bundle.join("rootfs"), &env.ctx().join("rootfs"), &expected),
        Err(e) => {
            eprintln!("umoci cannot unpack zstd layers here; checked with buildah instead:\n{e}")
        }
    }

    let b = Buildah::new(env.dir.path());
    b.ok(&[
        "from",
        "--quiet",
        "--name",
        "zs",
        &b.layout(&env.store(), "sample:zstd"),
    ]);
    let mount = PathBuf::from(b.ok(&["mount", "zs"]).trim());
    assert_same_tree(&mount, &env.ctx().join("rootfs"), &expected);
    b.ok(&["umount", "zs"]);
    b.cleanup();
}

#[test]
fn buildah_makes_a_container_from_the_image() {
    if !require("buildah") {
        return;
    }
    let env = sample_env();
    let digest = env.build(&[]);
    let b = Buildah::new(env.dir.path());
    let name = b.ok(&[
        "from",
        "--quiet",
        "--name",
        "sample-ctr",
        &b.layout(&env.store(), "sample:1.0"),
    ]);
    assert_eq!(name.trim(), "sample-ctr");
    let inspect: Value =
        serde_json::from_str(&b.ok(&["inspect", "--type", "container", "sample-ctr"])).unwrap();
    assert_eq!(inspect["FromImageDigest"], digest.as_str(), "{inspect}");
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/bin/tool"]),
        "{config}"
    );
    assert_eq!(config["Env"], serde_json::json!(["PATH=/bin"]), "{config}");
    assert!(config["ExposedPorts"].get("8080/tcp").is_some(), "{config}");
    b.cleanup();
}

#[test]
fn base_image_from_another_layout() {
    let a = sample_env();
    let a_digest = a.build(&[]);

    let b = Env::new();
    b.write_def(&format!(
        r#"
[image]
name = "derived"
tag = "2"
base = {{ layout = "{}", digest = "{a_digest}" }}

[[layer]]
kind = "file"
dest = "/etc/extra"
content = "extra\n"
mode = "0600"
"#,
        a.store().display()
    ));
    let b_digest = b.build(&[]);

    // B's layers are A's layers, then one more.
    let (a_manifest, b_manifest) = (manifest(&a, &a_digest), manifest(&b, &b_digest));
    let (a_layers, b_layers) = (
        a_manifest["layers"].as_array().unwrap(),
        b_manifest["layers"].as_array().unwrap(),
    );
    assert_eq!(b_layers.len(), a_layers.len() + 1, "{b_manifest}");
    assert_eq!(&b_layers[..a_layers.len()], a_layers.as_slice());
    let (a_config, b_config) = (config(&a, &a_manifest), config(&b, &b_manifest));
    let a_diffs = a_config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(
        &b_config["rootfs"]["diff_ids"].as_array().unwrap()[..a_diffs.len()],
        a_diffs.as_slice()
    );
    assert_eq!(
        b_config["config"]["Entrypoint"], a_config["config"]["Entrypoint"],
        "the base's config carries over"
    );

    // B's baseline is A's plus the new file.
    let baseline = |env: &Env, r: &str| -> BTreeMap<String, Value> {
        let v: Value = env.json(&["baseline", r]);
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["path"].as_str().unwrap().to_string(), f.clone()))
            .collect()
    };
    let (a_files, mut b_files) = (baseline(&a, "sample:1.0"), baseline(&b, "derived:2"));
    let extra = b_files
        .remove("/etc/extra")
        .expect("/etc/extra in B's baseline");
    assert_eq!(extra["mode"], "0600", "{extra}");
    assert_eq!(b_files, a_files, "B's baseline, less /etc/extra, is A's");

    if require("umoci") {
        let bundle = b.dir.path().join("bundle");
        umoci_unpack(&b.store(), "derived:2", &bundle).expect("umoci unpack of the derived image");
        let rootfs = bundle.join("rootfs");
        assert_eq!(
            fs::metadata(rootfs.join("etc/extra")).unwrap().mode() & 0o7777,
            0o600
        );
        fs::set_permissions(rootfs.join("etc/extra"), fs::Permissions::from_mode(0o644)).unwrap();
        assert_same_tree(
            &rootfs,
            &a.ctx().join("rootfs"),
            &[("etc/greeting", "hello\n"), ("etc/extra", "extra\n")],
        );
    }
}

// ---- helpers ----

fn run(c: &mut Command) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(out.status.success(), "{c:?} failed:\n{}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(c: &mut Command) -> Value {
    serde_json::from_str(&run(c)).expect("JSON output")
}

fn blob_path(env: &Env, digest: &str) -> PathBuf {
    env.store()
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn manifest(env: &Env, digest: &str) -> Value {
    serde_json::from_slice(&fs::read(blob_path(env, digest)).unwrap()).unwrap()
}

fn config(env: &Env, manifest: &Value) -> Value {
    manifest_blob(env, &manifest["config"])
}

fn manifest_blob(env: &Env, desc: &Value) -> Value {
    serde_json::from_slice(&fs::read(blob_path(env, desc["digest"].as_str().unwrap())).unwrap())
        .unwrap()
}

/// `sha256:` of a layer blob decompressed with `tool` (`gzip` or `zstd`).
fn uncompressed_digest(blob: &Path, tool: &str) -> Value {
    let out = run(Command::new("sh").args([
        "-c",
        "\"$1\" -dc <\"$0\" | sha256sum",
        &blob.display().to_string(),
        tool,
    ]));
    Value::from(format!("sha256:{}", out.split_whitespace().next().unwrap()))
}

/// `umoci unpack --image <layout>:<tag> <bundle>`; its output on failure.
fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> Result<(), String> {
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle)
        .output()
        .expect("run umoci");
    if out.status.success() {
        Ok(())
    } else {
        Err(show(&out))
    }
}

/// buildah with its storage (vfs) under a test's temp dir, so nothing
/// reaches the host's containers storage. It runs in that dir: buildah names
/// an image pulled from `oci:<path>` after the path, and a temp dir's
/// mixed-case name is not a valid image name, so layouts are given relative.
struct Buildah {
    dir: PathBuf,
    root: PathBuf,
}

impl Buildah {
    fn new(dir: &Path) -> Buildah {
        let root = dir.join("buildah");
        fs::create_dir_all(root.join("tmp")).unwrap();
        Buildah {
            dir: dir.to_path_buf(),
            root,
        }
    }

    /// `oci:<layout, relative to the temp dir>:<tag>`.
    fn layout(&self, layout: &Path, tag: &str) -> String {
        format!(
            "oci:{}:{tag}",
            layout.strip_prefix(&self.dir).unwrap().display()
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        run(Command::new("buildah")
            .arg("--root")
            .arg(self.root.join("root"))
            .arg("--runroot")
            .arg(self.root.join("runroot"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("TMPDIR", self.root.join("tmp"))
            .current_dir(&self.dir))
    }

    fn cleanup(&self) {
        self.ok(&["rm", "--all"]);
        self.ok(&["rmi", "--all", "--force"]);
        assert_eq!(
            self.ok(&["images", "--quiet"]).trim(),
            "",
            "buildah images left behind"
        );
    }
}

/// What one path is, as compared between a source tree and an unpacked image.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, content: Vec<u8> },
    Symlink { target: PathBuf },
}

/// Every path under `root`, relative, with what it is; `norm` maps an
/// on-disk mode to the one compared; inodes of regular files on the side.
fn tree(
    root: &Path,
    norm: &dyn Fn(bool, u32) -> u32,
) -> (BTreeMap<String, Node>, BTreeMap<String, u64>) {
    let (mut nodes, mut inodes) = (BTreeMap::new(), BTreeMap::new());
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            let m = fs::symlink_metadata(&p).unwrap();
            let node = if m.is_dir() {
                stack.push(p.clone());
                Node::Dir {
                    mode: norm(true, m.mode() & 0o7777),
                }
            } else if m.is_symlink() {
                Node::Symlink {
                    target: fs::read_link(&p).unwrap(),
                }
            } else {
                inodes.insert(rel.clone(), m.ino());
                Node::File {
                    mode: norm(false, m.mode() & 0o7777),
                    content: fs::read(&p).unwrap(),
                }
            };
            nodes.insert(rel, node);
        }
    }
    (nodes, inodes)
}

/// `rootfs` (an unpacked image) holds exactly `src` (the build context's
/// tree) plus `extra` files: same paths, contents and symlink targets, modes
/// as drover normalizes them (scan.rs: directories 0755, files 0755 if any
/// execute bit is set, else 0644; the sample tree has no special bits),
/// owned by root, the hard-link pair still one inode.
fn assert_same_tree(rootfs: &Path, src: &Path, extra: &[(&str, &str)]) {
    let (got, inodes) = tree(rootfs, &|_, mode| mode);
    let (mut want, _) = tree(src, &|dir, mode| {
        if dir || mode & 0o111 != 0 {
            0o755
        } else {
            0o644
        }
    });
    for (path, content) in extra {
        want.insert(
            path.to_string(),
            Node::File {
                mode: 0o644,
                content: content.as_bytes().to_vec(),
            },
        );
    }
    let names = |t: &BTreeMap<String, Node>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want), "paths in {}", rootfs.display());
    for (path, node) in &want {
        assert_eq!(&got[path], node, "{path} in {}", rootfs.display());
    }
    assert_eq!(
        inodes["etc/motd"], inodes["etc/motd.hard"],
        "etc/motd.hard is no longer a hard link of etc/motd"
    );
    if fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        for path in got.keys() {
            let m = fs::symlink_metadata(rootfs.join(path)).unwrap();
            assert_eq!((m.uid(), m.gid()), (0, 0), "owner of {path}");
        }
    }
}
