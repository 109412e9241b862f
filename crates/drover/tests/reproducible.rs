//! Reproducibility through the real binary: the same definition and inputs
//! give the same manifest digest whatever the build directory, umask, source
//! mtimes and atimes, directory read order, hostname, user, clock, locale,
//! thread count or cache state — and a real change to the inputs changes it.
//!
//! Every condition builds the same logical tree in a new temp dir and a new
//! store (unless the condition *is* the store's state) and is compared with
//! one reference build of `sample_tree`.
use crate::common;
use common::*;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A named condition: builds the sample image under it in the given scratch
/// dir and returns the digest, or `None` when this host cannot set it up.
type Case = (&'static str, fn(&Path) -> Option<String>);

/// Conditions that must not change the digest.
const SAME_DIGEST: &[Case] = &[
    ("context at a deeper path with spaces", |t| {
        let ctx = t.join("a/much/deeper/build dir with spaces/ctx");
        sample_ctx(&ctx);
        Some(digest(drover(&t.join("store"), &ctx, &[])))
    }),
    (
        "relative --store and -f, run from inside the context",
        |t| {
            let ctx = t.join("ctx");
            sample_ctx(&ctx);
            let mut c = Command::new(DROVER);
            c.current_dir(&ctx)
                .args([
                    "--init",
                    "--store",
                    "../store",
                    "build",
                    "-f",
                    "drover.toml",
                ])
                .env_remove("SOURCE_DATE_EPOCH")
                .env_remove("DROVER_STORE");
            Some(digest(c))
        },
    ),
    (
        "modes as under umask 077 (files 0600, executables and dirs 0700)",
        |t| {
            let ctx = t.join("ctx");
            sample_ctx(&ctx);
            chmod_tree(&ctx.join("rootfs"), 0o600, 0o700, 0o700);
            Some(digest(drover(&t.join("store"), &ctx, &[])))
        },
    ),
    ("tree copied by `cp -R` under a real umask 077", |t| {
        sample_tree(&t.join("staging"));
        let ctx = t.join("ctx");
        let sh = "umask 077 && mkdir -p \"$1\" && cp -R --preserve=links \"$0\"/. \"$1\"";
        run_ok(
            Command::new("sh")
                .args(["-c", sh])
                .arg(t.join("staging"))
                .arg(ctx.join("rootfs")),
        );
        let mode = fs::metadata(ctx.join("rootfs/bin/tool")).unwrap().mode() & 0o777;
        assert_eq!(
            mode, 0o700,
            "cp under umask 077 should give 0700 executables"
        );
        write(&ctx.join("drover.toml"), SIMPLE_DEF.as_bytes(), 0o600);
        Some(digest(drover(&t.join("store"), &ctx, &[])))
    }),
    (
        "modes as under umask 000 (files 0666, executables and dirs 0777)",
        |t| {
            let ctx = t.join("ctx");
            sample_ctx(&ctx);
            chmod_tree(&ctx.join("rootfs"), 0o666, 0o777, 0o777);
            Some(digest(drover(&t.join("store"), &ctx, &[])))
        },
    ),
    ("files owned by uid:gid 1234:5678", |t| {
        if !is_root() {
            return None;
        }
        let ctx = t.join("ctx");
        sample_ctx(&ctx);
        run_ok(
            Command::new("chown")
                .args(["-hR", "1234:5678"])
                .arg(ctx.join("rootfs")),
        );
        Some(digest(drover(&t.join("store"), &ctx, &[])))
    }),
    ("random past mtimes", |t| {
        let ctx = t.join("ctx");
        sample_ctx(&ctx);
        let mut rng = Rng::seeded();
        eprintln!("random past mtimes: seed {}", rng.0);
        for p in walk(&ctx.join("rootfs")).iter().rev() {
            // Anywhere from 1970 to 2023, with nanoseconds.
            let when = format!(
                "@{}.{:09}",
                rng.below(1_700_000_000),
                rng.below(1_000_000_000)
            );
            run_ok(Command::new("touch").args(["-h", "-m", "-d", &when]).arg(p));
        }
        Some(digest(drover(&t.join("store"), &ctx, &[])))
    }),
    ("atimes changed (read, then set to 2001)", |t| {
        let ctx = t.join("ctx");
        sample_ctx(&ctx);
        for p in walk(&ctx.join("rootfs")) {
            if p.is_file() {
                fs::read(&p).unwrap();
            }
            run_ok(
                Command::new("touch")
                    .args(["-h", "-a", "-d", "@1000000000"])
                    .arg(&p),
            );
        }
        Some(digest(drover(&t.join("store"), &ctx, &[])))
    }),
    ("files created in reverse order", |t| {
        sample_tree(&t.join("staging"));
        let ctx = t.join("ctx");
        copy_tree(&t.join("staging"), &ctx.join("rootfs"), true);
        write(&ctx.join("drover.toml"), SIMPLE_DEF.as_bytes(), 0o644);
        Some(digest(drover(&t.join("store"), &ctx, &[])))
    }),
    (
        "on tmpfs, created in sorted order (read back newest first)",
        |_| tmpfs_build(false),
    ),
    (
        "on tmpfs, created in reverse order (read back in sorted order)",
        |_| tmpfs_build(true),
    ),
    ("hostname changed (unshare --uts)", |t| {
        if !is_root() || !have("unshare") {
            return None;
        }
        let ctx = t.join("ctx");
        sample_ctx(&ctx);
        let sh = "hostname drover-elsewhere.example && exec \"$@\"";
        Some(digest(under(
            &["unshare", "--uts", "sh", "-c", sh, "sh"],
            drover(&t.join("store"), &ctx, &[]),
        )))
    }),
    (
        "another user's environment (HOME, USER, LOGNAME, SUDO_USER, DROVER_ACTOR)",
        |t| {
            let ctx = t.join("ctx");
            sample_ctx(&ctx);
            let mut c = drover(&t.join("store"), &ctx, &[]);
            c.env("HOME", t.join("home-of-mallory"))
                .env("USER", "mallory")
                .env("LOGNAME", "mallory")
                .env("SUDO_USER", "trent")
                .env("DROVER_ACTOR", "ci-bot@elsewhere");
            Some(digest(c))
        },
    ),
    ("run as uid 65534 (setpriv)", |t| {
        if !is_root() || !have("setpriv") {
            return None;
        }
        let ctx = t.join("ctx");
        sample_ctx(&ctx);
        run_ok(Command::new("chown").args(["-hR", "65534:65534"]).arg(t));
        let mut c = under(
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ],
            drover(&t.join("store"), &ctx, &[]),
        );
        c.env("HOME", "/nonexistent")
            .env("USER", "nobody")
            .env("LOGNAME", "nobody");
        Some(digest(c))
    }),
    (
        "TZ=Pacific/Kiritimati, built 1.1 s after the reference",
        |t| {
            let ctx = t.join("ctx");
            sample_ctx(&ctx);
            std::thread::sleep(Duration::from_millis(1100));
            let mut c = drover(&t.join("store"), &ctx, &[]);
            c.env("TZ", "Pacific/Kiritimati");
            Some(digest(c))
        },
    ),
    ("clock set to 2038 (faketime)", |t| {
        if !have("faketime") {
            return None;
        }
        let ctx = t.join("ctx");
        sample_ctx(&ctx);
        Some(digest(under(
            &["faketime", "2038-01-01 00:00:00"],
            drover(&t.join("store"), &ctx, &[]),
        )))
    }),
    ("--threads 1 (and RAYON_NUM_THREADS=1)", |t| {
        let ctx = t.join("ctx");
        sample_ctx(&ctx);
        let mut c = drover(&t.join("store"), &ctx, &["--threads", "1"]);
        c.env("RAYON_NUM_THREADS", "1");
        Some(digest(c))
    }),
    ("--threads 7", |t| {
        let ctx = t.join("ctx");
        sample_ctx(&ctx);
        Some(digest(drover(&t.join("store"), &ctx, &["--threads", "7"])))
    }),
    ("cached rebuild, then --no-cache, in the same store", |t| {
        let ctx = t.join("ctx");
        sample_ctx(&ctx);
        let store = t.join("store");
        let first = digest(drover(&store, &ctx, &[]));
        let cached = digest(drover(&store, &ctx, &[]));
        let uncached = digest(drover(&store, &ctx, &["--no-cache"]));
        assert_eq!(first, cached, "cached rebuild");
        assert_eq!(first, uncached, "--no-cache rebuild");
        Some(uncached)
    }),
    ("a store that already holds other images", |t| {
        let store = t.join("store");
        let other = t.join("other");
        write(
            &other.join("rootfs/srv/index.html"),
            b"<h1>other</h1>\n",
            0o644,
        );
        write(&other.join("rootfs/etc/motd"), b"something else\n", 0o644);
        write(
            &other.join("drover.toml"),
            SIMPLE_DEF.replace("\"sample\"", "\"other\"").as_bytes(),
            0o644,
        );
        digest(drover(&store, &other, &[]));
        digest(drover(
            &store,
            &other,
            &["--compression", "zstd", "--tag", "other:zstd"],
        ));
        let ctx = t.join("ctx");
        sample_ctx(&ctx);
        Some(digest(drover(&store, &ctx, &[])))
    }),
    ("layer cache holds an older build of the same layers", |t| {
        let ctx = t.join("ctx");
        sample_ctx(&ctx);
        let store = t.join("store");
        let data = ctx.join("rootfs/usr/share/data.bin");
        let original = fs::read(&data).unwrap();
        let mut edited = original.clone();
        edited.extend_from_slice(&[7; 1000]);
        fs::write(&data, &edited).unwrap();
        write(&ctx.join("rootfs/etc/extra"), b"extra\n", 0o644);
        digest(drover(&store, &ctx, &[]));
        fs::write(&data, &original).unwrap();
        fs::remove_file(ctx.join("rootfs/etc/extra")).unwrap();
        Some(digest(drover(&store, &ctx, &[])))
    }),
    ("LANG=C LC_ALL=C", |t| {
        let ctx = t.join("ctx");
        sample_ctx(&ctx);
        let mut c = drover(&t.join("store"), &ctx, &[]);
        c.env("LANG", "C").env("LC_ALL", "C");
        Some(digest(c))
    }),
    ("LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8", |t| {
        let ctx = t.join("ctx");
        sample_ctx(&ctx);
        let mut c = drover(&t.join("store"), &ctx, &[]);
        c.env("LANG", "en_US.UTF-8").env("LC_ALL", "en_US.UTF-8");
        Some(digest(c))
    }),
    ("stat cache warm (hashes trusted, no file read)", |t| {
        let ctx = t.join("ctx");
        sample_ctx(&ctx);
        let store = t.join("store");
        // Past the racy window, so the first build's hashes are trusted.
        std::thread::sleep(Duration::from_millis(2100));
        let cold = build_json(&store, &ctx);
        let warm = build_json(&store, &ctx);
        assert_eq!(
            warm["hashed_bytes"], 0,
            "the warm rebuild read files: {warm}"
        );
        assert_eq!(cold["digest"], warm["digest"]);
        Some(warm["digest"].as_str().unwrap().to_string())
    }),
    (
        "definition reformatted (comments, key order, spacing)",
        |t| {
            let ctx = t.join("ctx");
            sample_tree(&ctx.join("rootfs"));
            let def = r#"
            # The same image, written differently.
            [config]
            ports   = [ "8080/tcp" ]
            env     = { PATH = "/bin" }   # only PATH
            entrypoint = [ "/bin/tool" ]

            [image]
            tag  = "1.0"
            name = "sample"

            [[layer]]
            dest = "/"
            src  = "rootfs"
            kind = "copy"

            [[layer]]
            content = """hello
"""
            dest = "/etc/greeting"
            kind = "file"
        "#;
            write(&ctx.join("drover.toml"), def.as_bytes(), 0o644);
            Some(digest(drover(&t.join("store"), &ctx, &[])))
        },
    ),
];

