//! Hostile definitions and fleet files refused at parse time with file:line:key; hostile bases refused before anything is built on them; one signature per key per image.

use crate::common::{self, Env, sample_env, show};

/// `drover args` fails with exit 2 and says every one of `needles`.
#[track_caller]
fn refused(env: &Env, args: &[&str], needles: &[&str]) {
    let out = env.run(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "drover {args:?}:\n{}",
        show(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
}

fn build_args(env: &Env) -> Vec<String> {
    let def = env.ctx().join("drover.toml");
    vec!["build".into(), "-f".into(), def.to_str().unwrap().into()]
}

fn refused_build(env: &Env, def: &str, needles: &[&str]) {
    env.write_def(def);
    let args = build_args(env);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(env, &args, needles);
}

const IMAGE: &str = "[image]\nname = \"bad\"\n";

/// Regression (issue 16): `dest = "/etc/.wh.passwd"` built, and `run` then
/// called the image corrupt: a layer reads `.wh.` names as deletions.
#[test]
fn a_whiteout_name_as_a_destination_is_refused() {
    let env = Env::new();
    refused_build(
        &env,
        &format!(
            "{IMAGE}[[layer]]\nkind = \"file\"\ndest = \"/etc/.wh.passwd\"\ncontent = \"x\"\n"
        ),
        &["drover.toml:5:8", "layer[0].dest", "whiteout"],
    );
    refused_build(
        &env,
        &format!(
            "{IMAGE}[[layer]]\nkind = \"copy\"\nsrc = \".\"\ndest = \"/opt/.wh..wh..opq/x\"\n"
        ),
        &["drover.toml:6:8", "layer[0].dest", "whiteout"],
    );
}

/// Regression (issue 16): `include = ["../*"]` was accepted.
#[test]
fn dot_dot_in_globs_is_refused() {
    let env = Env::new();
    refused_build(
        &env,
        &format!(
            "{IMAGE}[[layer]]\nkind = \"copy\"\nsrc = \".\"\ndest = \"/\"\ninclude = [\"../*\"]\n"
        ),
        &["drover.toml:7:12", "layer[0].include[0]", "\"..\""],
    );
    refused_build(
        &env,
        &format!(
            "{IMAGE}[[layer]]\nkind = \"copy\"\nsrc = \".\"\ndest = \"/\"\nexclude = [\"a/../../b\"]\n"
        ),
        &["layer[0].exclude[0]", "\"..\""],
    );
}

/// NUL in an argument, an environment value or a label: cut short where it
/// reaches the kernel. Control characters in a label key.
#[test]
fn nul_in_definition_values_is_refused() {
    let env = Env::new();
    for (config, at, key) in [
        (
            "env = { A = \"x\\u0000y\" }",
            "drover.toml:4:13",
            "config.env.A",
        ),
        (
            "cmd = [\"/bin/sh\", \"a\\u0000b\"]",
            "drover.toml:4:19",
            "config.cmd[1]",
        ),
        (
            "labels = { l = \"\\u0000\" }",
            "drover.toml:4:16",
            "config.labels.l",
        ),
        (
            "labels = { \"a\\nb\" = \"v\" }",
            "drover.toml:4:12",
            "config.labels",
        ),
    ] {
        refused_build(&env, &format!("{IMAGE}[config]\n{config}\n"), &[at, key]);
    }
}

fn refused_plan(env: &Env, fleet: &str, needles: &[&str]) {
    let path = env.dir.path().join("fleet.toml");
    common::write(&path, fleet.as_bytes(), 0o644);
    refused(env, &["plan", "-f", path.to_str().unwrap()], needles);
}

const SERVICE: &str = "[service.web]\nimage = \"web:1\"\n";

/// Regression (issue 16): a NUL in a fleet env value passed `plan` and failed
/// `apply` obscurely.
#[test]
fn nul_in_a_fleet_env_value_is_refused_by_plan() {
    let env = Env::new();
    refused_plan(
        &env,
        &format!("{SERVICE}env = {{ MODE = \"a\\u0000b\" }}\n"),
        &["fleet.toml:3:16", "service.web.env.MODE", "NUL"],
    );
    refused_plan(
        &env,
        &format!("{SERVICE}env = {{ \"A\\u001bB\" = \"x\" }}\n"),
        &["fleet.toml:3:9", "service.web.env"],
    );
}

/// Regression (issue 16): the embedded driver mounted a volume over /proc;
/// over /dev the device nodes landed in the volume.
#[test]
fn volumes_over_kernel_filesystems_are_refused() {
    let env = Env::new();
    for target in ["/proc", "/dev", "/sys/fs/cgroup", "//proc/", "/./dev/shm"] {
        refused_plan(
            &env,
            &format!("{SERVICE}volumes = [\"data:{target}\"]\n"),
            &["fleet.toml:3:12", "service.web.volumes[0]", "kernel"],
        );
    }
    let env = sample_env();
    env.build(&[]);
    for target in ["data:/proc", "data:/dev", "data:/sys"] {
        refused(
            &env,
            &["run", "-v", target, "sample:1.0", "--", "/bin/tool"],
            &["kernel"],
        );
    }
    // Nothing was made for any of them.
    let ps = env.items(&["ps"]);
    assert!(ps.is_empty(), "{ps:?}");
}

/// Regression (issue 16): `--memory 1` got as far as the cgroup and failed
/// there, exit 1. Nonsense limits are refused up front, in `run` and in the
/// fleet alike.
#[test]
fn nonsense_limits_are_refused() {
    let env = sample_env();
    env.build(&[]);
    for (flag, value) in [
        ("--memory", "1"),
        ("--memory", "5m"),
        ("--memory", "99999g"),
        ("--pids", "0"),
        ("--cpus", "0"),
        ("--cpus", "nan"),
        ("--cpus", "-1"),
        ("--cpus", "1e3"),
        ("--nofile", "0"),
        ("--nofile", "99999999"),
    ] {
        let arg = format!("{flag}={value}");
        refused(&env, &["run", &arg, "sample:1.0"], &[flag]);
    }
    let ps = env.items(&["ps"]);
    assert!(ps.is_empty(), "{ps:?}");

    for (limit, key) in [
        ("memory = \"1\"", "service.web.memory"),
        ("pids = 0", "service.web.pids"),
        ("cpus = 0.0", "service.web.cpus"),
        ("cpus = 0.001", "service.web.cpus"),
        ("nofile = 0", "service.web.nofile"),
        ("nofile = 4294967296", "service.web.nofile"),
    ] {
        refused_plan(
            &env,
            &format!("{SERVICE}{limit}\n"),
            &["fleet.toml:3:", key],
        );
    }
}

/// Regression (issue 16): two identical concurrent builds with `--sign`
/// attached two signatures by one key. Now one, however they race.
#[test]
fn one_signature_per_key_even_when_signing_races() {
    let env = sample_env();
    env.build(&[]);
    for _ in 0..3 {
        let children: Vec<_> = (0..4)
            .map(|_| {
                env.cmd()
                    .args(["sign", "sample:1.0"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", show(&out));
        }
    }
    let args = build_args(&env);
    let mut build: Vec<&str> = args.iter().map(String::as_str).collect();
    build.push("--sign");
    let builds: Vec<_> = (0..2)
        .map(|_| {
            env.cmd()
                .args(&build)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for b in builds {
        let out = b.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
    }
    let v: serde_json::Value = env.json(&["verify", "sample:1.0"]);
    assert_eq!(v["valid"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["other_signatures"], 0, "{v}");
}
