//! Habits people bring from docker and kubectl (issue 19): `--init`, `exec`
//! (refused, with the alternative) and `debug`, shell completion and man
//! pages. Instance tests need root and busybox, as `instances` does.

use crate::common;
use crate::instances::box_env;

use std::time::{Duration, Instant};

use common::{Env, show};
use serde_json::Value;

/// The host pid of instance `id`'s PID 1.
fn pid_of(env: &Env, id: &str) -> u32 {
    let ps: Vec<Value> = env.items(&["ps"]);
    let i = ps.iter().find(|i| i["id"] == id).expect("instance in ps");
    i["pid"].as_u64().expect("a running instance has a pid") as u32
}

/// (pid, state) of every child of host process `parent`.
fn children(parent: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so after the last ')'.
        let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        if rest[1].parse::<u32>() == Ok(parent) {
            out.push((pid, rest[0].chars().next().unwrap()));
        }
    }
    out
}

fn config(env: &Env, id: &str) -> Value {
    let path = env.store().join("instances").join(id).join("config.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

const LOOP: &str = "while true; do sleep 1; done";

/// Issue 19: "A PID-1 shell loop takes the 10 s SIGKILL path on stop: no
/// `--init`." A shell entrypoint now gets an init by default, which
/// forwards SIGTERM: the loop stops at once. With `--init=false` the same
/// loop is PID 1 again and waits out the grace period.
#[test]
fn a_shell_loop_stops_on_sigterm_under_the_default_init() {
    let Some(env) = box_env() else { return };
    for driver in ["embedded", "runc"] {
        if driver == "runc" && !common::have("runc") {
            continue;
        }
        let id = common::last_line(&env.ok(&[
            "run", "--driver", driver, "box:1", "--", "/bin/sh", "-c", LOOP,
        ]));
        let c = config(&env, &id);
        match driver {
            "embedded" => assert_eq!(c["annotations"]["org.drover.init"], "true", "{c}"),
            _ => assert_eq!(c["process"]["args"][0], "/dev/init", "{c}"),
        }
        let t = Instant::now();
        let out = env.ok(&["stop", &id]);
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "{driver}: stop took {took:?} (the SIGKILL path): {out}"
        );
        assert!(out.contains("exited"), "{out}");
        env.ok(&["rm", &id]);

        // Without it: PID 1 ignores SIGTERM, SIGKILL after the grace.
        let id = common::last_line(&env.ok(&[
            "run",
            "--init=false",
            "--driver",
            driver,
            "box:1",
            "--",
            "/bin/sh",
            "-c",
            LOOP,
        ]));
        assert!(config(&env, &id).get("annotations").is_none());
        let t = Instant::now();
        env.ok(&["stop", "--time", "1", &id]);
        assert!(t.elapsed() >= Duration::from_secs(1), "{driver}");
        env.ok(&["rm", &id]);
    }
}

/// A process orphaned inside the instance is the init's child and is
/// reaped; with `--init=false` the entrypoint (here `sleep`, which reaps
/// nothing) is PID 1 and the orphan stays a zombie.
#[test]
fn the_init_reaps_orphaned_zombies() {
    let Some(env) = box_env() else { return };
    let script = "(sleep 0.2 &); exec sleep 1000";
    let zombies = |init: &str| {
        let id = common::last_line(&env.ok(&["run", init, "box:1", "--", "/bin/sh", "-c", script]));
        let pid = pid_of(&env, &id);
        // The orphan exits after 0.2 s; give PID 1 time to reap it.
        std::thread::sleep(Duration::from_millis(1200));
        let kids = children(pid);
        env.ok(&["rm", "--force", &id]);
        (kids.iter().filter(|(_, s)| *s == 'Z').count(), kids)
    };
    let (with, kids) = zombies("--init");
    assert_eq!(with, 0, "zombies under the init: {kids:?}");
    // The control: the same script leaves one without it.
    let (without, kids) = zombies("--init=false");
    assert!(without >= 1, "expected a zombie without an init: {kids:?}");
}

/// The exit status passes through the init.
#[test]
fn the_init_exits_with_the_commands_status() {
    let Some(env) = box_env() else { return };
    let out = env.run(&[
        "run",
        "--wait",
        "--rm",
        "--init",
        "box:1",
        "--",
        "/bin/sh",
        "-c",
        "echo hi; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
}

/// Issue 19: "no `exec` and no word on why". It is refused, exit 2, with
/// the reason and the alternative, whatever docker flags follow.
#[test]
fn exec_is_refused_with_the_reason_and_the_alternative() {
    let env = Env::new();
    for args in [
        &["exec", "web1", "sh"][..],
        &["exec", "-it", "web1", "/bin/sh", "-c", "ls"][..],
    ] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("immutable"), "{err}");
        assert!(err.contains("drover debug"), "{err}");
    }
}

/// `drover debug ID -- CMD`: runs CMD beside the instance with its image,
/// env and volumes (read-only), prints its output, exits with its status,
/// is ledgered, and leaves no instance behind.
#[test]
fn debug_mirrors_an_instance_read_only_and_leaves_nothing_behind() {
    let Some(env) = box_env() else { return };
    let id = common::last_line(&env.ok(&[
        "run",
        "-e",
        "MODE=blue",
        "-v",
        "dbg:/data",
        "box:1",
        "--",
        "/bin/sh",
        "-c",
        "echo secret-42 > /data/f; while true; do sleep 1; done",
    ]));
    let file = env.store().join("volumes/dbg/f");
    let t = Instant::now();
    while !file.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the instance never wrote /data/f"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));

    let out = env.run(&["debug", &id, "--", "cat", "/data/f"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "secret-42\n");

    let out = env.run(&[
        "debug",
        &id,
        "--",
        "/bin/sh",
        "-c",
        "echo $MODE; echo x > /data/g",
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "blue\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{}",
        show(&out)
    );
    assert!(!env.store().join("volumes/dbg/g").exists());

    // Only the instance itself is left, untouched and running.
    let ps: Vec<Value> = env.items(&["ps"]);
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0]["id"], id.as_str());
    assert_eq!(ps[0]["state"], "running");

    let audit = env.ok(&["--json", "audit"]);
    let entries: Vec<Value> = crate::common::items(&audit);
    let debugs: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "instance.debug")
        .collect();
    assert_eq!(debugs.len(), 2, "{audit}");
    assert_eq!(debugs[0]["details"]["mirrors"], id.as_str());
    assert_eq!(debugs[0]["details"]["command"][0], "cat");
    assert!(!debugs[0]["actor"].as_str().unwrap_or_default().is_empty());
    let session = debugs[0]["subjects"][0].as_str().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "instance.delete" && e["subjects"][0] == session),
        "the session's removal is ledgered: {audit}"
    );
    env.ok(&["rm", "--force", &id]);
    // Only a running instance is mirrored.
    let out = env.run(&["debug", &id, "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("running instance"),
        "{}",
        show(&out)
    );
}

