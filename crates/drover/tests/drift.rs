//! `drover drift --image`: the real binary scanning an unpacked root.
use crate::common;
use common::*;

#[test]
fn drift_of_an_image_root() {
    let env = sample_env();
    let digest = env.build(&[]);
    // The first call unpacks the root; a fresh root has no drift.
    let out = env.ok(&["drift", "--image", "sample:1.0"]);
    assert!(last_line(&out).ends_with("no drift"), "{out}");

    let root = env.store().join("rootfs").join(&digest["sha256:".len()..]);
    write(&root.join("etc/motd"), b"WELCOME\n", 0o644);
    write(&root.join("etc/extra"), b"x", 0o644);
    let out = env.run(&["drift", "--image", "sample:1.0", "--threads", "1"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "/etc/extra: added (file)", "{stdout}");
    assert!(
        lines[1].starts_with("/etc/motd: content sha256:"),
        "{stdout}"
    );
    assert!(
        lines[2].ends_with("2 difference(s) from the baseline"),
        "{stdout}"
    );

    let out = env.run(&["--json", "drift", "--image", &digest]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let report = common::doc(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["findings"][1]["path"], "/etc/motd");
    assert_eq!(report["findings"][1]["change"], "content");

    let out = env.run(&["drift", "--image", "sample:1.0", "--threads", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let out = env.run(&["drift", "--image", "nope:1"]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
}
