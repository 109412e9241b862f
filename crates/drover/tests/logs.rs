//! `drover logs` with real instances (embedded runtime, busybox): lines
//! stamped in the CRI format with their stream, per-service rotation,
//! services merged and prefixed, `service@release`, `--since`/`--tail`,
//! `--previous` after `serve` heals a crashed instance (whose log is kept),
//! `gc` collecting kept logs past their retention, and `serve`'s heal line.
//! Needs root (CI runs as root).

use crate::common;
use crate::instances::box_env;

use std::fs::File;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Env, eventually, write};
use serde_json::Value;

/// `box:<tag>` whose entrypoint is the shell command `script`.
fn script_image(env: &Env, tag: &str, script: &str) {
    let def = format!(
        r#"
[image]
name = "box"
tag = "{tag}"

[[layer]]
kind = "copy"
src = "rootfs"
dest = "/"

[config]
entrypoint = ["/bin/sh", "-c", "{script}"]
env = {{ PATH = "/bin" }}
user = "65534:65534"
"#
    );
    let file = env.ctx().join(format!("box-{tag}.toml"));
    write(&file, def.as_bytes(), 0o644);
    env.ok(&["build", "--sign", "-f", file.to_str().unwrap()]);
}

fn fleet(env: &Env, tag: &str, replicas: u32, extra: &str) -> String {
    let text = format!(
        "[service.app]\nimage = \"box:{tag}\"\nreplicas = {replicas}\nmin_healthy = \"0s\"\n{extra}\n"
    );
    common::write_fleet(env, &text)
}

fn ps(env: &Env) -> Vec<Value> {
    env.items(&["ps", "-a"])
}

