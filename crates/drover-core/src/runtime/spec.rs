//! The OCI runtime config (`config.json`) of an instance: a pure function
//! from [`Launch`] to JSON, shared by every driver, so the embedded runtime
//! and runc enforce exactly the same thing.
//!
//! What it enforces, and why each piece is there:
//! - the root is the image's shared, verified rootfs, mounted **read-only**;
//!   the only writable places are size-limited tmpfs on `/tmp` and `/run`,
//!   the tmpfs paths the image and service declare (owned by the
//!   instance's user) and the volumes the instance declares;
//! - a minimal `/dev` (tmpfs with the runtime's default null, zero, full,
//!   random, urandom, tty, plus pts, shm and mqueue);
//! - `/proc` paths masked and made read-only, and `/sys` read-only, as runc's
//!   defaults (`runc spec`);
//! - `noNewPrivileges`, every capability dropped unless named;
//! - a seccomp profile that allows by default and denies the calls a service
//!   never needs and an attacker wants (see [`DENIED_SYSCALLS`]);
//! - a user namespace: container ids `0..65536` are an unprivileged host
//!   range ([`IdMap`]), and the root is an id-mapped view of the shared one
//!   (see `instance::userns`); a service may opt out only with a reason;
//! - PID, mount, IPC and UTS namespaces; the host network (for now);
//! - memory, pids and CPU limits when set; rlimits.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Everything the runtime config is made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    pub id: String,
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    /// `KEY=value`, in order.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Capability names as the kernel spells them (`CAP_NET_BIND_SERVICE`).
    pub capabilities: Vec<String>,
    pub mounts: Vec<BindMount>,
    pub limits: Limits,
    /// Size of the `/tmp` tmpfs in bytes (`/run` gets a quarter of it).
    pub tmpfs_bytes: u64,
    /// The image's and the service's tmpfs mounts (see `runtime::tmpfs`),
    /// sorted by path, owned by `uid`:`gid`. Absent from the JSON when
    /// empty, so instances recorded before there were any read the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<super::tmpfs::Tmpfs>,
    /// The host ids container ids map to; `None`: no user namespace (the
    /// service opted out, or an instance recorded before there were any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<IdMap>,
    /// What the runtime mounts as the root: the id-mapped view of `rootfs`
    /// when there is a user namespace, else `rootfs` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_view: Option<PathBuf>,
    /// The root is writable (a build's `run` step on its overlay); an
    /// instance's never is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub writable_root: bool,
    /// A network namespace of its own, with only a loopback interface;
    /// otherwise the host's network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_network: bool,
    /// A tiny init as PID 1 that reaps zombies and forwards signals to
    /// the entrypoint (see [`Init`]); `None`: the entrypoint is PID 1.
    /// Absent from the JSON when `None`, so instances recorded before it
    /// read (and hash) the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Init>,
    /// The service's log rotation and retention (`logs = { … }`); read by
    /// the monitor and when the instance is removed, not part of the
    /// runtime config. Absent when `None` (defaults: `limits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogPolicy>,
}

/// A service's `logs = { max_size, max_files, keep, keep_instances }`: how
/// its instances' logs rotate, and how long they are kept after the
/// instance is removed. `None`: the default (see `instance::log`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPolicy {
    /// Bytes of one log file before it is rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Rotated files kept beside the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u64>,
    /// How long a removed instance's log is kept (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_ms: Option<u64>,
    /// The most removed instances' logs kept per service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_instances: Option<u32>,
}

impl LogPolicy {
    /// Nothing set: every default.
    pub fn is_default(&self) -> bool {
        *self == LogPolicy::default()
    }
}

/// Who is PID 1 in front of the entrypoint, when an instance has an init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Init {
    /// The embedded runtime's own: its container process forks, the child
    /// execs the entrypoint and the parent stays PID 1, reaping and
    /// forwarding (`runtime::init`). Marked in the config by
    /// [`INIT_ANNOTATION`]; no binary enters the image.
    Embedded,
    /// A static `tini` from the host, bound read-only at [`TINI_TARGET`] and
    /// put before the entrypoint (the runc driver has no hook of its own).
    Tini { path: PathBuf },
}

/// The image label that carries its definition's `[config] init`.
pub const INIT_LABEL: &str = "vnd.drover.init";

