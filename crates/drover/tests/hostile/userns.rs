//! Container root is not host root: user namespaces, volumes owned by
//! mapped ids, the store closed to other users.
//!
//! The attack (review of issue 16): an image running as uid 0 copied a
//! binary into its volume and made it setuid; on the host, an unprivileged
//! user ran it from `$STORE/volumes/<vol>/` and got euid 0.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{self, Env, show};
use crate::instances::{BOX_DEF, box_env};

/// The first host id instances map to (`instance::userns::FIRST`).
const FIRST: u32 = 0x7000_0000;

macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[test] fn $name() { super::$name("embedded") })*
        }
        mod runc {
            $(#[test] fn $name() {
                if crate::common::require("runc") { super::$name("runc") }
            })*
        }
    };
}

both_drivers!(
    a_setuid_file_left_in_a_volume_is_not_host_root,
    container_root_is_an_unprivileged_host_id_and_the_image_keeps_its_owners,
    a_volume_from_before_user_namespaces_is_moved_into_the_range,
    the_instance_user_may_reopen_its_own_stdout_and_stderr,
);

/// The busybox image, and `box:root`: the same, running as uid 0, with
/// `/opt/probe`, a static program that prints its effective uid (busybox
/// drops setuid privileges itself, so it cannot show them), when a C
/// compiler is at hand.
fn root_env() -> Option<Env> {
    let env = box_env()?;
    let src = env.dir.path().join("probe.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <unistd.h>\n\
         int main(void) { printf(\"euid=%d\\n\", (int)geteuid()); return 0; }\n",
    )
    .unwrap();
    let probe = env.ctx().join("rootfs/opt/probe");
    std::fs::create_dir_all(probe.parent().unwrap()).unwrap();
    let built = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&probe)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        eprintln!("no static C compiler: the setuid probe is skipped");
    }
    env.write_def(
        &BOX_DEF
            .replace("tag = \"1\"", "tag = \"root\"")
            .replace("user = \"65534:65534\"", "user = \"0:0\""),
    );
    env.build(&["--sign"]);
    Some(env)
}

/// `drover run --wait --rm [extra] box:root -- /bin/sh -c script`: its output.
fn as_root(env: &Env, driver: &str, extra: &[&str], script: &str) -> String {
    let mut args = vec!["run", "--wait", "--rm", "--driver", driver];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["box:root", "--", "/bin/sh", "-c", script]);
    let out = env.run(&args);
    assert!(out.status.success(), "{}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where instance `id`'s views are (its recorded root view's directory).
fn views_of(env: &Env, id: &str) -> PathBuf {
    let all: Vec<serde_json::Value> = env.items(&["ps", "--all"]);
    let inst = all.iter().find(|i| i["id"] == id).expect("instance listed");
    let root = inst["launch"]["root_view"].as_str().expect("a root view");
    Path::new(root).parent().unwrap().to_path_buf()
}

fn mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(m).starts_with(path))
}

fn a_setuid_file_left_in_a_volume_is_not_host_root(driver: &str) {
    let Some(env) = root_env() else { return };
    let out = as_root(
        &env,
        driver,
        &["--volume", "vol:/data"],
        "cp /opt/probe /data/x 2>/dev/null || cp /bin/busybox /data/x; \
         chmod 4755 /data/x && id -u && cat /proc/self/uid_map",
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"), "root inside: {out}");
    let map: Vec<u64> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(map[0], 0);
    assert!(
        map[1] >= FIRST as u64,
        "container root maps to host {}",
        map[1]
    );
    assert_eq!(map[2], 65536);

    // On the host the file is owned by that unprivileged id: its setuid
    // bit can make nobody root.
    let x = env.store().join("volumes/vol/x");
    let meta = std::fs::metadata(&x).unwrap();
    assert!(
        meta.uid() >= FIRST && meta.gid() >= FIRST,
        "owner {}",
        meta.uid()
    );
    assert_ne!(meta.mode() & 0o4000, 0, "the container's chmod stands");

    // And no other host user can reach it: the store is closed.
    for dir in [env.store(), env.store().join("volumes")] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is {:o}", dir.display(), mode & 0o777);
    }
    // nobody cannot even reach it; handed the file anyway (a descriptor
    // root opened), its setuid bit makes nobody the range's root, never
    // host root: the review's attack printed euid=0 here.
    if common::have("setpriv") && env.ctx().join("rootfs/opt/probe").exists() {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "exec 3< '{}'; exec setpriv --reuid=65534 --regid=65534 --clear-groups \
                 /proc/self/fd/3",
                x.display()
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(text.trim(), format!("euid={}", meta.uid()), "{text}");
        assert_ne!(text.trim(), "euid=0", "host root through a volume");
    }
}