/// An image's definition may say `[config] init = true` for an entrypoint
/// that is not a shell; `--init=false` still wins.
#[test]
fn an_images_config_may_ask_for_the_init() {
    let Some(env) = box_env() else { return };
    let def = crate::instances::BOX_DEF
        .replace("tag = \"1\"", "tag = \"init\"")
        .replace(
            "user = \"65534:65534\"",
            "user = \"65534:65534\"\ninit = true",
        );
    env.write_def(&def);
    env.build(&["--sign"]);
    let id = common::last_line(&env.ok(&["run", "box:init", "--", "sleep", "100"]));
    assert_eq!(config(&env, &id)["annotations"]["org.drover.init"], "true");
    let t = Instant::now();
    env.ok(&["stop", &id]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let id = common::last_line(&env.ok(&["run", "--init=false", "box:init", "--", "sleep", "100"]));
    assert!(config(&env, &id).get("annotations").is_none());
    env.ok(&["rm", "--force", &id]);
}

fn web_fleet(env: &Env, extra: &str) -> String {
    let text = format!(
        "[service.web]\nimage = \"web:1\"\nreplicas = 1\nmin_healthy = \"0s\"\n{extra}\n\
         [service.web.health]\nkind = \"http\"\npath = \"/\"\ninterval = \"200ms\"\n\
         timeout = \"200ms\"\nretries = 2\nstart_period = \"1s\"\ndeadline = \"10s\"\n"
    );
    let path = env.ctx().join("fleet.toml");
    common::write(&path, text.as_bytes(), 0o644);
    path.to_str().unwrap().to_string()
}

/// A service's `init = false` turns off the init its shell entrypoint
/// would get, is part of the release (plan names the field), and a debug
/// session of its instance is no replica of it.
#[test]
fn a_service_says_init_and_debug_sessions_are_not_replicas() {
    let Some(env) = common::web_env() else { return };
    let fleet = web_fleet(&env, "init = false");
    env.ok(&["apply", "-f", &fleet]);
    let live = |env: &Env| -> Vec<Value> {
        let s: Vec<Value> = env.items(&["status"]);
        s[0]["instances"].as_array().unwrap().clone()
    };
    let inst = live(&env);
    assert_eq!(inst.len(), 1, "{inst:?}");
    let id = inst[0]["id"].as_str().unwrap().to_string();
    assert!(config(&env, &id).get("annotations").is_none());

    let out = env.run(&["debug", &id, "--", "/bin/sh", "-c", "echo $PORT"]);
    assert!(out.status.success(), "{}", show(&out));
    let port = inst[0]["port"].as_u64().unwrap().to_string();
    assert_ne!(
        String::from_utf8_lossy(&out.stdout).trim(),
        port,
        "a port of its own"
    );
    let after = live(&env);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["id"], id.as_str());

    let fleet = web_fleet(&env, "");
    let plan = env.run(&["plan", "-f", &fleet]);
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains("init: false -> (unset)"),
        "{}",
        show(&plan)
    );
}