fn app_ids(env: &Env) -> Vec<String> {
    ps(env)
        .into_iter()
        .filter(|i| i["service"] == "app" && i["state"] != "deleted")
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A CRI record: `<RFC 3339 nanos> stdout|stderr F|P text`.
fn is_cri(line: &str) -> bool {
    let mut p = line.splitn(4, ' ');
    let (Some(t), Some(s), Some(tag)) = (p.next(), p.next(), p.next()) else {
        return false;
    };
    t.len() == 30
        && t.ends_with('Z')
        && t.as_bytes()[19] == b'.'
        && (s == "stdout" || s == "stderr")
        && (tag == "F" || tag == "P")
}

#[test]
fn stdout_and_stderr_are_stamped_told_apart_and_filtered() {
    let Some(env) = box_env() else { return };
    let id = common::last_line(&env.ok(&[
        "run",
        "box:1",
        "--",
        "/bin/sh",
        "-c",
        "echo to-out; echo to-err >&2; sleep 0.3; echo last",
    ]));
    // -f on an instance stops at its exit.
    let started = Instant::now();
    let text = env.ok(&["logs", "-f", &id]);
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut seen: Vec<&str> = text.lines().collect();
    seen.sort();
    assert_eq!(seen, ["last", "to-err", "to-out"]);
    // The file: the CRI format, each line with its stream.
    let raw = std::fs::read_to_string(env.store().join("instances").join(&id).join("log")).unwrap();
    assert!(raw.lines().all(is_cri), "{raw}");
    assert!(raw.lines().any(|l| l.contains(" stderr F to-err")), "{raw}");
    assert!(raw.lines().any(|l| l.contains(" stdout F to-out")), "{raw}");
    // --json: one object per line, with its stream.
    let json = lines(&env.ok(&["logs", "--json", &id]));
    let err = json.iter().find(|l| l["text"] == "to-err").unwrap();
    assert_eq!(err["stream"], "stderr");
    assert_eq!(err["instance"], id.as_str());
    assert!(err["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        json.iter().find(|l| l["text"] == "to-out").unwrap()["stream"],
        "stdout"
    );
    // --tail, --timestamps, --since, --until.
    assert_eq!(env.ok(&["logs", "--tail", "1", &id]), "last\n");
    let stamped = env.ok(&["logs", "-t", "--tail", "1", &id]);
    assert!(
        stamped.ends_with("Z last\n") && stamped.len() == 36,
        "{stamped:?}"
    );
    assert_eq!(env.ok(&["logs", "--since", "2099-01-01", &id]), "");
    assert_eq!(env.ok(&["logs", "--since", "10m", &id]).lines().count(), 3);
    assert_eq!(env.ok(&["logs", "--until", "10m", &id]), "");
    // A log written by an older monitor (unstamped) still prints.
    let legacy = env.store().join("instances").join(&id).join("log.1");
    std::fs::write(&legacy, "from an old monitor\n").unwrap();
    assert!(env.ok(&["logs", &id]).starts_with("from an old monitor\n"));
    // Removed: its log is kept, by id and by id prefix.
    env.ok(&["rm", &id]);
    let kept = env.store().join("logs/instances").join(&id);
    assert!(kept.join("meta.json").is_file());
    assert!(env.ok(&["logs", &id]).contains("to-err"));
    assert!(env.ok(&["logs", &id[..10]]).contains("to-err"));
}

#[test]
fn a_service_rotates_at_its_size_is_merged_by_time_and_read_by_release() {
    let Some(env) = box_env() else { return };
    script_image(
        &env,
        "talk",
        "i=0; while true; do echo line-$i-padding-padding-padding-padding-padding; i=$((i+1)); sleep 0.01; done",
    );
    let f = fleet(
        &env,
        "talk",
        2,
        "logs = { max_size = \"4k\", max_files = 2 }",
    );
    env.ok(&["apply", "-f", &f]);
    let ids = app_ids(&env);
    assert_eq!(ids.len(), 2);
    let dir = env.store().join("instances").join(&ids[0]);
    // ~90 bytes a line, 100 lines a second: 4k rotates every ~half second.
    assert!(
        eventually(Duration::from_secs(15), || dir.join("log.2").exists()),
        "not rotated"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(!dir.join("log.3").exists(), "more than max_files kept");
    for f in ["log", "log.1", "log.2"] {
        let len = std::fs::metadata(dir.join(f)).map_or(0, |m| m.len());
        assert!(len <= 4096, "{f}: {len} bytes");
    }
    // The service: both instances, prefixed, merged by time.
    let text = env.ok(&["logs", "--tail", "20", "app"]);
    for id in &ids {
        assert!(
            text.lines().any(|l| l.starts_with(&id[..12])),
            "{id}:\n{text}"
        );
    }
    let json = lines(&env.ok(&["logs", "--json", "app"]));
    let times: Vec<&str> = json.iter().map(|l| l["time"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "merged by time");
    assert!(
        json.iter()
            .all(|l| l["service"] == "app" && l["release"] == 1)
    );
    // The rotated files are read in order: each instance's numbers ascend.
    for id in &ids {
        let n: Vec<u64> = json
            .iter()
            .filter(|l| l["instance"] == id.as_str())
            .filter_map(|l| l["text"].as_str()?.split('-').nth(1)?.parse().ok())
            .collect();
        assert!(n.len() > 40, "{}", n.len());
        assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "{n:?}");
    }
    // service@release, its instances removed (a redeploy) included.
    script_image(&env, "quiet", "echo quiet; sleep 1000");
    let f = fleet(&env, "quiet", 1, "");
    env.ok(&["apply", "-f", &f]);
    let old = lines(&env.ok(&["logs", "--json", "--tail", "1", "app@1"]));
    assert_eq!(old.len(), 2, "{old:?}");
    assert!(
        old.iter()
            .all(|l| ids.contains(&l["instance"].as_str().unwrap().to_string()))
    );
    assert!(env.ok(&["logs", "app@2"]).contains("quiet"));
    let e = env.run(&["logs", "app@9"]);
    assert!(!e.status.success());
    env.ok(&["apply", "-f", &f, "--prune"]);
}

#[test]
fn serve_heals_names_the_exit_and_keeps_the_log_for_previous_and_gc() {
    let Some(env) = box_env() else { return };
    script_image(
        &env,
        "crash",
        "echo starting; sleep 1; echo boom-$$ >&2; exit 3",
    );
    let f = fleet(&env, "crash", 1, "crash_loop = false");
    // apply may report the crash itself; serve heals from then on.
    let _ = env.run(&["apply", "-f", &f]);
    // Following the service before serve heals it: the instances that
    // replace the first one come in as they start.
    let first = app_ids(&env);
    let followed = env.dir.path().join("follow.out");
    let mut follow = env
        .cmd()
        .args(["logs", "-f", "app"])
        .stdout(File::create(&followed).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = env.dir.path().join("serve.log");
    let mut serve = env
        .cmd()
        .args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--interval",
            "500ms",
            "--drift-interval",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let healed = eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("exited: exit code 3")
            .count()
            >= 2
    });
    common::stop(&mut serve, Duration::from_secs(10));
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(healed, "{said}");
    // The follower printed the replacements' output, each line prefixed
    // with its instance.
    let replacements: Vec<String> = ps(&env)
        .into_iter()
        .filter(|i| i["service"] == "app")
        .map(|i| i["id"].as_str().unwrap().to_string())
        .filter(|id| !first.contains(id))
        .collect();
    let seen = eventually(Duration::from_secs(5), || {
        let out = std::fs::read_to_string(&followed).unwrap_or_default();
        replacements.iter().any(|id| {
            out.lines()
                .any(|l| l.starts_with(&id[..12]) && l.contains("boom-"))
        })
    });
    common::stop(&mut follow, Duration::from_secs(5));
    assert!(
        seen,
        "logs -f app, replacements {replacements:?}:\n{}",
        std::fs::read_to_string(&followed).unwrap_or_default()
    );
    let line = said
        .lines()
        .find(|l| l.contains("exited: exit code 3"))
        .unwrap();
    assert!(
        line.contains("boom-") && line.contains("starting"),
        "{line}"
    );
    // --previous: the instance this one replaced, removed, its log kept.
    let current = app_ids(&env).pop().expect("an instance of app");
    let prev = env.ok(&["logs", "--previous", &current]);
    assert!(prev.contains("boom-"), "{prev}");
    let kept = std::fs::read_dir(env.store().join("logs/instances"))
        .unwrap()
        .count();
    assert!(kept >= 2);
    let removed: Vec<String> = ps(&env)
        .into_iter()
        .filter(|i| i["state"] == "deleted")
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert!(env.ok(&["logs", &removed[0]]).contains("boom-"));
    // gc: one kept log backdated past the 7 days, the rest newer.
    let meta = env
        .store()
        .join("logs/instances")
        .join(&removed[0])
        .join("meta.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    m["removed"] = "2020-01-01T00:00:00.000Z".into();
    std::fs::write(&meta, m.to_string()).unwrap();
    let gc = env.json(&["gc"]);
    assert_eq!(
        gc["logs"]["removed"],
        serde_json::json!([removed[0]]),
        "{gc}"
    );
    assert_eq!(gc["logs"]["kept"], (kept - 1) as u64);
    assert!(!meta.exists());
    let e = env.run(&["logs", &removed[0]]);
    assert!(
        String::from_utf8_lossy(&e.stderr).contains("not kept"),
        "{}",
        common::show(&e)
    );
    assert!(env.ok(&["logs", &removed[1]]).contains("boom-"));
}
