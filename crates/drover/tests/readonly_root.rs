//! What real programs need under a read-only root (issue 17): accounts
//! with fixed ids, writable tmpfs paths owned by the instance's user,
//! `/dev/stdout` and `/dev/stderr` for a non-root user, Docker's default
//! PATH, and empty directories an include glob names. Built from the
//! host's static busybox (`instances::box_env`) and run by both drivers.

use crate::common::{self, Env, show};

use crate::instances::box_env;

macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[test] fn $name() { super::$name("embedded") })*
        }
        mod runc {
            $(#[test] fn $name() {
                if super::common::require("runc") { super::$name("runc") }
            })*
        }
    };
}

both_drivers!(
    an_account_runs_by_name_and_writes_its_tmpfs,
    a_non_root_user_writes_dev_stdout_and_dev_stderr,
    an_image_without_path_gets_dockers_default,
    a_tmpfs_the_image_cannot_hold_is_refused_clearly,
);

/// The box's rootfs with `config` (and anything before `[config]`, in
/// `extra`) as image `app:1`.
fn app(env: &Env, extra: &str, config: &str) {
    let dd = env.ctx().join("rootfs/bin/dd");
    if !dd.exists() {
        std::os::unix::fs::symlink("busybox", dd).unwrap();
    }
    env.write_def(&format!(
        "[image]\nname = \"app\"\ntag = \"1\"\n\n\
         [[layer]]\nkind = \"copy\"\nsrc = \"rootfs\"\ndest = \"/\"\n\n{extra}\n\
         [config]\n{config}\n"
    ));
    env.build(&["--sign"]);
}

/// (mode, uid, gid) of each directory `ls -ldn` listed in `out`.
fn dirs(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .filter(|l| l.starts_with('d'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[2].to_string(), f[3].to_string())
        })
        .collect()
}

