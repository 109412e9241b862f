use super::*;
use crate::store::baseline::FileRecord;

fn pkg(name: &str, fields: &str) -> Installed {
    Installed {
        name: name.into(),
        architecture: "amd64".into(),
        control: format!("Package: {name}\nVersion: 1\nArchitecture: amd64\n{fields}"),
        md5sums: None,
        conffiles: None,
        scripts: Vec::new(),
        files: Vec::new(),
    }
}

fn order(layer: &[Installed]) -> Vec<&str> {
    configure_order(layer)
        .into_iter()
        .map(|i| layer[i].name.as_str())
        .collect()
}

#[test]
fn packages_are_configured_after_what_they_depend_on() {
    let layer = [
        pkg(
            "ca-certificates",
            "Depends: openssl (>= 1.1.1), debconf (>= 0.5) | debconf-2.0\n",
        ),
        pkg("debconf", "Pre-Depends: perl-base (>= 5.20.1-3~)\n"),
        pkg("libc6", "Depends: libgcc-s1\n"),
        pkg(
            "libgcc-s1",
            "Depends: gcc-12-base (= 12.2.0-14), libc6 (>= 2.35)\n",
        ),
        pkg("libssl3", "Depends: libc6 (>= 2.34)\n"),
        pkg("openssl", "Depends: libc6 (>= 2.34), libssl3 (>= 3.0.9)\n"),
        pkg(
            "perl-base",
            "Pre-Depends: libc6 (>= 2.35), libcrypt1 (>= 1:4.1.0)\n",
        ),
        pkg("zz-first", ""),
    ];
    // libc6 <-> libgcc-s1 is a cycle (gcc-12-base and libcrypt1 are not in
    // the layer): broken by name, libc6 first, once nothing else is ready.
    assert_eq!(
        order(&layer),
        [
            "zz-first",
            "libc6",
            "libgcc-s1",
            "libssl3",
            "openssl",
            "perl-base",
            "debconf",
            "ca-certificates",
        ]
    );
}

#[test]
fn virtual_packages_and_alternatives_order_through_their_providers() {
    let layer = [
        pkg("a-app", "Depends: mail-transport-agent | b-missing, awk\n"),
        pkg("mawk", "Provides: awk\n"),
        pkg("postfix", "Provides: mail-transport-agent\n"),
    ];
    assert_eq!(order(&layer), ["mawk", "postfix", "a-app"]);
    // Only the first alternative the layer has counts.
    let layer = [
        pkg("a", "Depends: c | b\n"),
        pkg("b", ""),
        pkg("c", "Depends: b\n"),
    ];
    assert_eq!(order(&layer), ["b", "c", "a"]);
}

#[test]
fn the_order_does_not_depend_on_the_input_order() {
    let mut layer = vec![
        pkg("x", "Depends: y\n"),
        pkg("y", "Depends: z\n"),
        pkg("z", "Depends: x\n"),
        pkg("w", ""),
    ];
    let first: Vec<String> = order(&layer).into_iter().map(String::from).collect();
    layer.reverse();
    assert_eq!(order(&layer), first);
    assert_eq!(first, ["w", "x", "z", "y"]);
}

#[test]
fn triggers_files_parse() {
    let t = TriggerFile::parse(
        "# comment\ninterest-noawait ldconfig\nactivate-noawait update-initramfs\ninterest /usr/share/man # x\n\n",
    );
    assert_eq!(t.interests, ["ldconfig", "/usr/share/man"]);
    assert_eq!(t.activates, ["update-initramfs"]);
}

#[test]
fn file_and_explicit_triggers_reach_the_interested_packages() {
    let interested = BTreeMap::from([
        (
            "libc-bin".to_string(),
            TriggerFile::parse("interest-noawait ldconfig\n"),
        ),
        (
            "man-db".to_string(),
            TriggerFile::parse("interest-noawait /usr/share/man\n"),
        ),
        (
            "fonts".to_string(),
            TriggerFile::parse("interest /usr/share/fonts/\n"),
        ),
    ]);
    let activates = BTreeSet::from(["ldconfig".to_string()]);
    let files = ["/usr/share/man/man1/x.1.gz", "/usr/share/fontsx"];
    assert_eq!(
        activated(&interested, &activates, &files),
        [
            ("libc-bin".to_string(), vec!["ldconfig".to_string()]),
            ("man-db".to_string(), vec!["/usr/share/man".to_string()]),
        ]
    );
    assert!(activated(&interested, &BTreeSet::new(), &[]).is_empty());
}

fn rec(path: &str, kind: FileKind, link: Option<&str>) -> FileRecord {
    FileRecord {
        path: path.into(),
        kind,
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        sha256: None,
        link: link.map(str::to_string),
        xattrs: Default::default(),
    }
}

#[test]
fn a_shell_is_found_through_the_images_links() {
    let mut image = Merger::default();
    image.put(rec("/usr", FileKind::Dir, None));
    image.put(rec("/usr/bin", FileKind::Dir, None));
    image.put(rec("/bin", FileKind::Symlink, Some("usr/bin")));
    assert!(!resolves_to_file(&image, "/bin/sh"));
    image.put(rec("/usr/bin/dash", FileKind::File, None));
    image.put(rec("/usr/bin/sh", FileKind::Symlink, Some("/bin/dash")));
    assert!(resolves_to_file(&image, "/bin/sh"));
    image.put(rec(
        "/usr/bin/sh",
        FileKind::Symlink,
        Some("../bin/nothing"),
    ));
    assert!(!resolves_to_file(&image, "/bin/sh"));
    image.put(rec("/usr/bin/sh", FileKind::Symlink, Some("sh")));
    assert!(!resolves_to_file(&image, "/bin/sh"), "a loop ends");
    assert!(
        !resolves_to_file(&image, "/usr/bin"),
        "a directory is no shell"
    );
}

fn outcome(status: RunStatus, tail: &[&str]) -> RunOutcome {
    RunOutcome {
        status,
        tail: tail.iter().map(|s| s.to_string()).collect(),
        id_base: 0,
        id_count: 65536,
    }
}

#[test]
fn a_failed_script_is_named_with_its_status_and_last_lines() {
    let src = "scripts of layer[0] (packages x)";
    assert!(check(src, &outcome(RunStatus::Exited(0), &[])).is_ok());
    let e = check(
        src,
        &outcome(
            RunStatus::Exited(2),
            &[
                "drover: x: postinst configure ",
                "x: cannot frob",
                "drover: the postinst script of x (postinst configure) failed with exit status 2",
            ],
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&format!(
            "{src}: the postinst script of x (postinst configure) failed with exit status 2"
        )),
        "{e}"
    );
    assert!(e.contains("x: cannot frob"), "{e}");
    let e = check(src, &outcome(RunStatus::TimedOut, &["waiting"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("killed after 10m"), "{e}");
}