/// The annotation that asks the embedded runtime for its init.
pub const INIT_ANNOTATION: &str = "org.drover.init";

/// Where a host's `tini` appears in an instance: `/dev` is the instance's
/// own tmpfs, so the mount point can be made there under a read-only root.
pub const TINI_TARGET: &str = "/dev/init";

/// Where Debian's `tini` package puts its static binary.
pub const TINI_STATIC: &str = "/usr/bin/tini-static";

/// Entrypoints that are a shell: basename `sh`, `bash`, `ash`, `dash`,
/// `zsh`, `ksh` or `mksh`, or `busybox` followed by one of them. A shell as
/// PID 1 ignores SIGTERM (PID 1 gets no default actions) and reaps nothing
/// it did not start, so such instances get an init unless told otherwise.
pub fn is_shell(args: &[String]) -> bool {
    const SHELLS: &[&str] = &["sh", "bash", "ash", "dash", "zsh", "ksh", "mksh"];
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    match args.first().map(|a| base(a)) {
        Some(b) if SHELLS.contains(&b.as_str()) => true,
        Some(b) if b == "busybox" => args
            .get(1)
            .is_some_and(|a| SHELLS.contains(&base(a).as_str())),
        _ => false,
    }
}

/// Container ids `0..size` are host ids `host..host + size` (uids and gids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub host: u32,
    pub size: u32,
}

/// A host directory (a volume) mounted into the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// CPU in thousandths of a core (1500 = one and a half cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millicpus: Option<u64>,
    /// Open files (soft and hard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile: Option<u64>,
}

pub const DEFAULT_TMPFS_BYTES: u64 = 64 << 20;
pub const DEFAULT_NOFILE: u64 = 1024;

/// Denied with EPERM. Names this kernel or libseccomp does not know are
/// skipped by both runtimes, so the list can be generous.
pub const DENIED_SYSCALLS: &[&str] = &[
    // Mounting and changing the filesystem view.
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    // Looking into or controlling other processes.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "setns",
    // The kernel itself.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
    "reboot",
    "swapon",
    "swapoff",
    "syslog",
    "acct",
    "quotactl",
    "lookup_dcookie",
    "nfsservctl",
    "_sysctl",
    "uselib",
    "vhangup",
    "iopl",
    "ioperm",
    // Attack surface with a long CVE history.
    "bpf",
    "perf_event_open",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "open_by_handle_at",
    "name_to_handle_at",
    // The clock is the host's.
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
];

const CLONE_NEWUSER: u64 = 0x1000_0000;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Capabilities a `--cap-add` may name.
pub const CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_CONTROL",
    "CAP_AUDIT_READ",
    "CAP_AUDIT_WRITE",
    "CAP_BLOCK_SUSPEND",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_KILL",
    "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_MKNOD",
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_RAW",
    "CAP_PERFMON",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYSLOG",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT",
    "CAP_SYS_MODULE",
    "CAP_SYS_NICE",
    "CAP_SYS_PACCT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_WAKE_ALARM",
];

/// `net_bind_service`, `NET_BIND_SERVICE` or `CAP_NET_BIND_SERVICE` →
/// `CAP_NET_BIND_SERVICE`; `None` if no such capability exists.
pub fn capability(name: &str) -> Option<&'static str> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    CAPABILITIES.iter().copied().find(|c| *c == full)
}

/// The cgroup every instance gets, under one drover parent.
pub fn cgroups_path(id: &str) -> String {
    format!("/drover/{id}")
}

