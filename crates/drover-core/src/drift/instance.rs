//! Drift of a running instance: its image, its runtime config and its
//! process, measured against what its release says (the root filesystem is
//! [`super::scan`]'s part).
//!
//! - **image**: the instance runs its release's image digest;
//! - **config**: the bundle's `config.json` is exactly what drover generates
//!   from the instance's recorded launch (env, args, user, capabilities,
//!   mounts, namespaces, limits, seccomp);
//! - **process**: it is alive; the kernel's view of it has no more than
//!   the capabilities it was given, no-new-privileges and seccomp on, its
//!   user and group; its root is mounted read-only and nothing is mounted
//!   in it beyond what the config mounts (processes inside cannot mount:
//!   a new mount came from outside).
//!
//! These are invariants of a process drover started, so a legitimate
//! program cannot trip them (environment variables and arguments may change
//! when a program re-executes itself; they are checked in the config, not
//! in `/proc`).

use std::collections::BTreeSet;
use std::fmt;
use std::fs;

use serde::Serialize;
use serde_json::Value;

use crate::instance::{Instance, State};
use crate::runtime::spec::{self, Launch};

/// What differs on one instance, besides its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "area")]
pub enum Drift {
    /// A file of the root (shared by every instance of the image).
    File(super::Finding),
    /// The root could not be scanned at all (it is gone, or its baseline).
    Root {
        detail: String,
    },
    Image {
        want: String,
        got: String,
    },
    /// A part of the runtime config (a JSON pointer into `config.json`).
    Config {
        path: String,
        detail: String,
    },
    Process {
        what: String,
        detail: String,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::File(x) => write!(f, "{x}"),
            Drift::Root { detail } => write!(f, "root: {detail}"),
            Drift::Image { want, got } => write!(f, "image {got}, but its release has {want}"),
            Drift::Config { path, detail } => write!(f, "config {path}: {detail}"),
            Drift::Process { what, detail } => write!(f, "process {what}: {detail}"),
        }
    }
}

impl Drift {
    /// The path it concerns, for the ledger: a file path, `config:/ptr`,
    /// `process:what` or `image`.
    pub fn path(&self) -> String {
        match self {
            Drift::File(x) => x.path.clone(),
            Drift::Root { .. } => "/".into(),
            Drift::Image { .. } => "image".into(),
            Drift::Config { path, .. } => format!("config:{path}"),
            Drift::Process { what, .. } => format!("process:{what}"),
        }
    }
}

/// The bundle's config against the one it was created with: the file's
/// digest decides (so a newer drover generating a different config for the
/// same launch is no drift); a JSON diff against the config generated from
/// the launch names what changed.
pub fn config(inst: &Instance, bundle: &std::path::Path) -> Vec<Drift> {
    let file = bundle.join("config.json");
    let bytes = match fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            return vec![Drift::Config {
                path: "/".into(),
                detail: format!("{}: {e}", file.display()),
            }];
        }
    };
    if inst.config_digest == Some(crate::Digest::of(&bytes)) {
        return Vec::new();
    }
    let got: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return vec![Drift::Config {
                path: "/".into(),
                detail: format!("{}: not valid JSON: {e}", file.display()),
            }];
        }
    };
    let want = spec::generate(&inst.launch);
    let mut out = Vec::new();
    diff(&want, &got, String::new(), 0, &mut out);
    if out.is_empty() && inst.config_digest.is_some() {
        out.push(Drift::Config {
            path: "/".into(),
            detail: format!("{} changed since the instance was created", file.display()),
        });
    }
    out
}

/// Differences between two JSON values, as pointers, at most 3 deep.
fn diff(want: &Value, got: &Value, at: String, depth: usize, out: &mut Vec<Drift>) {
    if want == got {
        return;
    }
    match (want, got) {
        (Value::Object(w), Value::Object(g)) if depth < 3 => {
            let keys: BTreeSet<&String> = w.keys().chain(g.keys()).collect();
            for k in keys {
                let p = format!("{at}/{k}");
                match (w.get(k), g.get(k)) {
                    (Some(a), Some(b)) => diff(a, b, p, depth + 1, out),
                    (Some(_), None) => out.push(Drift::Config {
                        path: p,
                        detail: "removed".into(),
                    }),
                    (None, Some(b)) => out.push(Drift::Config {
                        path: p,
                        detail: format!("added: {}", short(b)),
                    }),
                    (None, None) => {}
                }
            }
        }
        _ => out.push(Drift::Config {
            path: if at.is_empty() { "/".into() } else { at },
            detail: format!("{} (release: {})", short(got), short(want)),
        }),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(117).collect::<String>())
    } else {
        s
    }
}

/// Linux capability numbers (`capability.h`).
fn cap_number(name: &str) -> Option<u32> {
    const NAMES: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    let bare = name.strip_prefix("CAP_").unwrap_or(name);
    NAMES.iter().position(|n| *n == bare).map(|i| i as u32)
}

