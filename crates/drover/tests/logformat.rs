//! Logs of `drover serve` and its monitors: `--log-format json` writes one
//! JSON object per line with the event's fields (a heal names its service
//! and instance); the text default stays a line for people; `DROVER_LOG`
//! sets the levels, and at debug the libraries' own events (libcontainer's)
//! are there too. Real instances (embedded runtime, busybox httpd); needs
//! root as the serve tests do.

use crate::common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Env, eventually, free_port, get};
use serde_json::Value;

/// web:1, one replica on `port`, applied (running before serve starts).
fn deployed(port: u16) -> Option<Env> {
    let env = common::web_env()?;
    let text = format!(
        "[service.web]\nimage = \"web:1\"\nmin_healthy = \"0s\"\nreplicas = 1\nports = [{port}]\n{}",
        common::WEB_HEALTH
    );
    let f = common::write_fleet(&env, &text);
    env.ok(&["apply", "-f", &f]);
    Some(env)
}

/// A running `drover serve`, stopped (SIGTERM) when dropped, so a failed
/// assertion leaves none behind.
struct Serve(Option<Child>);

impl Serve {
    /// SIGTERM, and wait (once: a reaped pid may be anyone's next).
    fn stop(&mut self) {
        if let Some(mut child) = self.0.take() {
            common::stop(&mut child, Duration::from_secs(10));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `drover serve` with its stderr in `log`, with `env_vars` and nothing
/// else of DROVER_LOG* from the test's own environment.
fn serve(env: &Env, log: &Path, args: &[&str], env_vars: &[(&str, &str)]) -> Serve {
    let mut cmd = env.cmd();
    cmd.env_remove("DROVER_LOG").env_remove("DROVER_LOG_FORMAT");
    for (k, v) in env_vars {
        cmd.env(k, v);
    }
    cmd.args(["serve", "--bind", "127.0.0.1", "--interval", "500ms"])
        .args(["--drift-interval", "0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .map(|c| Serve(Some(c)))
        .expect("start drover serve")
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// The running instance of web, if one runs: its id and pid.
fn running(env: &Env) -> Option<(String, u32)> {
    let all: Vec<Value> = env.items(&["status"]);
    let web = all.iter().find(|s| s["name"] == "web")?;
    let i = web["instances"]
        .as_array()?
        .iter()
        .find(|i| i["state"] == "running")?;
    Some((i["id"].as_str()?.to_string(), i["pid"].as_u64()? as u32))
}

fn instance(env: &Env) -> (String, u32) {
    running(env).expect("a running instance of web")
}

fn kill9(pid: u32) {
    let ok = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn monitor_log(env: &Env, id: &str) -> PathBuf {
    env.store().join("instances").join(id).join("monitor.log")
}

/// Every line of `text` as JSON (each must be one).
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn json_logs_are_objects_with_fields_and_a_heal_names_service_and_instance() {
    let port = free_port();
    let Some(env) = deployed(port) else { return };
    let log = env.dir.path().join("serve.json.log");
    let admin = free_port();
    let admin_arg = format!("127.0.0.1:{admin}");
    let mut child = serve(
        &env,
        &log,
        &["--log-format", "json", "--admin", &admin_arg],
        &[],
    );
    let up = eventually(Duration::from_secs(20), || {
        get(port).as_deref() == Some("version one\n")
    });
    assert!(up, "{}", read(&log));

    let (victim, pid) = instance(&env);
    kill9(pid);
    let healed = eventually(Duration::from_secs(10), || {
        read(&log)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["instance"] == victim.as_str() && v["exit"].is_string())
    });
    assert!(healed, "no heal event for {victim}:\n{}", read(&log));
    let replaced = eventually(Duration::from_secs(10), || {
        running(&env).is_some_and(|(id, _)| id != victim)
    });
    assert!(replaced, "{}", read(&log));
    child.stop();

    let lines = json_lines(&read(&log));
    for v in &lines {
        assert!(v["timestamp"].is_string(), "{v}");
        assert!(
            ["ERROR", "WARN", "INFO"].contains(&v["level"].as_str().unwrap()),
            "default levels: {v}"
        );
        assert!(v["target"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
        assert!(v["message"].is_string(), "{v}");
    }
    let find = |what: &str, f: &dyn Fn(&Value) -> bool| {
        lines
            .iter()
            .find(|v| f(v))
            .unwrap_or_else(|| panic!("no {what} event in {lines:#?}"))
            .clone()
    };
    let heal = find("heal", &|v| v["instance"] == victim.as_str());
    assert_eq!(heal["level"], "WARN", "{heal}");
    assert_eq!(heal["target"], "drover_core::supervisor", "{heal}");
    assert_eq!(heal["service"], "web", "{heal}");
    assert_eq!(heal["release"], 1, "{heal}");
    assert_eq!(heal["exit"], "killed by signal 9", "{heal}");
    assert!(
        heal["message"]
            .as_str()
            .unwrap()
            .contains("exited: killed by signal 9; replacing it"),
        "{heal}"
    );
    let listening = find("listening", &|v| {
        v["target"] == "drover_proxy::proxies" && v["service"] == "web"
    });
    assert_eq!(
        listening["addr"],
        format!("127.0.0.1:{port}"),
        "{listening}"
    );
    let metrics = find("admin", &|v| {
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("admin: metrics on")
    });
    assert_eq!(metrics["addr"], admin_arg, "{metrics}");
    let pass = find("pass", &|v| {
        v["service"] == "web" && v["replaced"] == 1 && v["started"] == 1
    });
    assert_eq!(pass["level"], "INFO", "{pass}");
    assert!(
        pass["seconds"].is_number() && pass["release"] == 1,
        "{pass}"
    );
    find("stopped", &|v| v["message"] == "stopped");

    // The replacement's monitor logs in the same format, to its monitor.log.
    let (now, _) = instance(&env);
    let mon = json_lines(&read(&monitor_log(&env, &now)));
    assert!(
        mon.iter()
            .any(|v| v["message"] == "instance started" && v["instance"] == now.as_str()),
        "{mon:#?}"
    );
}

#[test]
fn text_logs_read_as_lines_and_drover_log_debug_shows_libcontainer() {
    let port = free_port();
    let Some(env) = deployed(port) else { return };

    // The default: text, info for drover, nothing finer.
    let log = env.dir.path().join("serve.text.log");
    let mut child = serve(&env, &log, &["--admin", "off"], &[]);
    let up = eventually(Duration::from_secs(20), || {
        get(port).as_deref() == Some("version one\n")
    });
    assert!(up, "{}", read(&log));
    child.stop();
    let text = read(&log);
    let listening = format!(
        " INFO drover_proxy::proxies: listening service=web addr=127.0.0.1:{port} \
         protocols=\"http/1.1, h2c\""
    );
    assert!(text.contains(&listening), "{text}");
    assert!(
        text.contains(" INFO drover::cmd::serve: started store=") && text.contains(" drift=off "),
        "{text}"
    );
    for line in text.lines() {
        assert!(line.starts_with("20") && !line.starts_with('{'), "{line}");
        assert!(
            !line.contains(" DEBUG ") && !line.contains(" TRACE "),
            "{line}"
        );
    }

    // DROVER_LOG=debug: drover's debug events, and libcontainer's (serve
    // deletes the dead instance's container through it).
    let log = env.dir.path().join("serve.debug.log");
    let mut child = serve(&env, &log, &["--admin", "off"], &[("DROVER_LOG", "debug")]);
    let started = eventually(Duration::from_secs(10), || {
        read(&log).contains("reconciler started service=web")
    });
    assert!(started, "{}", read(&log));
    let (victim, pid) = instance(&env);
    kill9(pid);
    let replaced = eventually(Duration::from_secs(10), || {
        running(&env).is_some_and(|(id, _)| id != victim)
            && read(&log).contains(&format!("instance {victim} (release 1, slot"))
    });
    assert!(replaced, "{}", read(&log));
    let from_libcontainer = eventually(Duration::from_secs(5), || {
        read(&log).contains(" DEBUG libcontainer::")
    });
    child.stop();
    let text = read(&log);
    assert!(from_libcontainer, "no libcontainer event:\n{text}");
    assert!(
        text.contains(" DEBUG drover_core::supervisor: reconciler started service=web"),
        "{text}"
    );
    // The monitor of the replacement logs at the same level, in text:
    // libcontainer created its container there.
    let (now, _) = instance(&env);
    let mon = read(&monitor_log(&env, &now));
    assert!(mon.contains(" DEBUG libcontainer::"), "{mon}");
    assert!(
        mon.contains(&format!(
            "INFO drover_core::instance::monitor: instance started instance={now}"
        )),
        "{mon}"
    );

    // A filter that names one target keeps the rest at its own level.
    let log = env.dir.path().join("serve.narrow.log");
    let mut child = serve(
        &env,
        &log,
        &["--admin", "off"],
        &[("DROVER_LOG", "warn,drover_core::supervisor=debug")],
    );
    let started = eventually(Duration::from_secs(10), || {
        read(&log).contains("reconciler started")
    });
    child.stop();
    let text = read(&log);
    assert!(started, "{text}");
    assert!(
        !text.contains("drover_proxy"),
        "proxies' info is filtered: {text}"
    );
}

#[test]
fn a_bad_log_setting_is_a_usage_error() {
    let env = Env::new();
    let out = env
        .cmd()
        .env("DROVER_LOG", "drover=loud")
        .args(["serve", "--admin", "off"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", common::show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DROVER_LOG=\"drover=loud\""),
        "{}",
        common::show(&out)
    );
    let out = env
        .cmd()
        .args(["serve", "--log-format", "xml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", common::show(&out));
}