fn container_root_is_an_unprivileged_host_id_and_the_image_keeps_its_owners(driver: &str) {
    let Some(env) = root_env() else { return };
    // Inside, the image's files are root's and the volume is the user's own.
    let out = as_root(
        &env,
        driver,
        &["--volume", "state:/data"],
        "stat -c %u /bin/busybox /etc/passwd /data && touch /data/f && stat -c %u /data/f",
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "0", "0"],
        "{out}"
    );

    // A detached instance: its views are mounted while it lives, closed to
    // others, and gone with it; the volume's files stay.
    let id = common::last_line(&env.ok(&[
        "run",
        "--driver",
        driver,
        "--volume",
        "state:/data",
        "box:root",
        "--",
        "/bin/sh",
        "-c",
        "echo kept > /data/g; sleep 60",
    ]));
    let views = views_of(&env, &id);
    assert!(
        views.starts_with("/run/drover/views"),
        "{}",
        views.display()
    );
    assert!(mounted(&views.join("root")), "root view of {id} mounted");
    let meta = std::fs::metadata(&views).unwrap();
    assert_eq!(meta.permissions().mode() & 0o077, 0);
    assert!(meta.uid() >= FIRST, "views owned by the instance's root");
    std::thread::sleep(std::time::Duration::from_millis(300));
    env.ok(&["rm", "--force", &id]);
    assert!(!mounted(&views), "views of {id} still mounted");
    assert!(!views.exists(), "views of {id} still there");
    // The `--rm` runs above left nothing either.
    let store_views = views.parent().unwrap();
    assert_eq!(
        std::fs::read_dir(store_views).unwrap().count(),
        0,
        "views left behind"
    );

    // What a `run` killed between its mount and its row would leave: gc
    // detaches it (and never deletes through it).
    let orphan = store_views.join("0123456789ab/root");
    std::fs::create_dir_all(&orphan).unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&orphan)
        .status()
        .unwrap();
    assert!(mount.success());
    std::fs::write(orphan.join("inside"), b"x").unwrap();
    let out = env.ok(&["gc"]);
    assert!(out.contains("cleaned up after 1 instances"), "{out}");
    assert!(
        !mounted(&orphan) && !orphan.exists(),
        "orphan view still there"
    );
    let g = env.store().join("volumes/state/g");
    assert_eq!(
        std::fs::read_to_string(&g).unwrap(),
        "kept\n",
        "removing an instance keeps its volume"
    );
    assert!(std::fs::metadata(&g).unwrap().uid() >= FIRST);
}

fn a_volume_from_before_user_namespaces_is_moved_into_the_range(driver: &str) {
    let Some(env) = root_env() else { return };
    // As an older drover left it: root's files owned by host root, setuid.
    let old = env.store().join("volumes/old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::copy("/bin/busybox", old.join("x")).unwrap();
    std::fs::set_permissions(old.join("x"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let out = as_root(
        &env,
        driver,
        &["--volume", "old:/data"],
        "stat -c %u /data/x",
    );
    assert_eq!(out.trim(), "0", "still root's inside");
    let meta = std::fs::metadata(old.join("x")).unwrap();
    assert!(
        meta.uid() >= FIRST,
        "moved into the range: owner {}",
        meta.uid()
    );
    assert_eq!(meta.mode() & 0o6000, 0, "setuid cleared by the move");
}

/// nginx logs to `/dev/stderr`, which reopens the output pipe: found with
/// Debian's nginx in an image, running as nobody in its namespace.
fn the_instance_user_may_reopen_its_own_stdout_and_stderr(driver: &str) {
    let Some(env) = box_env() else { return };
    let out = crate::instances::sh(
        &env,
        driver,
        &[],
        "echo to-stdout > /dev/stdout && echo to-stderr > /dev/stderr && echo done",
    );
    assert_eq!(out.0, 0, "{}", out.1);
    assert!(
        out.1.contains("to-stdout") && out.1.contains("done"),
        "{}",
        out.1
    );
}

/// Turning the namespace off takes a reason, at parse time.
#[test]
fn opting_out_of_the_user_namespace_needs_a_reason() {
    let env = Env::new();
    let fleet = env.dir.path().join("fleet.toml");
    std::fs::write(&fleet, "[service.web]\nimage = \"web:1\"\nuserns = false\n").unwrap();
    let out = env.run(&["plan", "-f", fleet.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fleet.toml:3") && err.contains("userns_reason"),
        "{err}"
    );
}

/// A deployed service maps to its own range; one that opts out (with its
/// reason, which the ledger keeps) runs with host ids.
#[test]
fn a_service_runs_in_its_range_unless_its_fleet_entry_says_why_not() {
    let Some(env) = common::web_env() else { return };
    let fleet = env.ctx().join("fleet.toml");
    let uid_map = |env: &Env| -> Vec<u64> {
        let all: Vec<serde_json::Value> = env.items(&["status"]);
        let pid = all[0]["instances"][0]["pid"].as_u64().expect("a pid");
        std::fs::read_to_string(format!("/proc/{pid}/uid_map"))
            .unwrap()
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect()
    };
    std::fs::write(
        &fleet,
        "[service.web]\nimage = \"web:1\"\nmin_healthy = \"0s\"\n",
    )
    .unwrap();
    env.ok(&["apply", "-f", fleet.to_str().unwrap()]);
    let map = uid_map(&env);
    assert!(map[1] >= FIRST as u64 && map[2] == 65536, "{map:?}");

    std::fs::write(
        &fleet,
        "[service.web]\nimage = \"web:1\"\nmin_healthy = \"0s\"\nuserns = false\n\
         userns_reason = \"reads host-owned files under /sys\"\n",
    )
    .unwrap();
    env.ok(&["apply", "-f", fleet.to_str().unwrap()]);
    assert_eq!(uid_map(&env), [0, 0, 4294967295], "host ids");
    let entries: Vec<serde_json::Value> = env.items(&["audit"]);
    let release = entries
        .iter()
        .rev()
        .find(|e| e["action"] == "release.create")
        .unwrap();
    assert_eq!(
        release["details"]["userns_opt_out"], "reads host-owned files under /sys",
        "{release}"
    );
}
