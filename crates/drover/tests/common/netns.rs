//! Hosts as network namespaces, for the fleet tests (issue 22): a [`Net`]
//! is a database namespace (`db`) and hosts `h1`…`hN`, each joined by a
//! veth pair to a bridge in a namespace of its own, with addresses from
//! 198.18.0.0/15 (the range set aside for network tests): db 198.18.0.10,
//! hN 198.18.0.(10+N). Each namespace has loopback up and no default
//! route; nothing is added to the root namespace (every `ip` command runs
//! inside a namespace), so no traffic leaves the bridge.
//!
//! Namespaces are named `drv<pid>-<k>-<node>` (`k` counts the Nets this
//! test process made), so tests running at once never meet.
//!
//! Cleanup runs on drop *and* when the test process dies however it dies
//! (a SIGKILL included), the way `state/pgtest.rs` stops its PostgreSQL: a
//! `sh` reaper, in a process group of its own and deaf to SIGINT/SIGTERM,
//! waits for EOF on a pipe only this process holds; then it SIGKILLs every
//! process in the namespaces (`ip netns pids`) and deletes them. Dropping
//! the Net closes the pipe and waits for the reaper, so one path cleans up
//! in both cases.

use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The bridge's namespace's suffix.
const BRIDGE: &str = "br";

pub struct Net {
    prefix: String,
    hosts: usize,
    /// Closing it starts the cleanup; `None` once dropped.
    pipe: Option<ChildStdin>,
    reaper: Child,
}

impl Net {
    /// A database namespace and `hosts` host namespaces on one bridge.
    /// `None` (skip) without root or `ip` outside CI; in CI both are
    /// required.
    pub fn new(hosts: usize) -> Option<Net> {
        if !super::require("ip") {
            return None;
        }
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "network namespace tests need root in CI"
            );
            eprintln!("skipping: network namespaces need root");
            return None;
        }
        static MADE: AtomicU32 = AtomicU32::new(0);
        let k = MADE.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("drv{}-{k}", std::process::id());
        // The reaper first: a setup that fails halfway is cleaned up too.
        let mut reaper = start_reaper(&names(&prefix, hosts));
        let net = Net {
            pipe: reaper.stdin.take(),
            reaper,
            prefix,
            hosts,
        };
        net.build();
        Some(net)
    }

    /// The nodes: `db`, then `h1`…`hN`.
    pub fn nodes(&self) -> Vec<String> {
        nodes(self.hosts)
    }

    /// The namespace of `node` (`db`, `h1`…): for `ip netns exec`.
    pub fn ns(&self, node: &str) -> String {
        assert!(
            node == BRIDGE || self.nodes().iter().any(|n| n == node),
            "no node {node} in this net"
        );
        format!("{}-{node}", self.prefix)
    }

    /// Every namespace this Net makes, the bridge's last.
    pub fn namespaces(&self) -> Vec<String> {
        names(&self.prefix, self.hosts)
    }

    /// `node`'s address: db 198.18.0.10, hN 198.18.0.(10+N).
    pub fn addr(&self, node: &str) -> String {
        let i = self
            .nodes()
            .iter()
            .position(|n| n == node)
            .unwrap_or_else(|| panic!("no node {node} in this net"));
        format!("198.18.0.{}", 10 + i)
    }

    /// A command that runs in `node`'s namespace: `ip netns exec <ns>`,
    /// to which the caller adds the program and its arguments.
    pub fn cmd(&self, node: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(node)]);
        c
    }

    /// The processes in `node`'s namespace.
    pub fn pids(&self, node: &str) -> Vec<i32> {
        pids_in(&self.ns(node))
    }

    /// SIGKILL every process in `node`'s namespace (a whole host dying:
    /// its serve and its instances), until none is left; the pids killed.
    pub fn kill_host(&self, node: &str) -> Vec<i32> {
        let mut killed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.pids(node);
            if pids.is_empty() {
                return killed;
            }
            assert!(
                Instant::now() < deadline,
                "processes in {node} survive SIGKILL: {pids:?}"
            );
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                if !killed.contains(&pid) {
                    killed.push(pid);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn build(&self) {
        for ns in self.namespaces() {
            ip(&["netns", "add", &ns]);
        }
        let br = self.ns(BRIDGE);
        ip(&["-n", &br, "link", "set", "lo", "up"]);
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for node in self.nodes() {
            let ns = self.ns(&node);
            // The pair is made in the bridge's namespace, its far end put
            // straight into the node's: the root namespace never sees it.
            ip(&[
                "-n", &br, "link", "add", &node, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &br, "link", "set", &node, "master", "br0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.addr(&node)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // EOF: the reaper kills and deletes; wait for it to finish.
        drop(self.pipe.take());
        let _ = self.reaper.wait();
    }
}

/// `db`, then `h1`…`hN`.
fn nodes(hosts: usize) -> Vec<String> {
    let mut out = vec!["db".to_string()];
    out.extend((1..=hosts).map(|i| format!("h{i}")));
    out
}

/// The namespaces of the nodes and the bridge, named after `prefix`.
fn names(prefix: &str, hosts: usize) -> Vec<String> {
    let mut out: Vec<String> = nodes(hosts)
        .iter()
        .map(|n| format!("{prefix}-{n}"))
        .collect();
    out.push(format!("{prefix}-{BRIDGE}"));
    out
}

/// Start the reaper of `namespaces` (see the module's doc).
fn start_reaper(namespaces: &[String]) -> Child {
    Command::new("sh")
        .args(["-c", &reaper_script(namespaces)])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Not in the test's process group: a ^C to the test run must not
        // take the reaper with it before it has cleaned up.
        .process_group(0)
        .spawn()
        .expect("start the namespaces' reaper")
}

/// The shell that waits for EOF on its stdin, then SIGKILLs every process
/// in `namespaces` (again, while any is left, for a while) and deletes them.
pub fn reaper_script(namespaces: &[String]) -> String {
    format!(
        "trap '' INT TERM HUP; cat >/dev/null; \
         for ns in {}; do \
           i=0; while [ $i -lt 50 ]; do \
             pids=$(ip netns pids \"$ns\" 2>/dev/null); [ -z \"$pids\" ] && break; \
             kill -9 $pids 2>/dev/null; sleep 0.1; i=$((i+1)); \
           done; \
           ip netns del \"$ns\" 2>/dev/null; \
         done; true",
        namespaces.join(" ")
    )
}

/// The processes in namespace `ns` (none if it does not exist).
pub fn pids_in(ns: &str) -> Vec<i32> {
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The network namespaces that exist (`ip netns list`), by name.
pub fn namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Whether process `pid` still runs (a zombie, dead but not yet reaped by
/// its parent, does not).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // "pid (comm) S …": the state follows the last ')'.
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
