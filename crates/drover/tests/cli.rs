//! The CLI's output conventions (issue 19): closed pipes, aligned tables,
//! `-o table|wide|json|yaml`, versioned documents, errors as documents,
//! `-q` and `--filter`, `status SERVICE`, time arguments, serve's JSON log.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `sample_env()` with its image built; the image's digest.
fn built() -> (Env, String) {
    let env = sample_env();
    let digest = env.build(&[]);
    (env, digest)
}

/// Run `cmd` with stdout a pipe its reader drops after `lines` lines (0:
/// at once); its exit status and stderr.
fn with_closed_pipe(mut cmd: Command, lines: usize) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn drover");
    let stdout = child.stdout.take().unwrap();
    if lines > 0 {
        let mut r = BufReader::new(stdout);
        for _ in 0..lines {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
        }
        drop(r);
    } else {
        drop(stdout);
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    (status.code(), err)
}

/// Regression (issue 19): `drover --json ps | head -1`, `drover audit |
/// head -2`, `drover baseline X | head` panicked "failed printing to
/// stdout: Broken pipe" with exit 101. A reader that goes away now ends
/// drover quietly, with status 0.
#[test]
fn a_closed_pipe_ends_drover_quietly() {
    let env = sample_env();
    // Enough files that the baseline is far larger than a pipe's buffer.
    for i in 0..1500 {
        write(
            &env.ctx().join(format!("rootfs/many/file-{i:04}.txt")),
            b"x\n",
            0o644,
        );
    }
    env.build(&[]);
    for args in [
        &["--json", "ps"][..],
        &["ps"],
        &["audit"],
        &["--json", "audit"],
        &["baseline", "sample:1.0"],
        &["-o", "yaml", "baseline", "sample:1.0"],
        &["images"],
        &["audit", "export"],
    ] {
        for lines in [0, 1] {
            let mut cmd = env.cmd();
            cmd.args(args);
            let (code, err) = with_closed_pipe(cmd, lines);
            assert!(
                !err.contains("panicked") && !err.contains("Broken pipe"),
                "{args:?}: {err}"
            );
            assert_ne!(code, Some(101), "{args:?}: {err}");
            assert_eq!(code, Some(0), "{args:?}: {err}");
            if args[0] != "audit" || args.get(1) != Some(&"export") {
                assert_eq!(err, "", "{args:?}");
            }
        }
    }
}

