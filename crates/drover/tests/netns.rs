//! The network-namespace harness the fleet tests run hosts in
//! (`common::netns`): hosts reach each other on 198.18.0.0/15 and nothing
//! else does; a host can be killed whole; and nothing is left behind, not
//! even by a test process killed with SIGKILL. Needs root (CI runs as
//! root), `ip`, busybox and curl.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::netns::{self, Net};
use crate::common::{self, eventually};

/// The root namespace's links, by name.
fn root_links() -> BTreeSet<String> {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap().to_string())
        .collect()
}

fn stdout(c: &mut Command) -> String {
    let out = c.output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Everything gone: no namespace of `names` exists, no process of `pids`
/// runs.
fn all_gone(names: &[String], pids: &[i32]) -> bool {
    let left = netns::namespaces();
    !names.iter().any(|n| left.contains(n)) && !pids.iter().any(|p| netns::alive(*p))
}

#[test]
fn a_host_reaches_another_and_the_root_namespace_reaches_none() {
    if !common::require("busybox") || !common::require("curl") {
        return;
    }
    let links_before = root_links();
    let Some(net) = Net::new(2) else { return };
    let names = net.namespaces();
    assert_eq!(names.len(), 4, "db, h1, h2 and the bridge: {names:?}");
    let pid = std::process::id();
    assert!(names[0].starts_with(&format!("drv{pid}-")) && names[0].ends_with("-db"));
    assert_eq!(
        (net.addr("db"), net.addr("h1"), net.addr("h2")),
        (
            "198.18.0.10".into(),
            "198.18.0.11".into(),
            "198.18.0.12".into()
        )
    );

    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "hello from h1\n").unwrap();
    let mut server = net
        .cmd("h1")
        .args(["busybox", "httpd", "-f", "-p", "198.18.0.11:8080", "-h"])
        .arg(www.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = "http://198.18.0.11:8080/";
    let fetch = |node: &str| {
        stdout(
            net.cmd(node)
                .args(["curl", "-sS", "--max-time", "2", url])
                .stderr(Stdio::null()),
        )
    };
    assert!(
        eventually(Duration::from_secs(10), || fetch("h2") == "hello from h1\n"),
        "h2 does not reach h1's server: {:?}",
        fetch("h2")
    );
    assert_eq!(fetch("db"), "hello from h1\n");

    // Each namespace: loopback up, one address of the range, no default
    // route (so nothing can leave the bridge).
    for node in net.nodes() {
        let addrs = stdout(net.cmd(&node).args(["ip", "-4", "-o", "addr"]));
        assert!(
            addrs.contains("lo ") && addrs.contains("inet 127.0.0.1/8"),
            "{node}: {addrs}"
        );
        assert!(
            addrs.contains(&format!("inet {}/24", net.addr(&node))),
            "{node}: {addrs}"
        );
        let routes = stdout(net.cmd(&node).args(["ip", "route"]));
        assert!(
            !routes.contains("default"),
            "{node} has a default route: {routes}"
        );
        let unreachable = net
            .cmd(&node)
            .args(["ip", "route", "get", "192.0.2.1"])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!unreachable.success(), "{node} has a route out");
    }

    // The root namespace got nothing: no new link, no address of the
    // range, so it has no way onto the bridge (its route to 198.18.0.11, if
    // any, is its own default one, out of this machine).
    assert_eq!(root_links(), links_before);
    let root_addrs = stdout(Command::new("ip").args(["-4", "-o", "addr"]));
    assert!(
        !root_addrs.contains("inet 198.18.") && !root_addrs.contains("inet 198.19."),
        "{root_addrs}"
    );

    let in_h1 = net.pids("h1");
    assert!(in_h1.contains(&(server.id() as i32)), "{in_h1:?}");
    drop(net);
    assert!(all_gone(&names, &in_h1), "left behind after drop");
    let status = server.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
}

