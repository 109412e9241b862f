//! Restarts and upgrades of `drover serve` that refuse no connection: wrk
//! through a proxy port across three `serve --takeover` restarts and one
//! `drover upgrade` (the binary renamed over, serve handing over to the new
//! one on SIGHUP); an instance started under the old binary crashing after
//! the upgrade is recorded by its old monitor and healed. Plus the systemd
//! unit, checked by `systemd-analyze verify`. Needs root (CI runs as root).

use crate::common;

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{DROVER, Env, eventually, free_port, get, show, write};
use serde_json::Value;

/// `drover` at `bin` on the test's store.
fn drover(env: &Env, bin: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("--init").arg("--store").arg(env.store());
    c
}

fn ok(env: &Env, bin: &Path, args: &[&str]) -> String {
    let out = drover(env, bin).args(args).output().unwrap();
    assert!(out.status.success(), "drover {args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Start a serve from `bin`, appending its log to `log` (a successor it
/// starts on SIGHUP inherits the same file).
fn serve(env: &Env, bin: &Path, log: &Path, extra: &[&str]) -> Child {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    drover(env, bin)
        .args(["serve", "--bind", "127.0.0.1", "--interval", "500ms"])
        .args(["--drift-interval", "0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("start drover serve")
}

/// One scrape of `/metrics` on loopback `port`: Ok for a 200 with the
/// exposition's end, else what went wrong.
fn metrics(port: u16) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut r = String::new();
    s.read_to_string(&mut r).map_err(|e| e.to_string())?;
    if r.starts_with("HTTP/1.1 200") && r.ends_with("# EOF\n") {
        Ok(())
    } else {
        Err(r.lines().next().unwrap_or("nothing").to_string())
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn web(env: &Env) -> Value {
    env.items(&["status"])
        .into_iter()
        .find(|s| s["name"] == "web")
        .expect("service web")
}

fn running(env: &Env) -> Vec<(String, u64)> {
    web(env)["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "running")
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["pid"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The pid of a process that is gone once `/proc/<pid>` is.
fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
        || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn copy_exe(to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(DROVER, to).unwrap();
}

#[test]
fn three_restarts_and_an_upgrade_under_load_refuse_no_connection() {
    let Some(env) = common::web_env() else { return };
    if !common::require("wrk") {
        return;
    }
    // The "installed" drover, and the release it is upgraded to.
    let installed = env.dir.path().join("bin/drover");
    let next = env.dir.path().join("next/drover");
    copy_exe(&installed);
    copy_exe(&next);
    let old_ino = std::fs::metadata(&installed).unwrap().ino();
    let log = env.dir.path().join("serve.log");
    let port = free_port();
    let fleet = env.ctx().join("fleet.toml");
    write(
        &fleet,
        format!(
            "[service.web]\nimage = \"web:1\"\nmin_healthy = \"0s\"\nreplicas = 2\n\
             ports = [{port}]\ndrain = \"5s\"\n"
        )
        .as_bytes(),
        0o644,
    );
    // Instances (and their monitors) started by the installed binary.
    ok(&env, &installed, &["apply", "-f", fleet.to_str().unwrap()]);
    // The admin listener moves with the proxies: scraped all along.
    let admin = free_port().to_string();
    let admin_at = format!("127.0.0.1:{admin}");
    let mut first = serve(&env, &installed, &log, &["--admin", &admin_at]);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(10), || get(port).as_deref()
            == Some("version one\n")),
        "the proxy does not serve:\n{}",
        read_log()
    );

    let mut wrk = Command::new("wrk")
        .args(["-t1", "-c8", "-d600s", "--timeout", "10s"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk");
    std::thread::sleep(Duration::from_secs(1));
    let scraping = Arc::new(AtomicBool::new(true));
    let scraper = {
        let (scraping, admin) = (scraping.clone(), admin.parse::<u16>().unwrap());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            // The first scrape may come before the admin port is bound.
            eventually(Duration::from_secs(10), || metrics(admin).is_ok());
            while scraping.load(Ordering::SeqCst) {
                match metrics(admin) {
                    Ok(()) => ok += 1,
                    Err(e) => failed.push(e),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, failed)
        })
    };

    // Three restarts: each new serve takes over from the running one.
    let mut current = Some(&mut first);
    let mut successors: Vec<Child> = Vec::new();
    for n in 0..3 {
        let child = serve(
            &env,
            &installed,
            &log,
            &["--takeover", "--admin", &admin_at],
        );
        let old = match current.take() {
            Some(c) => c,
            None => successors.last_mut().unwrap(),
        };
        let status = wait_exit(old, Duration::from_secs(20));
        assert!(
            status.is_some_and(|s| s.success()),
            "restart {n}: the old serve did not stop cleanly ({status:?}):\n{}",
            read_log()
        );
        successors.push(child);
        std::thread::sleep(Duration::from_millis(700));
    }
    let before_upgrade = successors.last().unwrap().id();

    // The upgrade: rename the new binary over the installed one; serve
    // hands over to a serve started from it.
    let out = drover(&env, &installed)
        .args(["upgrade", next.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "upgrade: {}\n{}",
        show(&out),
        read_log()
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let new_pid: u32 = said
        .split_whitespace()
        .skip_while(|w| *w != "to")
        .nth(2)
        .and_then(|p| p.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no new pid in {said:?}"));
    assert_ne!(new_pid, before_upgrade);
    let old = successors.last_mut().unwrap();
    assert!(
        wait_exit(old, Duration::from_secs(20)).is_some_and(|s| s.success()),
        "the serve before the upgrade did not stop:\n{}",
        read_log()
    );
    let new_ino = std::fs::metadata(&installed).unwrap().ino();
    assert_ne!(
        new_ino, old_ino,
        "the binary was renamed over, not rewritten"
    );
    let exe = std::fs::read_link(format!("/proc/{new_pid}/exe")).unwrap();
    assert_eq!(exe, installed, "serve runs {exe:?} after the upgrade");
    assert_eq!(
        std::fs::metadata(format!("/proc/{new_pid}/exe"))
            .unwrap()
            .ino(),
        new_ino,
        "serve runs the new file"
    );
    std::thread::sleep(Duration::from_secs(1));

    Command::new("kill")
        .args(["-INT", &wrk.id().to_string()])
        .status()
        .unwrap();
    wait_exit(&mut wrk, Duration::from_secs(10));
    let mut text = String::new();
    wrk.stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let requests: u64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or(0);
    let socket_errors = text.lines().find(|l| l.contains("Socket errors"));
    eprintln!("{text}");
    assert!(requests > 100, "wrk made only {requests} requests:\n{text}");
    assert_eq!(
        socket_errors,
        None,
        "socket errors across the restarts:\n{text}\n{}",
        read_log()
    );
    scraping.store(false, Ordering::SeqCst);
    let (scrapes, failed) = scraper.join().unwrap();
    assert!(
        scrapes > 50 && failed.is_empty(),
        "{scrapes} scrapes of /metrics, failed: {failed:?}\n{}",
        read_log()
    );
    let log_text = read_log();
    assert_eq!(
        log_text
            .matches("handed 1 listening socket(s) and the admin listener")
            .count(),
        4,
        "{log_text}"
    );

    // An instance started under the old binary (its monitor runs the old,
    // now deleted, file) crashes: its exit is recorded, serve heals it.
    let (victim, pid) = running(&env)[0].clone();
    // Its monitor is its parent (directly, or by adoption as a subreaper).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let monitor = stat.rsplit(") ").next().unwrap().split(' ').nth(1).unwrap();
    let link = std::fs::read_link(format!("/proc/{monitor}/exe")).unwrap();
    assert!(
        link.to_string_lossy().ends_with("(deleted)"),
        "the monitor {monitor} runs {link:?}, not the replaced binary"
    );
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let now = running(&env);
            now.len() == 2 && now.iter().all(|(id, _)| *id != victim)
        }),
        "not healed:\n{}",
        read_log()
    );
    let ledger: Vec<Value> = env.items(&["audit"]);
    assert!(
        ledger
            .iter()
            .any(|e| e["action"] == "instance.exit" && e["subjects"][0] == victim.as_str()),
        "the old monitor recorded no exit for {victim}"
    );
    assert!(
        ledger
            .iter()
            .any(|e| e["action"] == "service.heal" && e["details"]["instance"] == victim.as_str())
    );

    Command::new("kill")
        .args(["-TERM", &new_pid.to_string()])
        .status()
        .unwrap();
    assert!(eventually(Duration::from_secs(15), || gone(new_pid)));
    for mut c in successors {
        let _ = c.kill();
        let _ = c.wait();
    }
    env.ok(&["audit", "verify"]);
}

/// A plain `serve` beside a running one is refused, and says how to
/// replace it.
#[test]
fn a_second_serve_is_refused_naming_the_takeover() {
    let env = Env::new();
    env.ok(&["images"]);
    let log = env.dir.path().join("serve.log");
    let mut first = serve(&env, Path::new(DROVER), &log, &[]);
    let sock = env.store().join("serve.sock");
    assert!(eventually(Duration::from_secs(10), || sock.exists()));
    let out = env.run(&["serve", "--bind", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another `drover serve` runs"), "{err}");
    assert!(err.contains("drover serve --takeover"), "{err}");
    common::stop(&mut first, Duration::from_secs(10));
    assert!(!sock.exists(), "serve left its socket behind");
}

/// `install-service` writes a unit `systemd-analyze verify` accepts, and
/// the one shipped under packaging/ is the same.
#[test]
fn the_systemd_unit_verifies() {
    let env = Env::new();
    let unit = env.ok(&["install-service", "--print", "--exe", "/usr/bin/drover"]);
    assert!(unit.contains("KillMode=process"), "{unit}");
    assert!(unit.contains("Type=notify"), "{unit}");
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/systemd/drover.service");
    let shipped = std::fs::read_to_string(&shipped).expect("packaging/systemd/drover.service");
    let expected = Command::new(DROVER)
        .args(["--store", "/var/lib/drover", "install-service", "--print"])
        .args(["--exe", "/usr/bin/drover"])
        .output()
        .unwrap();
    assert_eq!(
        shipped,
        String::from_utf8_lossy(&expected.stdout),
        "regenerate the shipped unit"
    );

    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    else {
        eprintln!("skipping systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    // A unit whose ExecStart exists: the test's drover.
    let dir = env.dir.path().join("units");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("drover.service");
    let out = env
        .cmd()
        .args(["install-service", "--path", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    let ours: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("drover.service"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify: {said}");
    let _ = File::open(&path).unwrap();
}