/// The kernel's view of the instance's init process.
pub fn process(inst: &Instance) -> Vec<Drift> {
    let mut out = Vec::new();
    let p = |what: &str, detail: String| Drift::Process {
        what: what.into(),
        detail,
    };
    let Some(pid) = inst.pid.filter(|_| inst.state == State::Running) else {
        out.push(p("state", format!("not running ({})", inst.state.as_str())));
        return out;
    };
    let status = match fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => s,
        Err(e) => {
            out.push(p("state", format!("pid {pid} is gone: {e}")));
            return out;
        }
    };
    out.extend(status_findings(&status, &inst.launch));
    if let Ok(mi) = fs::read_to_string(format!("/proc/{pid}/mountinfo")) {
        out.extend(mount_findings(&mi, &inst.launch));
    }
    out
}

/// Checks on `/proc/<pid>/status`.
fn status_findings(status: &str, l: &Launch) -> Vec<Drift> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let p = |what: &str, detail: String| Drift::Process {
        what: what.into(),
        detail,
    };
    let mut out = Vec::new();
    let allowed: u64 = l
        .capabilities
        .iter()
        .filter_map(|c| cap_number(c))
        .fold(0, |m, n| m | (1u64 << n));
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        if let Some(v) = field(set).and_then(|v| u64::from_str_radix(v, 16).ok()) {
            let extra = v & !allowed;
            if extra != 0 {
                out.push(p(
                    set,
                    format!("has capabilities {extra:#x} it was not given"),
                ));
            }
        }
    }
    if field("NoNewPrivs") != Some("1") {
        out.push(p(
            "NoNewPrivs",
            format!("{:?}, want 1", field("NoNewPrivs")),
        ));
    }
    if field("Seccomp") != Some("2") {
        out.push(p(
            "Seccomp",
            format!("{:?}, want 2 (filter)", field("Seccomp")),
        ));
    }
    let ids = |name: &str| -> Vec<u32> {
        field(name)
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    // A process given CAP_SETUID / CAP_SETGID may change its own ids
    // (dropping privileges, as gosu and su-exec do).
    let granted = |cap: &str| l.capabilities.iter().any(|c| c == cap);
    // /proc shows host ids: in a user namespace, the container's plus the
    // range's first.
    let shift = l.userns.map_or(0, |m| m.host);
    let (uid, gid) = (shift + l.uid, shift + l.gid);
    if !granted("CAP_SETUID") && ids("Uid").iter().any(|u| *u != uid) {
        out.push(p("Uid", format!("{:?}, want {uid}", ids("Uid"))));
    }
    if !granted("CAP_SETGID") && ids("Gid").iter().any(|g| *g != gid) {
        out.push(p("Gid", format!("{:?}, want {gid}", ids("Gid"))));
    }
    out
}

/// Checks on `/proc/<pid>/mountinfo`: the root is read-only, and every
/// mount is one the config makes (or lies under /proc, /dev or /sys,
/// which the runtime populates).
fn mount_findings(mountinfo: &str, l: &Launch) -> Vec<Drift> {
    let config = spec::generate(l);
    let mut expected: BTreeSet<String> = ["/".to_string()].into();
    for m in config["mounts"].as_array().into_iter().flatten() {
        if let Some(d) = m["destination"].as_str() {
            expected.insert(normal(d));
        }
    }
    for key in ["maskedPaths", "readonlyPaths"] {
        for v in config["linux"][key].as_array().into_iter().flatten() {
            if let Some(d) = v.as_str() {
                expected.insert(normal(d));
            }
        }
    }
    let runtime_owned = |p: &str| {
        ["/proc/", "/dev/", "/sys/"]
            .iter()
            .any(|pre| p.starts_with(pre))
    };
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // id parent major:minor root mountpoint options ...
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(point), Some(opts)) = (f.get(4), f.get(5)) else {
            continue;
        };
        let point = normal(&unescape(point));
        if point == "/" && !opts.split(',').any(|o| o == "ro") {
            out.push(Drift::Process {
                what: "mount /".into(),
                detail: format!("the root is mounted {opts}, not read-only"),
            });
        }
        if !expected.contains(&point) && !runtime_owned(&point) {
            out.push(Drift::Process {
                what: format!("mount {point}"),
                detail: format!("mounted ({opts}), but the config has no such mount"),
            });
        }
    }
    out
}