/// Issue 19: "No shell completion". The bash script parses, offers the
/// subcommands (and no hidden ones) and completes a prefix.
#[test]
fn completion_scripts_cover_the_subcommands() {
    let env = Env::new();
    let bash = env.ok(&["completion", "bash"]);
    for sub in [
        "build",
        "run",
        "debug",
        "exec",
        "apply",
        "completion",
        "man",
    ] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    assert!(
        !bash.contains("__monitor"),
        "hidden subcommands are offered"
    );
    if !common::have("bash") {
        return;
    }
    let script = env.dir.path().join("drover.bash");
    std::fs::write(&script, &bash).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "bash -n: {}", show(&out));
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(drover deb); COMP_CWORD=1; _drover drover deb drover; \
             echo \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "debug",
        "{}",
        show(&out)
    );
    for shell in ["zsh", "fish"] {
        let s = env.ok(&["completion", shell]);
        assert!(s.contains("debug"), "{shell}");
    }
    assert_eq!(env.run(&["completion", "tcsh"]).status.code(), Some(2));
}

/// Issue 19: "no man pages". `drover man --dir` writes drover.1 and one
/// page per subcommand, each a man page that renders.
#[test]
fn man_pages_are_written_and_render() {
    let env = Env::new();
    let dir = env.dir.path().join("man1");
    env.ok(&["man", "--dir", dir.to_str().unwrap()]);
    for page in [
        "drover.1",
        "drover-run.1",
        "drover-debug.1",
        "drover-exec.1",
        "drover-completion.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains("\n.TH "),
            "{page}: {text}"
        );
    }
    assert!(!dir.join("drover-__monitor.1").exists());
    let page = dir.join("drover-run.1");
    let rendered = if common::have("man") {
        std::process::Command::new("man")
            .arg("-l")
            .arg(&page)
            .env("MANPAGER", "cat")
            .output()
    } else if common::have("groff") {
        std::process::Command::new("groff")
            .args(["-man", "-Tutf8"])
            .arg(&page)
            .output()
    } else {
        return;
    }
    .unwrap();
    assert!(rendered.status.success(), "{}", show(&rendered));
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(text.contains("--init"), "{text}");
}