#[test]
fn kill_host_kills_every_process_of_a_host_and_no_other() {
    let Some(net) = Net::new(2) else { return };
    let mut h1 = net
        .cmd("h1")
        .args(["sh", "-c", "sleep 600 & sleep 600 & wait"])
        .spawn()
        .unwrap();
    let mut h2 = net.cmd("h2").args(["sleep", "600"]).spawn().unwrap();
    assert!(eventually(Duration::from_secs(10), || net.pids("h1").len() >= 3));
    assert!(eventually(Duration::from_secs(10), || net.pids("h2").len() == 1));
    let before = net.pids("h1");
    let killed = net.kill_host("h1");
    assert!(
        before.iter().all(|p| killed.contains(p)),
        "{before:?} vs {killed:?}"
    );
    assert!(net.pids("h1").is_empty());
    assert!(before.iter().all(|p| !netns::alive(*p)), "{before:?}");
    assert_eq!(h1.wait().unwrap().signal(), Some(9));
    // h2 is untouched until the Net goes.
    assert!(netns::alive(h2.id() as i32));
    assert_eq!(net.pids("h2"), [h2.id() as i32]);
    // Killing a host with nothing in it kills nothing.
    assert!(net.kill_host("h1").is_empty());
    drop(net);
    assert_eq!(h2.wait().unwrap().signal(), Some(9));
}

/// Run by [`a_killed_test_process_leaves_no_namespace_or_process`] in a
/// child test process, which it then kills: makes a Net with a process in
/// h1, says their names, and waits to be killed.
#[test]
#[ignore = "a helper: run by a_killed_test_process_leaves_no_namespace_or_process"]
fn holds_a_net_until_killed() {
    if std::env::var_os("DROVER_NETNS_HELPER").is_none() {
        return;
    }
    let net = Net::new(1).expect("root and ip");
    let mut sleeper = net
        .cmd("h1")
        .args(["sleep", "600"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = sleeper.id() as i32;
    assert!(eventually(Duration::from_secs(10), || net
        .pids("h1")
        .contains(&pid)));
    println!("NET {} PID {pid}", net.namespaces().join(" "));
    std::thread::sleep(Duration::from_secs(600));
    drop(net);
    let _ = sleeper.wait();
}

#[test]
fn a_killed_test_process_leaves_no_namespace_or_process() {
    // Checked here, so that the child does not skip silently.
    let Some(probe) = Net::new(0) else { return };
    drop(probe);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "netns::holds_a_net_until_killed",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DROVER_NETNS_HELPER", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut said = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // After libtest's "test netns::holds_a_net_until_killed ... ".
        if let Some((_, rest)) = line.split_once("NET ") {
            said = Some(rest.to_string());
            break;
        }
    }
    let said = said.expect("the helper said nothing (it failed; run it alone to see why)");
    let (names, pid) = said.split_once(" PID ").unwrap();
    let names: Vec<String> = names.split(' ').map(str::to_string).collect();
    let pid: i32 = pid.parse().unwrap();
    assert_eq!(names.len(), 3, "{names:?}");
    let exist = netns::namespaces();
    assert!(
        names.iter().all(|n| exist.contains(n)),
        "{names:?} in {exist:?}"
    );
    assert!(netns::alive(pid));

    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    assert!(
        eventually(Duration::from_secs(30), || all_gone(&names, &[pid])),
        "left behind by a killed test process: namespaces {:?}, process {pid} alive: {}",
        netns::namespaces(),
        netns::alive(pid)
    );
}

/// The reaper alone, with a plain process: it does nothing while its pipe
/// is open and cleans up once it closes.
#[test]
fn the_reaper_waits_for_its_pipe_to_close() {
    let Some(net) = Net::new(0) else { return };
    let mut sleeper = net.cmd("db").args(["sleep", "600"]).spawn().unwrap();
    let pid = sleeper.id() as i32;
    assert!(eventually(Duration::from_secs(10), || net
        .pids("db")
        .contains(&pid)));
    std::thread::sleep(Duration::from_millis(300));
    assert!(netns::alive(pid), "the reaper did not wait");
    let names = net.namespaces();
    drop(net);
    assert!(all_gone(&names, &[pid]));
    assert_eq!(sleeper.wait().unwrap().signal(), Some(9));
}
