//! `run` layers: a command in a sandbox made from the image so far (the
//! embedded runtime, a user namespace, no network), whose changes are the
//! layer. Needs root and a static busybox; skipped with a message otherwise.

use crate::common;

use std::time::{Duration, Instant};

use common::{Env, show, write};
use serde_json::Value;

/// A build context with a busybox root (`rootfs/`) and a directory to
/// mount (`app/`).
fn run_env() -> Option<Env> {
    if !common::require("busybox") || !nix_is_root() {
        return None;
    }
    let env = Env::new();
    let root = env.ctx().join("rootfs");
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
    write(&root.join("bin/busybox"), &busybox, 0o755);
    for applet in [
        "sh", "cat", "echo", "rm", "mkdir", "chown", "touch", "grep", "sleep", "test", "wc", "ls",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    write(&root.join("etc/passwd"), b"root:x:0:0::/:/bin/sh\n", 0o644);
    write(
        &env.ctx().join("app/hello.txt"),
        b"from the context\n",
        0o644,
    );
    Some(env)
}

fn nix_is_root() -> bool {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0
}

fn def(run: &str) -> String {
    format!(
        r#"
[image]
name = "ran"
tag = "1"

[[layer]]
kind = "copy"
src = "rootfs"
dest = "/"

[[layer]]
kind = "run"
{run}
"#
    )
}

/// The command checks its own sandbox, failing with a status that says
/// which check broke: root inside a user namespace, only `lo`, the
/// context mounted read-only.
const CHANGES: &str = r#"command = ["/bin/sh", "-c", """
set -e
grep -q 4294967295 /proc/self/uid_map && exit 10
test "$(grep -c : /proc/net/dev)" = 1 || exit 11
grep -q lo: /proc/net/dev || exit 12
test "$(cat /src/hello.txt)" = "from the context" || exit 13
touch /src/new 2>/dev/null && exit 14
test "$(id -u 2>/dev/null || echo 0)" = 0 || exit 15
echo hi > /etc/greeting
rm /bin/wc
mkdir /data
touch /x
chown 1000:1000 /x
echo done
"""]
mounts = [{ src = "app", dest = "/src" }]"#;

fn baseline(env: &Env, reference: &str) -> Value {
    env.json(&["baseline", reference])
}

fn record<'a>(b: &'a Value, path: &str) -> Option<&'a Value> {
    b["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
}

/// The provenance predicate a build wrote (`out` is its JSON output),
/// read from its DSSE envelope in the store.
pub(crate) fn provenance(env: &Env, out: &Value) -> Value {
    use base64::Engine;
    let blob = |d: &Value| {
        let hex = d.as_str().unwrap().trim_start_matches("sha256:");
        std::fs::read(env.store().join("blobs/sha256").join(hex)).unwrap()
    };
    let manifest: Value = serde_json::from_slice(&blob(&out["provenance"])).unwrap();
    let envelope: Value = serde_json::from_slice(&blob(&manifest["layers"][0]["digest"])).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    let statement: Value = serde_json::from_slice(&payload).unwrap();
    statement["predicate"].clone()
}

fn build_json(env: &Env, extra: &[&str]) -> Value {
    let file = env.ctx().join("drover.toml");
    let mut args = vec!["build", "-f", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.json(&args)
}

#[test]
fn a_run_layer_is_what_the_command_changed() {
    let Some(env) = run_env() else { return };
    env.write_def(&def(CHANGES));
    let out = build_json(&env, &[]);
    let b = baseline(&env, "ran:1");
    let greeting = record(&b, "/etc/greeting").expect("/etc/greeting in the image");
    assert_eq!(
        greeting["sha256"],
        "sha256:98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4"
    );
    assert!(
        record(&b, "/bin/wc").is_none(),
        "the whiteout removed /bin/wc"
    );
    assert!(record(&b, "/bin/sh").is_some());
    assert_eq!(record(&b, "/data").expect("/data")["type"], "dir");
    let x = record(&b, "/x").expect("/x");
    assert_eq!(
        (x["uid"].as_u64(), x["gid"].as_u64()),
        (Some(1000), Some(1000))
    );
    // What the runtime made to mount on, and its own mount points, are not changes.
    for p in ["/src", "/proc", "/tmp", "/dev"] {
        assert!(record(&b, p).is_none(), "{p} leaked into the image");
    }
    let run = &out["layers"][1];
    assert!(
        run["source"]
            .as_str()
            .unwrap()
            .starts_with("run /bin/sh -c")
    );
    assert_eq!(run["cache"]["cache"], "built", "{out}");

    // The layer tar says it the OCI way: a `.wh.wc` entry.
    let layer = run["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let blob = env.store().join("blobs/sha256").join(layer);
    let tar = std::process::Command::new("tar")
        .arg("tzf")
        .arg(&blob)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&tar.stdout);
    assert!(listing.lines().any(|l| l == "bin/.wh.wc"), "{listing}");

    // A rebuild does not run the command: the layer comes from the cache.
    let again = build_json(&env, &[]);
    assert_eq!(again["layers"][1]["cache"]["cache"], "hit", "{again}");
    assert_eq!(again["digest"], out["digest"]);
    // --no-cache runs it again, and a deterministic command gives the same layer.
    let rerun = build_json(&env, &["--no-cache"]);
    assert_eq!(rerun["layers"][1]["cache"]["cache"], "built", "{rerun}");
    assert_eq!(rerun["digest"], out["digest"]);

    // The provenance names the step, hermetic (no network).
    let prov = provenance(&env, &out);
    let def = &prov["buildDefinition"];
    assert_eq!(def["externalParameters"]["hermetic"], true, "{prov}");
    let step = def["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"].as_str().unwrap().starts_with("run "))
        .expect("the run step in the provenance");
    assert_eq!(step["annotations"]["network"], false);
    assert_eq!(step["annotations"]["mounts"][0]["src"], "app");
    assert_eq!(
        step["annotations"]["mounts"][0]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
}

#[test]
fn the_same_run_step_in_two_fresh_stores_gives_the_same_image() {
    let Some(a) = run_env() else { return };
    let b = run_env().unwrap();
    for env in [&a, &b] {
        env.write_def(&def(CHANGES));
    }
    assert_eq!(a.build(&[]), b.build(&[]));
}

#[test]
fn a_failing_command_reports_its_status_and_last_lines_and_stores_nothing() {
    let Some(env) = run_env() else { return };
    env.write_def(&def(
        r#"command = ["/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45; do echo line $i; done; echo oops >&2; exit 3"]"#,
    ));
    let file = env.ctx().join("drover.toml");
    let out = env.run(&["build", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exited with status 3"), "{}", show(&out));
    assert!(err.contains("oops") && err.contains("line 45"), "{err}");
    assert!(!err.contains("line 5\n"), "only the last lines: {err}");
    let images = env.ok(&["images"]);
    assert!(!images.contains("ran"), "{images}");
}

#[test]
fn a_command_past_its_timeout_is_killed_and_reported() {
    let Some(env) = run_env() else { return };
    env.write_def(&def(
        r#"command = ["/bin/sh", "-c", "echo waiting; sleep 60"]
timeout = "2s""#,
    ));
    let file = env.ctx().join("drover.toml");
    let started = Instant::now();
    let out = env.run(&["build", "-f", file.to_str().unwrap()]);
    let took = started.elapsed();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("killed after 2s"), "{}", show(&out));
    assert!(err.contains("waiting"), "{err}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn network_true_is_the_hosts_and_marks_the_build_not_hermetic() {
    let Some(env) = run_env() else { return };
    env.write_def(&def(
        r#"command = ["/bin/sh", "-c", "test \"$(grep -c : /proc/net/dev)\" -gt 1"]
network = true"#,
    ));
    let out = build_json(&env, &[]);
    let prov = provenance(&env, &out);
    assert_eq!(
        prov["buildDefinition"]["externalParameters"]["hermetic"], false,
        "{prov}"
    );
}