#[test]
fn same_inputs_give_the_same_digest_under_every_condition() {
    assert!(SAME_DIGEST.len() >= 12);
    let reference = sample_env().build(&[]);
    let (mut failures, mut skipped) = (Vec::new(), Vec::new());
    for (name, case) in SAME_DIGEST {
        let t = tempfile::tempdir().unwrap();
        match catch_unwind(AssertUnwindSafe(|| case(t.path()))) {
            Ok(Some(d)) if d == reference => {}
            Ok(Some(d)) => failures.push(format!("{name}: {d}, reference {reference}")),
            Ok(None) => skipped.push(*name),
            Err(_) => failures.push(format!("{name}: failed to build (panic above)")),
        }
    }
    if !skipped.is_empty() {
        eprintln!("skipped (this host cannot set them up): {skipped:?}");
    }
    assert!(
        failures.is_empty(),
        "digest differs from the reference under:\n{}",
        failures.join("\n")
    );
}

#[test]
fn zstd_is_reproducible_too() {
    let gzip = sample_env().build(&[]);
    let reference = sample_env().build(&["--compression", "zstd"]);
    assert_ne!(reference, gzip, "zstd and gzip layers are different blobs");

    // Many conditions at once: deeper path, umask 077, reverse order, one thread.
    let t = tempfile::tempdir().unwrap();
    sample_tree(&t.path().join("staging"));
    let ctx = t.path().join("some/other/ctx");
    copy_tree(&t.path().join("staging"), &ctx.join("rootfs"), true);
    chmod_tree(&ctx.join("rootfs"), 0o600, 0o700, 0o700);
    write(&ctx.join("drover.toml"), SIMPLE_DEF.as_bytes(), 0o600);
    let mut c = drover(
        &t.path().join("store"),
        &ctx,
        &["--compression", "zstd", "--threads", "1"],
    );
    c.env("TZ", "Pacific/Kiritimati")
        .env("DROVER_ACTOR", "someone-else");
    assert_eq!(digest(c), reference, "zstd under other conditions");
    assert_eq!(
        digest(drover(
            &t.path().join("store"),
            &ctx,
            &["--compression", "zstd", "--no-cache", "--threads", "7"]
        )),
        reference,
        "zstd --no-cache --threads 7"
    );

    // `compression = "zstd"` in the definition is the same as the flag.
    let env = Env::new();
    sample_tree(&env.ctx().join("rootfs"));
    env.write_def(&SIMPLE_DEF.replace("tag = \"1.0\"", "tag = \"1.0\"\ncompression = \"zstd\""));
    assert_eq!(
        env.build(&[]),
        reference,
        "compression set in the definition"
    );
}

