//! Push and pull against a real registry: Debian's `docker-registry` (the
//! CNCF distribution 2.8 server), started by each test on a free loopback
//! port with its storage in a temp dir, and killed when the test ends.
//! Distribution 2.8 has no referrers API, so referrers travel through the
//! referrers tag schema here.
mod common;
use common::*;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry; killed on drop.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
}

impl Registry {
    /// `None` (after saying why) when docker-registry is not installed.
    fn start(htpasswd: Option<(&str, &str)>) -> Option<Registry> {
        if !require(REGISTRY_BIN) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, pass)) = htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(out.status.success(), "{}", show(&out));
            let file = dir.path().join("htpasswd");
            fs::write(&file, &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: drover-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let reg = Registry { child, dir, addr };
        reg.wait_ready();
        Some(reg)
    }

    /// A plain `GET`; the whole response, headers included ("" if refused).
    fn get(&self, path: &str) -> String {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return String::new();
        };
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp
    }

    /// Until `GET /v2/` answers (200, or 401 with auth on).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let resp = self.get("/v2/");
            if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.1 401") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "registry at {} never came up",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// drover with no credentials from the environment or the user's Docker config.
fn drover(env: &Env, docker_config: &Path, args: &[&str]) -> Output {
    env.cmd()
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("DROVER_REGISTRY_USER")
        .env_remove("DROVER_REGISTRY_PASSWORD")
        .args(args)
        .output()
        .expect("run drover")
}