/// The runtime config for `l`.
pub fn generate(l: &Launch) -> Value {
    let caps = &l.capabilities;
    let nofile = l.limits.nofile.unwrap_or(DEFAULT_NOFILE);
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        // A user namespace may not mount sysfs for a network namespace it
        // does not own (the host's): it gets the host's, bound read-only,
        // as rootless runc does.
        if l.userns.is_some() {
            json!({"destination": "/sys", "type": "bind", "source": "/sys",
                   "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
        } else {
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                   "options": ["nosuid", "noexec", "nodev", "ro"]})
        },
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "mode=1777", format!("size={}", l.tmpfs_bytes)]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "mode=755", format!("size={}", (l.tmpfs_bytes / 4).max(1 << 20))]}),
    ];
    // After /tmp and /run (a path inside them is made there), before the
    // volumes. Owned by the instance's user, as ids inside its user
    // namespace: the runtime mounts them from within it.
    for t in &l.tmpfs {
        mounts.push(
            json!({"destination": t.path, "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=755", format!("size={}", t.size),
                        format!("uid={}", l.uid), format!("gid={}", l.gid)]}),
        );
    }
    if let Some(Init::Tini { path }) = &l.init {
        mounts.push(
            json!({"destination": TINI_TARGET, "type": "bind", "source": path,
                           "options": ["bind", "nosuid", "nodev", "ro"]}),
        );
    }
    for m in &l.mounts {
        let mut options = vec!["rbind", "nosuid", "nodev"];
        options.push(if m.read_only { "ro" } else { "rw" });
        mounts.push(json!({"destination": m.target, "type": "bind",
                           "source": m.source, "options": options}));
    }

    let mut resources = json!({
        // Deny every device by default, then allow the defaults the runtime creates.
        "devices": [{"allow": false, "access": "rwm"}],
    });
    if let Some(bytes) = l.limits.memory_bytes {
        // The same limit for memory+swap: no swapping around the limit.
        resources["memory"] = json!({"limit": bytes, "swap": bytes});
    }
    if let Some(pids) = l.limits.pids {
        resources["pids"] = json!({"limit": pids});
    }
    if let Some(milli) = l.limits.millicpus {
        let period: u64 = 100_000;
        resources["cpu"] = json!({"quota": milli * period / 1000, "period": period});
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "mount"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
    ];
    if l.own_network {
        namespaces.push(json!({"type": "network"}));
    }
    let mut linux = json!({});
    if let Some(map) = l.userns {
        namespaces.insert(0, json!({"type": "user"}));
        let ids = json!([{"containerID": 0, "hostID": map.host, "size": map.size}]);
        linux["uidMappings"] = ids.clone();
        linux["gidMappings"] = ids;
    }
    let root = l.root_view.as_ref().unwrap_or(&l.rootfs);
    let args: Vec<String> = match &l.init {
        // -g: signals go to the entrypoint's whole process group.
        Some(Init::Tini { .. }) => [TINI_TARGET, "-g", "--"]
            .iter()
            .map(|s| s.to_string())
            .chain(l.args.iter().cloned())
            .collect(),
        _ => l.args.clone(),
    };
    let mut masked = vec![
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
    ];
    if l.userns.is_some() {
        // The host's /sys is bound in whole: its cgroup tree would show
        // every other instance's processes and usage.
        masked.push("/sys/fs/cgroup");
    }
    let mut config = json!({
        "ociVersion": "1.0.2",
        "hostname": l.id,
        "root": {"path": root, "readonly": !l.writable_root},
        "process": {
            "terminal": false,
            "user": {"uid": l.uid, "gid": l.gid, "additionalGids": l.additional_gids},
            "args": args,
            "env": l.env,
            "cwd": l.cwd,
            "noNewPrivileges": true,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
                "inheritable": caps, "ambient": caps,
            },
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "soft": nofile, "hard": nofile},
                {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
            ],
        },
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": cgroups_path(&l.id),
            "resources": resources,
            "maskedPaths": masked,
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
            "seccomp": seccomp(),
        },
    });
    if let Value::Object(extra) = linux {
        for (k, v) in extra {
            config["linux"][k] = v;
        }
    }
    if l.init == Some(Init::Embedded) {
        config["annotations"] = json!({ INIT_ANNOTATION: "true" });
    }
    config
}

/// Allow by default; deny [`DENIED_SYSCALLS`], and new user namespaces
/// through `clone`/`unshare`. `clone3` gets ENOSYS (its flags live in memory
/// seccomp cannot read), so libc falls back to `clone`, whose flags it can.
fn seccomp() -> Value {
    let newuser = json!([{"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER,
                          "op": "SCMP_CMP_MASKED_EQ"}]);
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": architectures(),
        "syscalls": [
            {"names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
            {"names": ["clone", "unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
             "args": newuser},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        ],
    })
}