#[test]
fn source_date_epoch_changes_the_digest_reproducibly() {
    let default = sample_env().build(&[]);
    let with_epoch = |extra: &[&str]| {
        let env = sample_env();
        let mut c = drover(&env.store(), &env.ctx(), extra);
        c.env("SOURCE_DATE_EPOCH", "1700000000");
        digest(c)
    };
    let first = with_epoch(&[]);
    let second = with_epoch(&["--threads", "1"]);
    assert_ne!(
        first, default,
        "SOURCE_DATE_EPOCH=1700000000 must change the timestamps"
    );
    assert_eq!(first, second, "SOURCE_DATE_EPOCH=1700000000 twice");
    let flag = sample_env().build(&["--source-date-epoch", "1700000000"]);
    assert_eq!(
        flag, first,
        "--source-date-epoch is the same as the variable"
    );
}

/// A named edit of the sample context (tree or definition).
type Edit = (&'static str, fn(&Path));

const CHANGES: &[Edit] = &[
    ("one byte of a small file", |ctx| {
        fs::write(ctx.join("rootfs/etc/motd"), b"welcomE\n").unwrap();
    }),
    ("one byte in the middle of a large file", |ctx| {
        let path = ctx.join("rootfs/usr/share/data.bin");
        let mut data = fs::read(&path).unwrap();
        data[150_000] ^= 1;
        fs::write(&path, data).unwrap();
    }),
    ("a file added", |ctx| {
        write(&ctx.join("rootfs/etc/added.conf"), b"x = 1\n", 0o644)
    }),
    ("a file removed", |ctx| {
        fs::remove_file(ctx.join("rootfs/etc/app/config.toml")).unwrap()
    }),
    ("an empty directory removed", |ctx| {
        fs::remove_dir(ctx.join("rootfs/var/empty")).unwrap()
    }),
    ("a file renamed", |ctx| {
        fs::rename(ctx.join("rootfs/bin/tool"), ctx.join("rootfs/bin/tool2")).unwrap()
    }),
    // Special bits are not umask noise: a setuid binary or a sticky /tmp
    // must reach the image as they are.
    ("setuid bit on an executable", |ctx| {
        fs::set_permissions(
            ctx.join("rootfs/bin/tool"),
            fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
    }),
    ("sticky bit on a directory", |ctx| {
        fs::set_permissions(
            ctx.join("rootfs/var/empty"),
            fs::Permissions::from_mode(0o1777),
        )
        .unwrap();
    }),
    ("executable bit set (0644 -> 0755)", |ctx| {
        fs::set_permissions(
            ctx.join("rootfs/usr/share/data.bin"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }),
    ("symlink target changed", |ctx| {
        let link = ctx.join("rootfs/bin/motd-link");
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("../etc/motd.hard", &link).unwrap();
    }),
    ("hard link replaced by a copy", |ctx| {
        let hard = ctx.join("rootfs/etc/motd.hard");
        fs::remove_file(&hard).unwrap();
        write(&hard, b"welcome\n", 0o644);
    }),
    ("definition's env changed", |ctx| {
        edit_def(ctx, "PATH = \"/bin\"", "PATH = \"/usr/bin\"")
    }),
    ("file layer's content changed", |ctx| {
        edit_def(ctx, "content = \"hello\\n\"", "content = \"hallo\\n\"")
    }),
    ("gzip level 6 instead of the default", |ctx| {
        edit_def(ctx, "tag = \"1.0\"", "tag = \"1.0\"\ncompression_level = 6")
    }),
];

#[test]
fn a_real_change_changes_the_digest() {
    let reference = sample_env().build(&[]);
    let mut seen: Vec<(&str, String)> = Vec::new();
    let mut failures = Vec::new();
    for (name, edit) in CHANGES {
        let env = sample_env();
        assert_eq!(env.build(&[]), reference, "{name}: the unedited tree");
        edit(&env.ctx());
        // An incremental rebuild in the same store must agree with a clean one.
        let incremental = env.build(&[]);
        let clean = digest(drover(&env.dir.path().join("clean-store"), &env.ctx(), &[]));
        if incremental != clean {
            failures.push(format!(
                "{name}: incremental rebuild {incremental} != clean build {clean}"
            ));
        }
        if clean == reference {
            failures.push(format!("{name}: digest did not change ({clean})"));
        }
        if let Some((other, _)) = seen.iter().find(|(_, d)| *d == clean) {
            failures.push(format!("{name}: same digest as \"{other}\" ({clean})"));
        }
        seen.push((name, clean));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Regression: the stat cache must not trust (size, mtime) alone. A same-size
/// edit that restores the old mtime moves ctime, so the file is hashed again.
#[test]
fn same_size_edit_with_restored_mtime_is_seen_on_immediate_rebuild() {
    let env = sample_env();
    let before = env.build(&[]);
    sneaky_edit(&env.ctx().join("rootfs/etc/motd"), b"WELCOME\n", false);
    let after = env.build(&[]);
    assert_ne!(
        after, before,
        "same-size edit with the mtime restored was missed"
    );
    let clean = digest(drover(&env.dir.path().join("clean-store"), &env.ctx(), &[]));
    assert_eq!(
        after, clean,
        "incremental rebuild differs from a clean build of the edited tree"
    );
}

/// The same, once the cached hashes are past the racy window and trusted, so
/// the racily-clean rule cannot be what catches the edit: an in-place edit
/// (ctime moves) and a replace-by-rename (inode changes), both same size with
/// the mtime restored.
#[test]
fn same_size_edit_with_restored_mtime_is_seen_when_hashes_are_trusted() {
    let env = sample_env();
    let (store, ctx) = (env.store(), env.ctx());
    std::thread::sleep(Duration::from_millis(2500));
    let first = build_json(&store, &ctx);
    let warm = build_json(&store, &ctx);
    assert_eq!(
        warm["hashed_bytes"], 0,
        "precondition: hashes trusted, nothing re-read: {warm}"
    );
    assert_eq!(warm["digest"], first["digest"]);

    sneaky_edit(&ctx.join("rootfs/etc/motd"), b"WELCOME\n", false);
    let in_place = build_json(&store, &ctx);
    assert_ne!(
        in_place["digest"], first["digest"],
        "in-place same-size edit was missed"
    );
    assert!(in_place["hashed_bytes"].as_u64().unwrap() > 0, "{in_place}");
    let clean = digest(drover(&env.dir.path().join("clean-1"), &ctx, &[]));
    assert_eq!(
        in_place["digest"],
        clean.as_str(),
        "after the in-place edit"
    );

    // data.bin was last changed before the sleep: its cached hash is trusted.
    let path = ctx.join("rootfs/usr/share/data.bin");
    let mut data = fs::read(&path).unwrap();
    data[1234] ^= 0xff;
    sneaky_edit(&path, &data, true);
    let renamed = build_json(&store, &ctx);
    assert_ne!(
        renamed["digest"], in_place["digest"],
        "same-size replace-by-rename was missed"
    );
    let clean = digest(drover(&env.dir.path().join("clean-2"), &ctx, &[]));
    assert_eq!(
        renamed["digest"],
        clean.as_str(),
        "after the replace-by-rename"
    );
}

// ---- helpers ----

/// `drover --store <store> build -f <ctx>/drover.toml <extra>`, without
/// SOURCE_DATE_EPOCH from the test's environment.
fn drover(store: &Path, ctx: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(DROVER);
    c.arg("--init")
        .arg("--store")
        .arg(store)
        .arg("build")
        .arg("-f")
        .arg(ctx.join("drover.toml"));
    c.args(extra)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("DROVER_STORE");
    c
}

/// Run a build; panic with its output if it fails; return the digest it printed.
fn digest(mut c: Command) -> String {
    let out = c.output().expect("run drover");
    assert!(out.status.success(), "{c:?} failed:\n{}", show(&out));
    last_line(&String::from_utf8_lossy(&out.stdout))
}

/// `drover --json build` in `store`; the build outcome.
fn build_json(store: &Path, ctx: &Path) -> serde_json::Value {
    let mut c = drover(store, ctx, &[]);
    c.arg("--json");
    let out = c.output().expect("run drover");
    assert!(out.status.success(), "{c:?} failed:\n{}", show(&out));
    doc(&String::from_utf8_lossy(&out.stdout))
}

/// `c` run through a wrapper command line (`unshare ...`, `setpriv ...`).
fn under(prefix: &[&str], c: Command) -> Command {
    let mut w = Command::new(prefix[0]);
    w.args(&prefix[1..]).arg(c.get_program()).args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    w
}

fn run_ok(c: &mut Command) {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(out.status.success(), "{c:?} failed:\n{}", show(&out));
}

fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The sample tree under `ctx/rootfs` and `SIMPLE_DEF` as `ctx/drover.toml`.
fn sample_ctx(ctx: &Path) {
    sample_tree(&ctx.join("rootfs"));
    write(&ctx.join("drover.toml"), SIMPLE_DEF.as_bytes(), 0o644);
}

fn edit_def(ctx: &Path, from: &str, to: &str) {
    let path = ctx.join("drover.toml");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from:?} not in the definition");
    fs::write(&path, text.replace(from, to)).unwrap();
}

/// Everything under `root` (not `root` itself), sorted, symlinks not followed.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut names: Vec<_> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        out.push(p.clone());
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

/// Set every regular file to `file` (or `exec` if it has an execute bit) and
/// every directory to `dir`, as a checkout under another umask would.
fn chmod_tree(root: &Path, file: u32, exec: u32, dir: u32) {
    // Deepest first, so a 0600-style dir mode never locks us out (we may not be root).
    for p in walk(root).iter().rev() {
        let m = fs::symlink_metadata(p).unwrap();
        let mode = if m.is_dir() {
            dir
        } else if m.is_file() {
            if m.mode() & 0o111 != 0 { exec } else { file }
        } else {
            continue;
        };
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// Recreate `src` at `dst` entry by entry, in sorted or reverse-sorted
/// order: same files, modes, symlinks and hard links, different creation
/// order (and so, on tmpfs, a different directory read order).
fn copy_tree(src: &Path, dst: &Path, reverse: bool) {
    let mut entries = walk(src);
    if reverse {
        entries.reverse();
    }
    fs::create_dir_all(dst).unwrap();
    let mut inodes: Vec<(u64, PathBuf)> = Vec::new();
    let mut dirs = Vec::new();
    for p in entries {
        let to = dst.join(p.strip_prefix(src).unwrap());
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            fs::create_dir_all(&to).unwrap();
            dirs.push((to, m.mode()));
        } else if m.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&p).unwrap(), &to).unwrap();
        } else if let Some((_, first)) = inodes.iter().find(|(ino, _)| *ino == m.ino()) {
            fs::hard_link(first, &to).unwrap();
        } else {
            write(&to, &fs::read(&p).unwrap(), m.mode() & 0o7777);
            inodes.push((m.ino(), to));
        }
    }
    for (d, mode) in dirs {
        fs::set_permissions(d, fs::Permissions::from_mode(mode & 0o7777)).unwrap();
    }
}

/// The sample context created on tmpfs, in sorted or reverse order; tmpfs
/// lists a directory newest first, so the build reads it in that order.
fn tmpfs_build(reverse: bool) -> Option<String> {
    let shm = Path::new("/dev/shm");
    let fs_type = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(shm)
        .output()
        .ok()?;
    if String::from_utf8_lossy(&fs_type.stdout).trim() != "tmpfs" {
        return None;
    }
    let t = tempfile::tempdir_in(shm).ok()?;
    let t = t.path();
    sample_tree(&t.join("staging"));
    let ctx = t.join("ctx");
    copy_tree(&t.join("staging"), &ctx.join("rootfs"), reverse);
    write(&ctx.join("drover.toml"), SIMPLE_DEF.as_bytes(), 0o644);
    // Tell if the condition does not hold here (tmpfs has listed entries
    // newest first for years, but that is not a promise).
    let read: Vec<_> = fs::read_dir(ctx.join("rootfs/etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut sorted = read.clone();
    sorted.sort();
    if !reverse {
        sorted.reverse();
    }
    if read != sorted {
        eprintln!("tmpfs on this kernel does not list entries newest first: {read:?}");
    }
    Some(digest(drover(&t.join("store"), &ctx, &[])))
}

/// Overwrite `path` with `content` of the same size and put its mtime back,
/// to the nanosecond — in place, or by writing a new file and renaming it over.
fn sneaky_edit(path: &Path, content: &[u8], by_rename: bool) {
    let old = fs::metadata(path).unwrap();
    assert_eq!(
        old.len(),
        content.len() as u64,
        "the edit must keep the size"
    );
    if by_rename {
        let tmp = path.with_extension("new");
        write(&tmp, content, old.mode() & 0o7777);
        fs::rename(&tmp, path).unwrap();
    } else {
        fs::write(path, content).unwrap();
    }
    let when = format!("@{}.{:09}", old.mtime(), old.mtime_nsec());
    run_ok(Command::new("touch").args(["-m", "-d", &when]).arg(path));
    let new = fs::metadata(path).unwrap();
    assert_eq!(
        (new.mtime(), new.mtime_nsec(), new.len()),
        (old.mtime(), old.mtime_nsec(), old.len())
    );
    assert_eq!(fs::read(path).unwrap(), content);
}

/// xorshift64*, seeded from the clock; the seed is printed so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Rng(u64::from(nanos) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}