fn ok(env: &Env, docker_config: &Path, args: &[&str]) -> String {
    let out = drover(env, docker_config, args);
    assert!(
        out.status.success(),
        "drover {args:?} failed:\n{}",
        show(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn index(store: &Path) -> Value {
    serde_json::from_slice(&fs::read(store.join("index.json")).unwrap()).unwrap()
}

/// (digest, artifactType) of every artifact in a store's index.json.
fn artifacts(store: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = index(store)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d.get("artifactType").is_some())
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_string(),
                d["artifactType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn manifest_layers(store: &Path, digest: &str) -> Vec<String> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let m: Value =
        serde_json::from_slice(&fs::read(store.join("blobs/sha256").join(hex)).unwrap()).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn push_then_pull_keeps_digest_and_baseline() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let nocreds = tempfile::tempdir().unwrap();
    let src = sample_env();
    let digest = src.build(&[]);
    let remote = format!("{}/team/sample:1.0", reg.addr);
    let pushed = ok(
        &src,
        nocreds.path(),
        &["push", "sample:1.0", &remote, "--insecure"],
    );
    assert_eq!(last_line(&pushed), digest);
    let audit = ok(&src, nocreds.path(), &["audit", "--action", "image.push"]);
    assert!(audit.contains("team/sample"), "{audit}");
    let source_artifacts = artifacts(&src.store());
    // The baseline, the SBOM and the provenance.
    assert_eq!(source_artifacts.len(), 3, "{source_artifacts:?}");
    // distribution 2.8 has no referrers API: the artifacts are listed by the
    // referrers tag schema.
    let tags = reg.get("/v2/team/sample/tags/list");
    let schema_tag = format!("sha256-{}", &digest[7..]);
    assert!(tags.contains(&schema_tag), "{tags}");

    let dst = Env::new();
    let pulled = ok(&dst, nocreds.path(), &["pull", &remote, "--insecure"]);
    assert_eq!(last_line(&pulled), digest);
    assert_eq!(
        artifacts(&dst.store()),
        source_artifacts,
        "the baseline, SBOM and provenance came along"
    );
    let images = ok(&dst, nocreds.path(), &["images"]);
    assert!(images.contains("team/sample:1.0"), "{images}");
    ok(&dst, nocreds.path(), &["verify"]);
    let baseline_src = ok(&src, nocreds.path(), &["baseline", "sample:1.0", "--json"]);
    let baseline_dst = ok(
        &dst,
        nocreds.path(),
        &["baseline", "team/sample:1.0", "--json"],
    );
    assert_eq!(baseline_src, baseline_dst);
    let audit = ok(&dst, nocreds.path(), &["audit", "--action", "image.pull"]);
    assert!(audit.contains(&digest[7..19]), "{audit}");

    // By digest, into another store: same image, untagged but present.
    let by_digest = Env::new();
    let out = ok(
        &by_digest,
        nocreds.path(),
        &[
            "pull",
            &format!("{}/team/sample@{digest}", reg.addr),
            "--insecure",
        ],
    );
    assert_eq!(last_line(&out), digest);

    // A second push sends nothing but manifests.
    let t = Instant::now();
    let again = ok(
        &src,
        nocreds.path(),
        &["--json", "push", "sample:1.0", &remote, "--insecure"],
    );
    let elapsed = t.elapsed();
    let report: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(report["blobs_sent"], 0, "{report}");
    assert!(report["blobs_skipped"].as_u64().unwrap() >= 3, "{report}");
    assert!(elapsed < Duration::from_secs(2), "re-push took {elapsed:?}");
}

/// A fleet names a registry image by digest: `plan` says it would pull it,
/// `apply` pulls it (with its baseline) into a store that lacks it and runs
/// it, and `gc` keeps it, untagged, while a release refers to it.
#[test]
fn apply_pulls_a_fleet_image_named_by_registry_digest() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let Some(src) = web_env() else {
        return;
    };
    let nocreds = tempfile::tempdir().unwrap();
    let pushed = ok(
        &src,
        nocreds.path(),
        &[
            "push",
            "web:1",
            &format!("{}/team/web:1", reg.addr),
            "--insecure",
        ],
    );
    let digest = last_line(&pushed);

    let dst = Env::new();
    let fleet = dst.dir.path().join("fleet.toml");
    let write_fleet = |image: &str| {
        let text =
            format!("[service.web]\nimage = \"{image}\"\ninsecure_registry = true\nreplicas = 1\n");
        write(&fleet, text.as_bytes(), 0o644);
    };
    let f = fleet.to_str().unwrap();
    // A registry tag can move: fleet files pin by digest.
    write_fleet(&format!("{}/team/web:1", reg.addr));
    let out = drover(&dst, nocreds.path(), &["plan", "-f", f]);
    assert!(!out.status.success());
    assert!(
        show(&out).contains("fleet.toml:2:9: service.web.image")
            && show(&out).contains("pin registry images by digest"),
        "{}",
        show(&out)
    );

    write_fleet(&format!("{}/team/web@{digest}", reg.addr));
    let plan = ok(&dst, nocreds.path(), &["plan", "-f", f]);
    assert!(plan.contains("would pull"), "{plan}");
    assert!(
        !dst.store().join("blobs/sha256").join(&digest[7..]).exists(),
        "plan pulled"
    );

    ok(&dst, nocreds.path(), &["apply", "-f", f]);
    let status: Vec<Value> =
        serde_json::from_str(&ok(&dst, nocreds.path(), &["--json", "status"])).unwrap();
    let instances = status[0]["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1, "{status:?}");
    assert_eq!(instances[0]["image"], digest.as_str());
    assert_eq!(instances[0]["state"], "running");
    let attached = artifacts(&dst.store());
    assert_eq!(
        attached.len(),
        3,
        "the baseline, SBOM and provenance came along: {attached:?}"
    );
    let at_source = artifacts(&src.store());
    assert!(
        attached.iter().all(|a| at_source.contains(a)),
        "{at_source:?}"
    );
    let audit = ok(&dst, nocreds.path(), &["audit", "--action", "image.pull"]);
    assert!(audit.contains(&digest[7..19]), "{audit}");

    // Untagged, but a release refers to it: gc keeps it and its baseline.
    ok(&dst, nocreds.path(), &["gc"]);
    assert!(!manifest_layers(&dst.store(), &digest).is_empty());
    assert_eq!(artifacts(&dst.store()).len(), 3, "gc took an artifact");
    ok(&dst, nocreds.path(), &["verify"]);
    // Re-applying pulls nothing more.
    ok(&dst, nocreds.path(), &["apply", "-f", f]);
    let audit = ok(
        &dst,
        nocreds.path(),
        &["--json", "audit", "--action", "image.pull"],
    );
    let pulls: Vec<Value> = serde_json::from_str(&audit).unwrap();
    assert_eq!(pulls.len(), 1, "{pulls:?}");
}

#[test]
fn a_large_layer_streams_both_ways() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let nocreds = tempfile::tempdir().unwrap();
    let src = sample_env();
    // Incompressible, so the layer stays above the 16 MiB streaming threshold.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let big: Vec<u8> = (0..24 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    write(&src.ctx().join("rootfs/big.bin"), &big, 0o644);
    let digest = src.build(&[]);
    let remote = format!("{}/big:1", reg.addr);
    let out = ok(
        &src,
        nocreds.path(),
        &["--json", "push", "sample:1.0", &remote, "--insecure"],
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(
        report["bytes_sent"].as_u64().unwrap() > 24 << 20,
        "{report}"
    );
    let dst = Env::new();
    let pulled = ok(&dst, nocreds.path(), &["pull", &remote, "--insecure"]);
    assert_eq!(last_line(&pulled), digest);
    ok(&dst, nocreds.path(), &["verify"]);
}

#[test]
fn skopeo_reads_what_drover_pushed_and_drover_pulls_what_skopeo_pushed() {
    if !require("skopeo") {
        return;
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let nocreds = tempfile::tempdir().unwrap();
    let env = sample_env();
    let digest = env.build(&[]);
    let remote = format!("{}/sample:1.0", reg.addr);
    ok(
        &env,
        nocreds.path(),
        &["push", "sample:1.0", &remote, "--insecure"],
    );

    let out_dir = env.dir.path().join("skopeo-out");
    let st = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{remote}"))
        .arg(format!("oci:{}:got", out_dir.display()))
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", show(&st));
    let idx = index(&out_dir);
    assert_eq!(idx["manifests"][0]["digest"], digest.as_str(), "{idx}");

    // The other way: skopeo pushes an image drover did not write (skopeo
    // rewrites nothing of an OCI image, but drover never saw these bytes
    // arrive through its own push).
    let st = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:got", out_dir.display()))
        .arg(format!("docker://{}/other:2", reg.addr))
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", show(&st));
    let dst = Env::new();
    let pulled = ok(
        &dst,
        nocreds.path(),
        &["pull", &format!("{}/other:2", reg.addr), "--insecure"],
    );
    assert_eq!(last_line(&pulled), digest);
    assert!(artifacts(&dst.store()).is_empty(), "no referrers there");
    ok(&dst, nocreds.path(), &["verify"]);
}

#[test]
fn basic_auth_from_docker_config() {
    let Some(reg) = Registry::start(Some(("drover", "s3cret"))) else {
        return;
    };
    let nocreds = tempfile::tempdir().unwrap();
    let env = sample_env();
    let digest = env.build(&[]);
    let remote = format!("{}/sample:1.0", reg.addr);

    let out = drover(
        &env,
        nocreds.path(),
        &["push", "sample:1.0", &remote, "--insecure"],
    );
    assert!(!out.status.success(), "anonymous push was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&reg.addr) && err.contains("credentials"),
        "{err}"
    );

    let creds = tempfile::tempdir().unwrap();
    let auth = base64_encode(b"drover:s3cret");
    fs::write(
        creds.path().join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let pushed = ok(
        &env,
        creds.path(),
        &["push", "sample:1.0", &remote, "--insecure"],
    );
    assert_eq!(last_line(&pushed), digest);
    let dst = Env::new();
    let pulled = ok(&dst, creds.path(), &["pull", &remote, "--insecure"]);
    assert_eq!(last_line(&pulled), digest);
    assert_eq!(
        artifacts(&dst.store()).len(),
        3,
        "the baseline, SBOM and provenance came along"
    );

    // Credentials from the environment, with no Docker config.
    let from_env = Env::new();
    let out = from_env
        .cmd()
        .env("DOCKER_CONFIG", nocreds.path())
        .env("DROVER_REGISTRY_USER", "drover")
        .env("DROVER_REGISTRY_PASSWORD", "s3cret")
        .args(["pull", &remote, "--insecure"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(last_line(&String::from_utf8_lossy(&out.stdout)), digest);

    // What is not there is "not found" (exit 4), not an internal error.
    let missing = format!("{}/nothing:here", reg.addr);
    let out = drover(&from_env, creds.path(), &["pull", &missing, "--insecure"]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
}

#[test]
fn a_tampered_blob_is_refused_and_leaves_nothing() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let nocreds = tempfile::tempdir().unwrap();
    let env = sample_env();
    let digest = env.build(&[]);
    let remote = format!("{}/sample:1.0", reg.addr);
    ok(
        &env,
        nocreds.path(),
        &["push", "sample:1.0", &remote, "--insecure"],
    );

    let layer = manifest_layers(&env.store(), &digest)[0].clone();
    let data = reg.blob_data(&layer);
    let mut bytes = fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&data, bytes).unwrap();

    let dst = Env::new();
    let out = drover(&dst, nocreds.path(), &["pull", &remote, "--insecure"]);
    assert!(!out.status.success(), "a tampered blob was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&layer), "the error names the blob: {err}");
    let store = dst.store();
    assert!(
        !store.join("blobs/sha256").join(&layer[7..]).exists(),
        "no blob under the tampered digest"
    );
    assert!(
        !store.join("blobs/sha256").join(&digest[7..]).exists(),
        "no manifest naming a missing blob"
    );
    let tmp: Vec<_> = fs::read_dir(store.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "no partial download left: {tmp:?}");
    let images = ok(&dst, nocreds.path(), &["images", "--json"]);
    assert!(!images.contains("sample"), "no tag: {images}");
}

#[test]
fn insecure_is_refused_for_a_remote_host() {
    let env = Env::new();
    let nocreds = tempfile::tempdir().unwrap();
    let out = drover(
        &env,
        nocreds.path(),
        &["pull", "registry.example.com/hello:1", "--insecure"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loopback") && err.contains("registry.example.com"),
        "{err}"
    );
}

fn base64_encode(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Incompressible bytes, different for each `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A store with `layers:1`: four copy layers of 6 MiB of noise each.
fn layered_env() -> (Env, String) {
    let env = Env::new();
    let mut def = String::from("[image]\nname = \"layers\"\ntag = \"1\"\n");
    for i in 0..4u64 {
        write(
            &env.ctx().join(format!("l{i}/data.bin")),
            &noise(0x9e37_79b9 + i, 6 << 20),
            0o644,
        );
        def.push_str(&format!(
            "\n[[layer]]\nkind = \"copy\"\nsrc = \"l{i}\"\ndest = \"/l{i}\"\n"
        ));
    }
    env.write_def(&def);
    let digest = env.build(&[]);
    (env, digest)
}

/// Files directly in `dir`'s subdirectories named `name` (a registry's
/// committed blobs) or, with `name` empty, files in `dir`.
fn count_files(dir: &Path, name: &str) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if name.is_empty() {
                usize::from(e.path().is_file())
            } else {
                fs::read_dir(e.path()).map_or(0, |sub| {
                    sub.flatten()
                        .filter(|b| b.path().join(name).exists())
                        .count()
                })
            }
        })
        .sum()
}

/// Run drover `args` and SIGKILL it as soon as `arrived()` says a blob is in.
/// Returns whether it was killed (rather than finishing first).
fn kill_after_first_blob(
    env: &Env,
    docker_config: &Path,
    args: &[&str],
    arrived: impl Fn() -> bool,
) -> bool {
    let mut child = env
        .cmd()
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("DROVER_REGISTRY_USER")
        .env_remove("DROVER_REGISTRY_PASSWORD")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if arrived() {
            let finished = child.try_wait().unwrap().is_some();
            let _ = child.kill();
            let _ = child.wait();
            return !finished;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("drover {args:?} ended ({status}) before any blob arrived");
        }
        assert!(Instant::now() < deadline, "no blob arrived");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn an_interrupted_push_or_pull_resumes_without_resending() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let nocreds = tempfile::tempdir().unwrap();
    let (src, digest) = layered_env();
    let remote = format!("{}/layers:1", reg.addr);
    let reg_blobs = reg.dir.path().join("data/docker/registry/v2/blobs/sha256");
    let killed = kill_after_first_blob(
        &src,
        nocreds.path(),
        &["push", "layers:1", &remote, "--insecure"],
        || count_files(&reg_blobs, "data") >= 1,
    );
    assert!(killed, "the push finished before it could be interrupted");
    let out = ok(
        &src,
        nocreds.path(),
        &["--json", "push", "layers:1", &remote, "--insecure"],
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["digest"], digest.as_str());
    // What arrived is skipped; all nine blobs (the image's config and four
    // layers, the artifacts' shared empty config and the contents of the
    // baseline, SBOM and provenance) are accounted for.
    let (sent, skipped) = (
        report["blobs_sent"].as_u64().unwrap(),
        report["blobs_skipped"].as_u64().unwrap(),
    );
    assert!(skipped >= 1, "{report}");
    assert_eq!(sent + skipped, 9, "{report}");

    let dst = Env::new();
    let dst_blobs = dst.store().join("blobs/sha256");
    let killed = kill_after_first_blob(
        &dst,
        nocreds.path(),
        &["pull", &remote, "--insecure"],
        || count_files(&dst_blobs, "") >= 1,
    );
    assert!(killed, "the pull finished before it could be interrupted");
    // Whatever was cut off mid-blob is in tmp/, never under its digest.
    ok(&dst, nocreds.path(), &["verify"]);
    let out = ok(
        &dst,
        nocreds.path(),
        &["--json", "pull", &remote, "--insecure"],
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["digest"], digest.as_str());
    let (fetched, present) = (
        report["blobs_fetched"].as_u64().unwrap(),
        report["blobs_present"].as_u64().unwrap(),
    );
    assert!(present >= 1, "{report}");
    // Pull counts each artifact's empty config (present after the first).
    assert_eq!(fetched + present, 11, "{report}");
    ok(&dst, nocreds.path(), &["verify"]);
    ok(&dst, nocreds.path(), &["gc"]);
    assert_eq!(
        count_files(&dst.store().join("tmp"), ""),
        0,
        "gc left temp files"
    );
    ok(&dst, nocreds.path(), &["verify"]);
}
