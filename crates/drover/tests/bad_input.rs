//! Bad build input is refused, by path (or `file:line:column` and key for a
//! definition), with exit 2 — and the store is left exactly as it was: no new
//! blob or tag, no ledger entry, `verify` and `audit verify` still pass.
//!
//! Each case starts from a store that already holds one build, so "unchanged"
//! means something.
use crate::common;
use common::*;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

/// Everything a refused build must leave as it found it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    tags: Vec<(String, String)>,
    ledger: usize,
    blobs: Vec<String>,
    tmp: Vec<String>,
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn snapshot(env: &Env) -> Snapshot {
    let images = env.items(&["images"]);
    let tags = images
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let ledger = env.items(&["audit"]);
    Snapshot {
        tags,
        ledger: ledger.len(),
        blobs: names(&env.store().join("blobs/sha256")),
        tmp: names(&env.store().join("tmp")),
    }
}

/// `sample_env()` with one successful build in its store.
fn built_env() -> Env {
    let env = sample_env();
    env.build(&[]);
    env
}

/// A definition with one copy layer from `src`; `extra` is line 9, inside the layer table.
fn copy_def(src: &str, extra: &str) -> String {
    format!(
        "[image]\nname = \"sample\"\ntag = \"1.0\"\n\n[[layer]]\nkind = \"copy\"\nsrc = {src:?}\ndest = \"/\"\n{extra}\n"
    )
}

