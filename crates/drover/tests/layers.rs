//! What a layer holds: include/exclude globs, mode and owner overrides,
//! extended attributes, a single-file copy, and a base image from the store.
use crate::common;

use std::fs;
use std::process::Command;

use common::*;

fn baseline(env: &Env, reference: &str) -> serde_json::Value {
    env.json(&["baseline", reference])
}

/// The baseline record of `path`, if the image has it.
fn record<'a>(b: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    b["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
}

#[test]
fn include_and_exclude_globs_pick_the_files() {
    let env = Env::new();
    sample_tree(&env.ctx().join("rootfs"));
    write(
        &env.ctx().join("rootfs/etc/app/cache.tmp"),
        b"scratch\n",
        0o644,
    );
    write(&env.ctx().join("rootfs/etc/notes.tmp"), b"scratch\n", 0o644);
    env.write_def(
        r#"
[image]
name = "globs"

[[layer]]
kind = "copy"
src = "rootfs"
dest = "/"
include = ["etc/**", "bin/*"]
exclude = ["**/*.tmp", "etc/app"]
"#,
    );
    env.build(&[]);
    let b = baseline(&env, "globs");
    for kept in ["/etc/motd", "/etc/motd.hard", "/bin/tool", "/bin/motd-link"] {
        assert!(record(&b, kept).is_some(), "{kept} missing:\n{b:#}");
    }
    for dropped in [
        "/etc/notes.tmp",
        "/etc/app",
        "/etc/app/config.toml",
        "/etc/app/cache.tmp",
        "/usr/share/data.bin",
        "/usr",
        "/var/empty",
    ] {
        assert!(
            record(&b, dropped).is_none(),
            "{dropped} should be excluded:\n{b:#}"
        );
    }
}

#[test]
fn mode_dir_mode_and_owner_overrides_apply_to_the_whole_layer() {
    let env = Env::new();
    sample_tree(&env.ctx().join("rootfs"));
    env.write_def(
        r##"
[image]
name = "owned"

[[layer]]
kind = "copy"
src = "rootfs"
dest = "/srv/app"
mode = "0640"
dir_mode = "0750"
owner = "1000:2000"

[[layer]]
kind = "file"
dest = "/srv/app/run.sh"
content = "#!/bin/sh\n"
mode = "0755"
owner = "1:1"
"##,
    );
    env.build(&[]);
    let b = baseline(&env, "owned");
    let motd = record(&b, "/srv/app/etc/motd").expect("copied file");
    assert_eq!(
        (
            motd["mode"].as_str(),
            motd["uid"].as_u64(),
            motd["gid"].as_u64()
        ),
        (Some("0640"), Some(1000), Some(2000))
    );
    let dir = record(&b, "/srv/app/etc").expect("copied dir");
    assert_eq!(
        (dir["mode"].as_str(), dir["uid"].as_u64()),
        (Some("0750"), Some(1000))
    );
    // The destination's parents are created root-owned, 0755.
    let parent = record(&b, "/srv").expect("implied parent");
    assert_eq!(
        (parent["mode"].as_str(), parent["uid"].as_u64()),
        (Some("0755"), Some(0))
    );
    let script = record(&b, "/srv/app/run.sh").expect("file layer");
    assert_eq!(
        (script["mode"].as_str(), script["uid"].as_u64()),
        (Some("0755"), Some(1))
    );
}

#[test]
fn a_single_file_can_be_copied_to_a_named_destination() {
    let env = Env::new();
    write(&env.ctx().join("conf/app.toml"), b"port = 1\n", 0o600);
    env.write_def(
        r#"
[image]
name = "single"

[[layer]]
kind = "copy"
src = "conf/app.toml"
dest = "/etc/app/app.toml"
"#,
    );
    env.build(&[]);
    let b = baseline(&env, "single");
    let f = record(&b, "/etc/app/app.toml").expect("copied file");
    assert_eq!(
        (f["type"].as_str(), f["mode"].as_str(), f["size"].as_u64()),
        (Some("file"), Some("0644"), Some(9))
    );
    assert_eq!(record(&b, "/etc/app").expect("parent")["type"], "dir");
}