/// A path with `.` and empty components dropped (`/var//lib/./x` →
/// `/var/lib/x`), as the kernel shows mount points.
fn normal(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// Undo mountinfo's octal escapes (`\040` for a space, `\134` for `\`...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::runtime::spec::Limits;

    fn launch() -> Launch {
        Launch {
            id: "abc".into(),
            rootfs: PathBuf::from("/var/lib/drover/rootfs/x"),
            args: vec!["/bin/sh".into()],
            env: vec!["PATH=/bin".into(), "PORT=8080".into()],
            cwd: "/".into(),
            uid: 65534,
            gid: 65534,
            additional_gids: vec![],
            capabilities: vec!["CAP_NET_BIND_SERVICE".into()],
            mounts: vec![],
            limits: Limits::default(),
            tmpfs_bytes: 1 << 26,
            tmpfs: vec![],
            userns: None,
            root_view: None,
            writable_root: false,
            own_network: false,
            init: None,
            logs: None,
        }
    }

    #[test]
    fn config_diff_names_what_changed() {
        let l = launch();
        let want = spec::generate(&l);
        let mut got = want.clone();
        got["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push("EVIL=1".into());
        got["process"]["noNewPrivileges"] = false.into();
        got["hooks"] = serde_json::json!({"prestart": []});
        let mut out = Vec::new();
        diff(&want, &got, String::new(), 0, &mut out);
        let paths: Vec<String> = out.iter().map(Drift::path).collect();
        assert_eq!(
            paths,
            [
                "config:/hooks",
                "config:/process/env",
                "config:/process/noNewPrivileges"
            ]
        );
        assert!(out[1].to_string().contains("EVIL=1"), "{}", out[1]);
        let mut none = Vec::new();
        diff(&want, &want.clone(), String::new(), 0, &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn status_checks_caps_privs_and_ids() {
        let l = launch();
        let clean = "Name:\tsh\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n\
                     CapPrm:\t0000000000000400\nCapEff:\t0000000000000400\n\
                     CapBnd:\t0000000000000400\nNoNewPrivs:\t1\nSeccomp:\t2\n";
        assert_eq!(status_findings(clean, &l), []);
        let bad = clean
            .replace("CapBnd:\t0000000000000400", "CapBnd:\t0000000000200400")
            .replace("NoNewPrivs:\t1", "NoNewPrivs:\t0")
            .replace("Uid:\t65534\t65534", "Uid:\t0\t65534");
        let what: Vec<String> = status_findings(&bad, &l).iter().map(Drift::path).collect();
        assert_eq!(
            what,
            ["process:CapBnd", "process:NoNewPrivs", "process:Uid"]
        );
    }

    #[test]
    fn mounts_must_be_the_configs_and_root_read_only() {
        let l = launch();
        let clean = "1 0 8:1 /x / ro,relatime - ext4 /dev/sda1 rw\n\
                     2 1 0:5 / /proc rw - proc proc rw\n\
                     3 2 0:5 / /proc/kcore rw - tmpfs tmpfs rw\n\
                     4 1 0:6 / /tmp rw - tmpfs tmpfs rw\n\
                     5 1 0:7 / /dev/null rw - devtmpfs udev rw\n";
        assert_eq!(mount_findings(clean, &l), []);
        let bad = clean.replace("/ ro,relatime", "/ rw,relatime")
            + "6 1 8:1 /evil /usr/bin rw - ext4 /dev/sda1 rw\n";
        let what: Vec<String> = mount_findings(&bad, &l).iter().map(Drift::path).collect();
        assert_eq!(what, ["process:mount /", "process:mount /usr/bin"]);
    }

    #[test]
    fn mount_points_are_unescaped_and_normalised() {
        assert_eq!(unescape(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape(r"/plain\0"), r"/plain\0");
        assert_eq!(normal("/var//lib/./x/"), "/var/lib/x");
        assert_eq!(normal("/"), "/");
        let mut l = launch();
        l.mounts.push(crate::runtime::spec::BindMount {
            source: PathBuf::from("/v"),
            target: "/srv//my data/.".into(),
            read_only: false,
        });
        let mi =
            "1 0 8:1 /x / ro - ext4 /dev/sda1 rw\n7 1 8:1 /v /srv/my\\040data rw - ext4 sda1 rw\n";
        assert_eq!(mount_findings(mi, &l), []);
    }

    #[test]
    fn a_process_given_setuid_may_change_its_ids() {
        let mut l = launch();
        let st =
            "Uid:\t0\t0\t0\t0\nGid:\t65534\t65534\t65534\t65534\nNoNewPrivs:\t1\nSeccomp:\t2\n";
        assert_eq!(status_findings(st, &l).len(), 1);
        l.capabilities.push("CAP_SETUID".into());
        assert_eq!(status_findings(st, &l), []);
    }

    #[test]
    fn capability_numbers_match_the_kernel() {
        assert_eq!(cap_number("CAP_CHOWN"), Some(0));
        assert_eq!(cap_number("CAP_NET_BIND_SERVICE"), Some(10));
        assert_eq!(cap_number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(cap_number("CAP_CHECKPOINT_RESTORE"), Some(40));
        for c in spec::CAPABILITIES {
            assert!(cap_number(c).is_some(), "{c}");
        }
    }
}