/// Regression (issue 19): in `images` the LAYERS column was not padded, so
/// rows and header misaligned, and a long tag shifted every column.
#[test]
fn images_columns_line_up_with_a_long_tag() {
    let (env, digest) = built();
    let long = "registry.example.com/team/a-rather-long-image-name:and-a-long-tag-1.2.3";
    env.ok(&["tag", "sample:1.0", long]);
    let text = env.ok(&["images"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let short = &digest[7..19];
    let header = lines[0];
    for row in &lines[1..] {
        assert_eq!(header.find("DIGEST"), row.find(short), "{text}");
        // LAYERS is right-aligned: its values end where the header does.
        let end = header.find("LAYERS").unwrap() + "LAYERS".len();
        assert!(row[..end].ends_with(char::is_numeric), "{text}");
        assert_eq!(row.as_bytes()[end], b' ', "{text}");
        assert_eq!(header.find("TAGGED"), row.find("20"), "{text}");
    }
    // -o wide shows the whole digest.
    assert!(env.ok(&["-o", "wide", "images"]).contains(&digest));
}

/// `-o json` is `--json`; `-o yaml` is the same document in YAML; every
/// document says its version and kind, lists as `<Kind>List`.
#[test]
fn output_formats_carry_a_version() {
    let (env, digest) = built();
    let json = env.ok(&["--json", "images"]);
    assert_eq!(json, env.ok(&["-o", "json", "images"]));
    let v = doc(&json);
    assert_eq!(v["kind"], "ImageList");
    assert_eq!(v["items"][0]["digest"], digest.as_str());
    let yaml = env.ok(&["-o", "yaml", "images"]);
    assert!(
        yaml.starts_with("apiVersion: drover/v1\nkind: ImageList\nitems:\n  - name: sample:1.0\n"),
        "{yaml}"
    );
    assert!(yaml.contains(&format!("    digest: {digest}\n")), "{yaml}");
    // Objects get apiVersion and kind first.
    let b = env.json(&["baseline", "sample:1.0"]);
    assert_eq!(b["kind"], "Baseline");
    let keys: Vec<&String> = b.as_object().unwrap().keys().take(2).collect();
    assert_eq!(keys, ["apiVersion", "kind"]);
    // Tables have no document around them, and no colour through a pipe.
    let table = env.ok(&["images"]);
    assert!(
        !table.contains("apiVersion") && !table.contains('\x1b'),
        "{table}"
    );
    // Commands that printed a bare line print a document under --json.
    let t = env.json(&["tag", "sample:1.0", "x:1"]);
    assert_eq!(
        (t["kind"].as_str(), t["digest"].as_str()),
        (Some("Tag"), Some(digest.as_str()))
    );
    assert_eq!(env.items(&["rmi", "x:1"])[0]["name"], "x:1");
    let o = env.run(&["-o", "xml", "images"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}

fn error_doc(out: &std::process::Output) -> Value {
    assert!(out.stdout.is_empty(), "{}", show(out));
    let text = String::from_utf8_lossy(&out.stderr);
    let v: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("stderr is not one JSON document ({e}): {text}"));
    assert_eq!(v["apiVersion"], "drover/v1", "{text}");
    assert_eq!(v["kind"], "Error", "{text}");
    v
}

/// Regression (issue 19): errors under `--json` were plain text. They are
/// now a document on stderr, with the exit code they always had.
#[test]
fn errors_under_json_are_documents_with_the_same_exit_codes() {
    let (env, _) = built();
    let o = env.run(&["--json", "status", "nope"]);
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    let e = error_doc(&o);
    assert_eq!(e["error"]["kind"], "not-found");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("service nope")
    );
    assert_eq!(e["error"]["hint"], "`drover status` lists services");

    let o = env.run(&["-o", "json", "ps", "--filter", "colour=red"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let e = error_doc(&o);
    assert_eq!(e["error"]["kind"], "invalid");
    assert!(e["error"]["hint"].is_null());
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("colour") && msg.contains("state"), "{msg}");

    // What clap refuses is a document too, exit 2.
    let o = env.run(&["--json", "ps", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert_eq!(error_doc(&o)["error"]["kind"], "invalid");

    // YAML asks for YAML.
    let o = env.run(&["-o", "yaml", "rmi", "nothing:1"]);
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("apiVersion: drover/v1\nkind: Error\nerror:\n  kind: not-found\n"),
        "{err}"
    );

    // Without --json, errors stay sentences.
    let o = env.run(&["status", "nope"]);
    assert_eq!(o.status.code(), Some(4));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("drover: error: service nope not found"),
        "{err}"
    );
}

/// Regression (issue 19): `docker ps -q`-like ids and `--filter` were
/// refused.
#[test]
fn quiet_and_filters_on_images() {
    let (env, digest) = built();
    env.ok(&["tag", "sample:1.0", "other:2"]);
    // One digest, once, though two tags name it.
    assert_eq!(env.ok(&["images", "-q"]), format!("{digest}\n"));
    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["images"];
        all.extend_from_slice(args);
        env.items(&all)
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&["--filter", "reference=sample:*"]), ["sample:1.0"]);
    assert_eq!(names(&["--filter", "reference=*:2"]), ["other:2"]);
    assert_eq!(
        names(&["--filter", "reference=*", "--filter", "dangling=false"]).len(),
        2
    );
    assert!(names(&["--filter", "dangling=true"]).is_empty());
    let o = env.run(&["images", "--filter", "dangling=maybe"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = env.run(&["images", "--filter", "label=x"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("reference, dangling"), "{err}");
    let o = env.run(&["releases", "--filter", "colour=x"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("outcome, service"));
}

/// Regression (issue 19): `audit --since 1h` was refused; times are
/// durations back from now or timestamps, everywhere one is taken.
#[test]
fn audit_since_and_until_take_durations_and_timestamps() {
    let (env, _) = built();
    let all = env.items(&["audit"]).len();
    assert!(all >= 1);
    assert_eq!(env.items(&["audit", "--since", "1h"]).len(), all);
    assert_eq!(
        env.items(&["audit", "--since", "2026-01-01T10:00Z"]).len(),
        all
    );
    assert!(
        env.items(&["audit", "--since", "2999-12-01T10:00:00+02:00"])
            .is_empty()
    );
    assert!(env.items(&["audit", "--until", "2000-01-01"]).is_empty());
    assert_eq!(
        env.items(&["audit", "--until", "2999-01-01", "--since", "1d"])
            .len(),
        all
    );
    // A bare number is still a sequence number.
    assert_eq!(env.items(&["audit", "--since", "2"]).len(), all - 1);
    let o = env.run(&["audit", "--since", "yesterday"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("e.g."));
    // The table lines up too.
    let text = env.ok(&["audit"]);
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("SEQ") && header.contains("ACTION"),
        "{text}"
    );
}

/// Regression (issue 19): `drover status hello` was refused.
#[test]
fn status_of_an_unknown_service_is_not_found_with_a_hint() {
    let (env, _) = built();
    let o = env.run(&["status", "hello"]);
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("`drover status` lists services"));
}

/// Regression (issue 19): in `ps`, "exited (killed by signal 9)"
/// overflowed STATE and shifted the columns after it; `-q` and `--filter`
/// work on instances.
#[test]
fn ps_columns_line_up_and_ps_filters() {
    let Some(env) = crate::instances::box_env() else {
        return;
    };
    env.build(&[]);
    let killed = last_line(&env.ok(&["run", "box:1"]));
    let running = last_line(&env.ok(&["run", "box:1"]));
    let pid = env.items(&["ps", "--filter", &format!("id={killed}")])[0]["pid"]
        .as_u64()
        .expect("a pid");
    kill("-KILL", pid);
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.items(&["ps", "--filter", "state=exited"]).is_empty() {
        assert!(Instant::now() < deadline, "{}", env.ok(&["ps"]));
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = env.ok(&["ps"]);
    let header = text.lines().next().unwrap();
    let row = |id: &str| text.lines().find(|l| l.starts_with(id)).unwrap();
    assert!(
        row(&killed).contains("exited (killed by signal 9)"),
        "{text}"
    );
    for id in [&killed, &running] {
        assert_eq!(header.find("DRIVER"), row(id).find("embedded"), "{text}");
        assert_eq!(
            header.find("STATE"),
            row(id).find(if *id == killed { "exited" } else { "running" }),
            "{text}"
        );
    }
    assert_eq!(
        env.ok(&["ps", "-q", "--filter", "state=running"]),
        format!("{running}\n")
    );
    let both = env.ok(&["ps", "-q"]);
    assert_eq!(both.lines().count(), 2, "{both}");
    assert!(
        env.ok(&[
            "ps",
            "-q",
            "--filter",
            "state=running",
            "--filter",
            &format!("id={killed}")
        ])
        .is_empty()
    );
    assert_eq!(env.items(&["ps", "--filter", "image=sha256:"]).len(), 0);
    let image = env.items(&["ps"])[0]["image"].as_str().unwrap().to_string();
    assert_eq!(
        env.items(&["ps", "--filter", &format!("image={}", &image[7..15])])
            .len(),
        2
    );
    // -o wide adds the command.
    assert!(env.ok(&["-o", "wide", "ps"]).contains("COMMAND"));
    // image=NAME:TAG means its digest.
    assert_eq!(env.items(&["ps", "--filter", "image=box:1"]).len(), 2);
    // Colour on a terminal only, and not with NO_COLOR.
    if common::have("script") {
        let on_tty = |no_color: &str| {
            let line = format!("{DROVER} --store {} ps", env.store().display());
            let o = Command::new("script")
                .args(["-qec", &line, "/dev/null"])
                .env("NO_COLOR", no_color)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let coloured = on_tty("");
        assert!(coloured.contains("\x1b[32mrunning\x1b[0m"), "{coloured:?}");
        assert!(coloured.contains("\x1b[31mexited"), "{coloured:?}");
        assert!(!on_tty("1").contains('\x1b'));
    }
    assert!(!env.ok(&["ps"]).contains('\x1b'));
    env.ok(&["rm", "--force", &killed, &running]);
}

/// Regression (issue 19): `serve --json` was accepted and ignored. Its log
/// lines are JSON objects now, one per line (as `--log-format json`).
#[test]
fn serve_logs_json_lines_under_json() {
    let env = Env::new();
    env.ok(&["key", "show"]);
    let mut child = env
        .cmd()
        .args(["--json", "serve", "--drift-interval", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    // serve handles SIGTERM once its supervisor threads are up.
    std::thread::sleep(Duration::from_secs(1));
    kill("-TERM", u64::from(child.id()));
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {first}{rest}");
    for line in first.lines().chain(rest.lines()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        assert!(
            v["target"].is_string() && v["message"].is_string(),
            "{line}"
        );
    }
    // serve's own start line (the admin listener may speak first).
    assert!(
        first.lines().chain(rest.lines()).any(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["target"] == "drover::cmd::serve" && v["message"] == "started" && v["drift"] == "off"
        }),
        "{first}{rest}"
    );
    assert!(rest.contains("\"message\":\"stopped\""), "{rest}");
}

fn kill(signal: &str, pid: u64) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {signal} {pid}");
}