/// `xattrs = true` records extended attributes as PAX `SCHILY.xattr.*`
/// headers; without it they are left out (they vary between machines).
#[test]
fn xattrs_are_recorded_only_when_declared() {
    let env = Env::new();
    sample_tree(&env.ctx().join("rootfs"));
    let target = env.ctx().join("rootfs/etc/motd");
    let set = Command::new("python3")
        .args([
            "-c",
            "import os,sys; os.setxattr(sys.argv[1], 'user.drover', b'kept')",
        ])
        .arg(&target)
        .status()
        .expect("python3");
    if !set.success() {
        eprintln!("skipping: this filesystem has no user xattrs");
        return;
    }
    let def = |xattrs: bool| {
        format!(
            "[image]\nname = \"x\"\n\n[[layer]]\nkind = \"copy\"\nsrc = \"rootfs\"\ndest = \"/\"\nxattrs = {xattrs}\n"
        )
    };
    env.write_def(&def(false));
    let without = env.build(&[]);
    env.write_def(&def(true));
    let with = env.build(&[]);
    assert_ne!(with, without, "declaring xattrs must change the image");

    let inspect: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", &with])).unwrap();
    let layer = inspect["manifest"]["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let blob = env.store().join("blobs/sha256").join(layer);
    let read = Command::new("python3")
        .args([
            "-c",
            "import tarfile,sys\nfor m in tarfile.open(sys.argv[1]):\n    x = m.pax_headers.get('SCHILY.xattr.user.drover')\n    if x: print(m.name, x)",
        ])
        .arg(&blob)
        .output()
        .expect("python3");
    let listing = String::from_utf8_lossy(&read.stdout);
    assert_eq!(listing.trim(), "etc/motd kept", "{}", show(&read));
}

#[test]
fn a_store_image_is_a_base_by_digest() {
    let env = sample_env();
    let base = env.build(&[]);
    fs::create_dir_all(env.ctx().join("app")).unwrap();
    fs::write(
        env.ctx().join("app/drover.toml"),
        format!(
            "[image]\nname = \"app\"\nbase = {{ image = \"{base}\" }}\n\n[[layer]]\nkind = \"file\"\ndest = \"/etc/motd\"\ncontent = \"replaced\\n\"\n\n[config]\ncmd = [\"--serve\"]\n"
        ),
    )
    .unwrap();
    let def = env.ctx().join("app/drover.toml");
    let app = last_line(&env.ok(&["build", "-f", def.to_str().unwrap()]));
    let base_inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", &base])).unwrap();
    let app_inspect: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", &app])).unwrap();
    let base_layers = base_inspect["manifest"]["layers"].as_array().unwrap();
    let app_layers = app_inspect["manifest"]["layers"].as_array().unwrap();
    assert_eq!(
        &app_layers[..base_layers.len()],
        base_layers.as_slice(),
        "base layers come first, unchanged"
    );
    assert_eq!(app_layers.len(), base_layers.len() + 1);
    // The base's config carries over; the definition adds to it.
    assert_eq!(
        app_inspect["config"]["config"]["Entrypoint"][0],
        "/bin/tool"
    );
    assert_eq!(app_inspect["config"]["config"]["Cmd"][0], "--serve");
    // The baseline is the base's, with the file the new layer replaced.
    let b = baseline(&env, &app);
    let motd = record(&b, "/etc/motd").unwrap();
    assert_eq!(motd["size"].as_u64(), Some(9));
    assert!(record(&b, "/usr/share/data.bin").is_some());

    // A digest the store does not have is refused by name.
    let missing = format!("sha256:{}", "ab".repeat(32));
    fs::write(
        &def,
        format!("[image]\nname = \"app\"\nbase = {{ image = \"{missing}\" }}\n"),
    )
    .unwrap();
    let out = env.run(&["build", "-f", def.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&missing),
        "{}",
        show(&out)
    );
}