fn architectures() -> Vec<&'static str> {
    if cfg!(target_arch = "x86_64") {
        vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    } else if cfg!(target_arch = "aarch64") {
        vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    } else {
        vec![]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Spec;

    fn launch() -> Launch {
        Launch {
            id: "abc123".into(),
            rootfs: "/store/rootfs/ff".into(),
            args: vec!["/bin/httpd".into(), "-f".into()],
            env: vec!["PATH=/bin".into(), "PORT=8080".into()],
            cwd: "/".into(),
            uid: 65534,
            gid: 65534,
            additional_gids: vec![],
            capabilities: vec![],
            mounts: vec![BindMount {
                source: "/store/volumes/data".into(),
                target: "/data".into(),
                read_only: false,
            }],
            limits: Limits::default(),
            tmpfs_bytes: DEFAULT_TMPFS_BYTES,
            tmpfs: vec![],
            userns: None,
            root_view: None,
            writable_root: false,
            own_network: false,
            init: None,
            logs: None,
        }
    }

    /// With a user namespace: the user namespace comes first, ids map to
    /// the range, the root is the id-mapped view, /sys is the host's bound
    /// read-only; and libcontainer reads it as a valid spec.
    #[test]
    fn a_user_namespace_maps_ids_and_mounts_the_view() {
        let mut l = launch();
        l.userns = Some(IdMap {
            host: 0x7001_0000,
            size: 65536,
        });
        l.root_view = Some("/store/instances/abc123/mnt/root".into());
        let v = generate(&l);
        assert_eq!(v["linux"]["namespaces"][0]["type"], "user");
        assert_eq!(v["linux"]["uidMappings"][0]["hostID"], 0x7001_0000u32);
        assert_eq!(v["linux"]["gidMappings"][0]["size"], 65536);
        assert_eq!(v["root"]["path"], "/store/instances/abc123/mnt/root");
        let sys = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap();
        assert_eq!(sys["type"], "bind");
        let spec: Spec = serde_json::from_value(v).unwrap();
        assert_eq!(
            spec.linux()
                .as_ref()
                .unwrap()
                .uid_mappings()
                .as_ref()
                .unwrap()
                .len(),
            1
        );
        // Without one, nothing of it appears.
        let v = generate(&launch());
        assert!(v["linux"].get("uidMappings").is_none());
        assert_eq!(v["root"]["path"], "/store/rootfs/ff");
    }

    /// Declared tmpfs paths come after /tmp and /run and before the
    /// volumes, size-limited, nosuid and nodev, owned by the instance's
    /// user; an old launch without any reads (and generates) as before.
    #[test]
    fn declared_tmpfs_paths_are_mounted_for_the_instances_user() {
        let mut l = launch();
        l.tmpfs = vec![crate::runtime::tmpfs::Tmpfs {
            path: "/var/lib/nginx".into(),
            size: 8 << 20,
        }];
        let v = generate(&l);
        let dests: Vec<&str> = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        let at = |d: &str| dests.iter().position(|x| *x == d).unwrap();
        assert!(at("/run") < at("/var/lib/nginx") && at("/var/lib/nginx") < at("/data"));
        let m = &v["mounts"][at("/var/lib/nginx")];
        assert_eq!(m["type"], "tmpfs");
        assert_eq!(
            m["options"],
            json!([
                "nosuid",
                "nodev",
                "mode=755",
                "size=8388608",
                "uid=65534",
                "gid=65534"
            ])
        );
        let _: Spec = serde_json::from_value(v).unwrap();
        let old = serde_json::to_string(&launch()).unwrap();
        assert!(!old.contains("tmpfs\""), "{old}");
        let back: Launch = serde_json::from_str(&old).unwrap();
        assert!(back.tmpfs.is_empty());
    }

    /// The JSON is a valid OCI spec as libcontainer reads it, and says what
    /// the module promises.
    #[test]
    fn generated_config_parses_as_an_oci_spec_and_is_locked_down() {
        let spec: Spec = serde_json::from_value(generate(&launch())).unwrap();
        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.readonly(), Some(true));
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(true));
        let caps = process.capabilities().as_ref().unwrap();
        assert!(caps.bounding().as_ref().unwrap().is_empty());
        assert!(caps.effective().as_ref().unwrap().is_empty());
        assert_eq!(process.user().uid(), 65534);
        let linux = spec.linux().as_ref().unwrap();
        let ns: Vec<String> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| format!("{:?}", n.typ()).to_lowercase())
            .collect();
        assert_eq!(ns, ["pid", "mount", "ipc", "uts"]);
        assert!(linux.masked_paths().as_ref().unwrap().len() >= 10);
        let seccomp = linux.seccomp().as_ref().unwrap();
        let names: Vec<&String> = seccomp
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .flat_map(|s| s.names())
            .collect();
        for must in [
            "mount",
            "ptrace",
            "kexec_load",
            "bpf",
            "keyctl",
            "reboot",
            "unshare",
        ] {
            assert!(names.iter().any(|n| *n == must), "{must} not denied");
        }
        let mounts = spec.mounts().as_ref().unwrap();
        let tmp = mounts
            .iter()
            .find(|m| m.destination() == std::path::Path::new("/tmp"))
            .unwrap();
        assert!(
            tmp.options()
                .as_ref()
                .unwrap()
                .contains(&"size=67108864".to_string())
        );
        let data = mounts.last().unwrap();
        assert_eq!(data.destination(), std::path::Path::new("/data"));
        assert!(data.options().as_ref().unwrap().contains(&"rw".to_string()));
    }

    #[test]
    fn limits_appear_only_when_set() {
        let v = generate(&launch());
        let r = &v["linux"]["resources"];
        assert!(r.get("memory").is_none() && r.get("pids").is_none() && r.get("cpu").is_none());
        let mut l = launch();
        l.limits = Limits {
            memory_bytes: Some(64 << 20),
            pids: Some(50),
            millicpus: Some(500),
            nofile: Some(4096),
        };
        l.capabilities = vec!["CAP_NET_BIND_SERVICE".into()];
        let v = generate(&l);
        let r = &v["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 64 << 20);
        assert_eq!(r["pids"]["limit"], 50);
        assert_eq!(r["cpu"]["quota"], 50_000);
        assert_eq!(v["process"]["rlimits"][0]["soft"], 4096);
        assert_eq!(
            v["process"]["capabilities"]["ambient"][0],
            "CAP_NET_BIND_SERVICE"
        );
    }

    #[test]
    fn capability_names_normalize() {
        assert_eq!(capability("net_bind_service"), Some("CAP_NET_BIND_SERVICE"));
        assert_eq!(capability("CAP_CHOWN"), Some("CAP_CHOWN"));
        assert_eq!(capability("FLY"), None);
    }

    #[test]
    fn shells_are_known_by_their_basename() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(is_shell(&a(&[
            "/bin/sh",
            "-c",
            "while true; do sleep 1; done"
        ])));
        assert!(is_shell(&a(&["bash"])));
        assert!(is_shell(&a(&["/usr/bin/dash", "x.sh"])));
        assert!(is_shell(&a(&["/bin/busybox", "sh", "-c", "true"])));
        assert!(!is_shell(&a(&["/bin/busybox", "httpd", "-f"])));
        assert!(!is_shell(&a(&["/bin/httpd", "-f"])));
        assert!(!is_shell(&a(&["/bin/shell"])));
        assert!(!is_shell(&[]));
    }

    /// An init shows in the config only when there is one: an instance
    /// without it gets the same config (and digest) as before issue 19.
    #[test]
    fn an_init_marks_the_config_or_goes_before_the_entrypoint() {
        let plain = launch();
        let json = serde_json::to_string(&plain).unwrap();
        assert!(!json.contains("init"), "{json}");
        assert!(generate(&plain).get("annotations").is_none());

        let embedded = Launch {
            init: Some(Init::Embedded),
            ..launch()
        };
        let c = generate(&embedded);
        assert_eq!(c["annotations"][INIT_ANNOTATION], "true");
        assert_eq!(c["process"]["args"], json!(["/bin/httpd", "-f"]));
        let _: Spec = serde_json::from_value(c).unwrap();

        let tini = Launch {
            init: Some(Init::Tini {
                path: TINI_STATIC.into(),
            }),
            ..launch()
        };
        let c = generate(&tini);
        assert!(c.get("annotations").is_none());
        assert_eq!(
            c["process"]["args"],
            json!([TINI_TARGET, "-g", "--", "/bin/httpd", "-f"])
        );
        let mounts = c["mounts"].as_array().unwrap();
        let m = mounts
            .iter()
            .find(|m| m["destination"] == TINI_TARGET)
            .unwrap();
        assert_eq!(m["source"], TINI_STATIC);
        assert!(m["options"].as_array().unwrap().contains(&json!("ro")));
        let back: Launch = serde_json::from_str(&serde_json::to_string(&tini).unwrap()).unwrap();
        assert_eq!(back, tini);
    }
}