/// `drover run --wait --rm` of `app:1` (`extra`: options, then maybe
/// `--` and a command): exit code, and the output.
fn run(env: &Env, driver: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["run", "--wait", "--rm", "--driver", driver];
    // The image goes before a command (`-- cmd ...`), after the options.
    let at = extra.iter().position(|a| *a == "--").unwrap_or(extra.len());
    args.extend_from_slice(&extra[..at]);
    args.push("app:1");
    args.extend_from_slice(&extra[at..]);
    let out = env.run(&args);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn an_account_runs_by_name_and_writes_its_tmpfs(driver: &str) {
    let Some(env) = box_env() else { return };
    app(
        &env,
        "[[account]]\nname = \"app\"\nuid = 10001\ngroups = [\"nogroup\"]\n",
        "user = \"app\"\nenv = { PATH = \"/bin\" }\n\
         tmpfs = [\"/var/lib/app\", { path = \"/var/log/app\", size = \"1m\" }]\n\
         entrypoint = [\"/bin/sh\", \"-c\", \"id; cat /etc/passwd /etc/group; \
           echo hi > /var/lib/app/x && cat /var/lib/app/x; ls -ldn /var/lib/app /home/app; \
           dd if=/dev/zero of=/var/log/app/big bs=1k count=2048 2>&1 | grep -o 'No space left'\"]",
    );
    let (code, out) = run(&env, driver, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("uid=10001(app) gid=10001(app)") && out.contains("65534(nogroup)"),
        "{out}"
    );
    // The image's own lines kept, the account's added.
    assert!(
        out.contains(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n\
             app:x:10001:10001::/home/app:/usr/sbin/nologin\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("root:x:0:\nnogroup:x:65534:app\napp:x:10001:\n"),
        "{out}"
    );
    assert!(out.contains("\nhi\n"), "the tmpfs is writable: {out}");
    let want = |mode: &str| (mode.to_string(), "10001".to_string(), "10001".to_string());
    assert_eq!(
        dirs(&out),
        [want("drwxr-xr-x"), want("drwxr-xr-x")],
        "the tmpfs and the home are the account's: {out}"
    );
    assert!(out.contains("No space left"), "size-limited: {out}");
    // The mount is what the config says: no drift while it runs.
    let out = env.ok(&[
        "run",
        "--driver",
        driver,
        "--name",
        "live",
        "app:1",
        "--",
        "/bin/sleep",
        "30",
    ]);
    assert!(!out.is_empty());
    let drift = env.run(&["drift", "live"]);
    assert!(drift.status.success(), "{}", show(&drift));
    env.ok(&["rm", "--force", "live"]);
}

/// Regression (issue 17): a non-root user could not reopen /dev/stdout or
/// /dev/stderr (EACCES), so nginx's `error_log /dev/stderr` failed.
fn a_non_root_user_writes_dev_stdout_and_dev_stderr(driver: &str) {
    let Some(env) = box_env() else { return };
    app(
        &env,
        "",
        "user = \"1000:1000\"\nenv = { PATH = \"/bin\" }\n\
         entrypoint = [\"/bin/sh\", \"-c\", \"echo x > /dev/stdout && echo y > /dev/stderr\"]",
    );
    let out = env.run(&["run", "--wait", "--driver", driver, "--name", "io", "app:1"]);
    assert!(out.status.success(), "{}", show(&out));
    // Two streams, read by the monitor as they come: each keeps its own
    // order, not one across them.
    let logs = env.ok(&["logs", "io"]);
    let mut lines: Vec<&str> = logs.lines().collect();
    lines.sort();
    assert_eq!(lines, ["x", "y"], "{logs}");
    env.ok(&["rm", "io"]);
}

/// Regression (issue 17): the embedded runtime refused an image that sets
/// no PATH ("PATH environment variable is not set"), even with an
/// absolute entrypoint; Docker's default is given at run time, so the
/// image (and its digest) stays as built.
fn an_image_without_path_gets_dockers_default(driver: &str) {
    let Some(env) = box_env() else { return };
    // /usr/bin holds the applets, as Debian's busybox would.
    let usr_bin = env.ctx().join("rootfs/usr/bin");
    std::fs::create_dir_all(&usr_bin).unwrap();
    std::os::unix::fs::symlink("/bin/busybox", usr_bin.join("env")).unwrap();
    app(
        &env,
        "",
        "entrypoint = [\"/bin/sh\", \"-c\", \"echo PATH=$PATH\"]",
    );
    let (code, out) = run(&env, driver, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "{out}"
    );
    let config = env.ok(&["inspect", "app:1"]);
    assert!(
        !config.contains("/usr/local/sbin"),
        "the image is untouched"
    );
    // A relative command name is found on it.
    let (code, out) = run(&env, driver, &["--", "env"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("PATH=/usr/local/sbin:"), "{out}");
}

fn a_tmpfs_the_image_cannot_hold_is_refused_clearly(driver: &str) {
    let Some(env) = box_env() else { return };
    app(
        &env,
        "",
        "env = { PATH = \"/bin\" }\nuser = \"65534:65534\"\n\
         entrypoint = [\"/bin/sh\", \"-c\", \"ls -ldn /data /run/app && touch /data/x /run/app/y\"]",
    );
    // A directory the image has (/data), one in /run: both work.
    let (code, out) = run(
        &env,
        driver,
        &["--tmpfs", "/data:1m", "--tmpfs", "/run/app"],
    );
    assert_eq!(code, 0, "{out}");
    let owners: Vec<(String, String)> = dirs(&out).into_iter().map(|d| (d.1, d.2)).collect();
    let nobody = ("65534".to_string(), "65534".to_string());
    assert_eq!(owners, [nobody.clone(), nobody], "{out}");
    // One the image lacks cannot be made in its read-only root.
    let (code, out) = run(&env, driver, &["--tmpfs", "/var/nope"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("tmpfs /var/nope: not a directory in image app:1"),
        "{out}"
    );
}

/// Regression (issue 17): `include = ["data"]` on an empty `data/` dropped
/// it, and a volume could then not mount there.
#[test]
fn an_included_empty_directory_is_kept_and_a_volume_mounts_there() {
    let Some(env) = box_env() else { return };
    env.write_def(
        "[image]\nname = \"app\"\ntag = \"1\"\n\
         [[layer]]\nkind = \"copy\"\nsrc = \"rootfs\"\ndest = \"/\"\ninclude = [\"bin/**\", \"data\"]\n\
         [config]\nenv = { PATH = \"/bin\" }\nentrypoint = [\"/bin/sh\", \"-c\", \"echo ok > /data/f && cat /data/f\"]\n",
    );
    env.build(&["--sign"]);
    let (code, out) = run(&env, "embedded", &["--volume", "d:/data"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok"), "{out}");
}

/// Accounts merge into a base image's /etc/passwd, read from its layer
/// blob; a clash names the account, the file and the layer; and the
/// result is the same bytes every time.
#[test]
fn accounts_merge_into_a_base_image_and_clashes_are_located() {
    let Some(env) = box_env() else { return };
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "box:1"])).unwrap();
    let base = v["digest"].as_str().unwrap().to_string();
    let def = |accounts: &str| {
        format!(
            "[image]\nname = \"app\"\ntag = \"1\"\nbase = {{ image = \"{base}\" }}\n\n{accounts}\n\
             [config]\nuser = \"app\"\n"
        )
    };
    env.write_def(&def("[[account]]\nname = \"app\"\nuid = 10001\n"));
    let first = env.build(&["--sign"]);
    let again = env.build(&["--sign", "--no-cache"]);
    assert_eq!(first, again, "same input, same image");
    let (code, out) = run(&env, "embedded", &["--", "/bin/id", "-u"]);
    assert_eq!((code, out.trim()), (0, "10001"), "{out}");

    env.write_def(&def("[[account]]\nname = \"app\"\nuid = 65534\n"));
    let out = env.run(&[
        "build",
        "-f",
        env.ctx().join("drover.toml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("drover.toml")
            && err.contains("account[0].uid (app)")
            && err.contains(
                "uid 65534 is user \"nobody\"'s in the image's /etc/passwd (from base layer sha256:"
            ),
        "{err}"
    );
}

/// A service's `tmpfs` reaches its instances through the release (a new
/// release when it changes), mounted for the instance's user; a path the
/// image cannot hold fails the rollout naming it.
#[test]
fn a_services_tmpfs_is_part_of_its_release() {
    let Some(env) = common::web_env() else { return };
    let fleet = env.ctx().join("fleet.toml");
    let f = fleet.to_str().unwrap();
    std::fs::write(
        &fleet,
        "[service.web]\nimage = \"web:1\"\nmin_healthy = \"0s\"\n",
    )
    .unwrap();
    env.ok(&["apply", "-f", f]);
    std::fs::write(
        &fleet,
        "[service.web]\nimage = \"web:1\"\nmin_healthy = \"0s\"\ntmpfs = [{ path = \"/run/cache\", size = \"2m\" }]\n",
    )
    .unwrap();
    let plan = env.ok(&["plan", "-f", f]);
    assert!(plan.contains("tmpfs"), "{plan}");
    env.ok(&["apply", "-f", f]);
    let all: Vec<serde_json::Value> = env.items(&["status"]);
    let pid = all[0]["instances"][0]["pid"].as_u64().expect("a pid");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/run/cache"))
        .unwrap_or_else(|| panic!("no /run/cache mount: {mounts}"));
    assert!(
        line.contains("tmpfs") && line.contains("size=2048k") && line.contains("nosuid"),
        "{line}"
    );
    let drift = env.run(&["drift", "web"]);
    assert!(drift.status.success(), "{}", show(&drift));

    std::fs::write(
        &fleet,
        "[service.web]\nimage = \"web:1\"\nmin_healthy = \"0s\"\ntmpfs = [\"/var/nope\"]\n",
    )
    .unwrap();
    let out = env.run(&["apply", "-f", f]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tmpfs /var/nope: not a directory in image"),
        "{}",
        show(&out)
    );
}