/// Run the build; expect exit `code`, stderr naming every needle, and the store unchanged and valid.
fn refused(env: &Env, code: i32, needles: &[&str]) {
    let before = snapshot(env);
    let def = env.ctx().join("drover.toml");
    let out = env.run(&["build", "-f", def.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(code),
        "wrong exit code:\n{}",
        show(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for n in needles {
        assert!(
            stderr.contains(n),
            "stderr does not name {n:?}:\n{}",
            show(&out)
        );
    }
    assert_eq!(snapshot(env), before, "a refused build changed the store");
    env.ok(&["verify"]);
    env.ok(&["audit", "verify"]);
}

/// The context's absolute, canonical path joined with `rel`, as drover reports it.
fn in_ctx(env: &Env, rel: &str) -> String {
    env.ctx()
        .canonicalize()
        .unwrap()
        .join(rel)
        .display()
        .to_string()
}

#[test]
fn src_climbing_out_with_dotdot_is_refused() {
    let env = built_env();
    env.write_def(&copy_def("../x", ""));
    refused(&env, 2, &["drover.toml:7:7", "layer[0].src", "\"../x\""]);
}

#[test]
fn absolute_src_is_refused() {
    let env = built_env();
    env.write_def(&copy_def("/etc", ""));
    refused(&env, 2, &["drover.toml:7:7", "layer[0].src", "\"/etc\""]);
}

#[test]
fn src_symlink_to_a_directory_outside_the_context_is_refused() {
    let env = built_env();
    let outside = env.dir.path().join("outside");
    write(&outside.join("secret"), b"not for the image\n", 0o644);
    std::os::unix::fs::symlink(&outside, env.ctx().join("link")).unwrap();
    env.write_def(&copy_def("link", ""));
    refused(
        &env,
        2,
        &[&in_ctx(&env, "link"), "outside the build context"],
    );
}

#[test]
fn missing_src_names_the_path() {
    let env = built_env();
    env.write_def(&copy_def("no-such-dir", ""));
    refused(&env, 2, &[&in_ctx(&env, "no-such-dir"), "does not exist"]);
}

#[test]
fn symlink_inside_the_tree_is_stored_as_a_link_not_followed() {
    let env = sample_env();
    std::os::unix::fs::symlink("/etc/passwd", env.ctx().join("rootfs/pw")).unwrap();
    env.build(&[]);
    let baseline: serde_json::Value = env.json(&["baseline", "sample:1.0"]);
    let pw = baseline["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/pw")
        .unwrap_or_else(|| panic!("/pw missing from the baseline:\n{baseline:#}"));
    assert_eq!(pw["type"], "symlink", "{pw}");
    assert_eq!(pw["link"], "/etc/passwd", "{pw}");
    assert_eq!(pw["size"], 0, "{pw}");
    assert!(
        pw.get("sha256").is_none(),
        "a symlink has no content hash: {pw}"
    );

    // The layer itself holds a link entry, not /etc/passwd's bytes.
    if require("tar") {
        let inspect: serde_json::Value =
            serde_json::from_str(&env.ok(&["inspect", "sample:1.0"])).unwrap();
        let layer = inspect["manifest"]["layers"][0]["digest"].as_str().unwrap();
        let blob = env
            .store()
            .join("blobs/sha256")
            .join(layer.strip_prefix("sha256:").unwrap());
        let out = Command::new("tar")
            .arg("-tvzf")
            .arg(&blob)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        let listing = String::from_utf8_lossy(&out.stdout);
        let line = listing
            .lines()
            .find(|l| l.contains("pw ->"))
            .unwrap_or_else(|| panic!("no pw link in:\n{listing}"));
        assert!(
            line.starts_with('l') && line.ends_with("pw -> /etc/passwd"),
            "{line}"
        );
    }
    env.ok(&["verify"]);
}

#[test]
fn socket_in_the_tree_is_refused_by_path() {
    let env = built_env();
    let path = env.ctx().join("rootfs/etc/app.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    refused(&env, 2, &[&in_ctx(&env, "rootfs/etc/app.sock"), "a socket"]);
}

#[test]
fn fifo_in_the_tree_is_refused_by_path() {
    let env = built_env();
    let path = env.ctx().join("rootfs/var/fifo");
    let out = Command::new("mkfifo").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    refused(&env, 2, &[&in_ctx(&env, "rootfs/var/fifo"), "a fifo"]);
}

#[test]
fn device_node_in_the_tree_is_refused_by_path() {
    let env = built_env();
    let path = env.ctx().join("rootfs/null");
    let out = Command::new("mknod")
        .arg(&path)
        .args(["c", "1", "3"])
        .output()
        .unwrap();
    if !out.status.success() {
        assert!(
            std::env::var_os("CI").is_none(),
            "mknod failed in CI:\n{}",
            show(&out)
        );
        eprintln!("skipping: cannot mknod (not root?): {}", show(&out));
        return;
    }
    refused(&env, 2, &[&in_ctx(&env, "rootfs/null"), "a device node"]);
}

#[test]
fn non_utf8_file_name_is_refused_by_path() {
    let env = built_env();
    let name = std::ffi::OsStr::from_bytes(b"bad-\xff-name.txt");
    write(&env.ctx().join("rootfs/etc").join(name), b"x\n", 0o644);
    // drover prints the path lossily: the invalid byte becomes U+FFFD.
    let shown = in_ctx(&env, "rootfs/etc/bad-\u{FFFD}-name.txt");
    refused(&env, 2, &[&shown, "not valid UTF-8"]);
}

#[test]
fn unknown_key_names_file_line_column_and_key() {
    let env = built_env();
    env.write_def(&copy_def("rootfs", "colour = \"red\""));
    refused(
        &env,
        2,
        &["drover.toml:9:1:", "layer[0].colour", "unknown key"],
    );
}

#[test]
fn bad_mode_names_file_line_column_and_key() {
    let env = built_env();
    env.write_def(&copy_def("rootfs", "mode = \"0999\""));
    refused(
        &env,
        2,
        &[
            "drover.toml:9:8:",
            "layer[0].mode",
            "\"0999\"",
            "not an octal mode",
        ],
    );
}

#[test]
fn toml_syntax_error_names_file_and_line() {
    let env = built_env();
    env.write_def(&copy_def("rootfs", "mode = \"0644"));
    refused(&env, 2, &["drover.toml:9:", "invalid TOML"]);
}

/// Regression (issue 15): `serve --drift-rate lots` exited 1, as if drover
/// had failed, because the rate was parsed after the arguments, by a parser
/// of its own. Every value drover's grammars read from a flag is a usage
/// error (exit 2) naming the value, before anything runs.
#[test]
fn bad_flag_values_exit_2_and_name_the_value() {
    let env = Env::new();
    for args in [
        &["serve", "--drift-rate", "lots"][..],
        &["serve", "--drift-rate", "1.5g"],
        &["serve", "--interval", "5"],
        &["serve", "--admin", "nowhere"],
        &["run", "--memory", "256q", "app:1"],
        &["run", "--tmp-size", "0", "app:1"],
    ] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}:\n{}", show(&out));
        let bad = args[2];
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("{bad:?}")),
            "{args:?} does not name {bad:?}:\n{}",
            show(&out)
        );
    }
}
