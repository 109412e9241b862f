use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

use super::*;
use crate::error::ErrorKind;

const BIG: usize = 3 << 20;

/// A root on disk and the baseline it matches.
struct Tree {
    _dir: tempfile::TempDir,
    rootfs: Rootfs,
    baseline: Baseline,
}

impl Tree {
    fn p(&self, path: &str) -> PathBuf {
        self.rootfs.path.join(path.trim_start_matches('/'))
    }

    fn scan(&self) -> Report {
        scan(&self.rootfs, &self.baseline, &Budget::unlimited()).unwrap()
    }

    fn findings(&self) -> Vec<(String, Change)> {
        self.scan()
            .findings
            .into_iter()
            .map(|f| (f.path, f.change))
            .collect()
    }
}

fn big_content() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// / (0755), /bin/{app, su (setuid), sh -> app, app-hard (hard link of
/// app)}, /etc/{motd, big (3 MiB), initctl (a FIFO)}, and the
/// mountpoints /proc and /tmp.
fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mkdir = |rel: &str, mode| {
        let p = root.join(rel);
        fs::create_dir(&p).unwrap();
        chmod(&p, mode);
    };
    mkdir("", 0o755);
    mkdir("bin", 0o755);
    mkdir("etc", 0o750);
    mkdir("proc", 0o755);
    mkdir("tmp", 0o1777);
    let file = |rel: &str, content: &[u8], mode| {
        let p = root.join(rel);
        fs::write(&p, content).unwrap();
        chmod(&p, mode);
    };
    file("bin/app", b"app", 0o755);
    file("bin/su", b"su", 0o4755);
    file("etc/motd", b"hello\n", 0o644);
    file("etc/big", &big_content(), 0o644);
    symlink("app", root.join("bin/sh")).unwrap();
    fs::hard_link(root.join("bin/app"), root.join("bin/app-hard")).unwrap();
    nix::unistd::mkfifo(&root.join("etc/initctl"), Mode::from_bits_truncate(0o600)).unwrap();

    let rec = |path: &str, kind: FileKind, link: Option<&str>| {
        let p = root.join(&path[1..]);
        let m = fs::symlink_metadata(&p).unwrap();
        let sha256 = (kind == FileKind::File || kind == FileKind::Hardlink)
            .then(|| Digest::of(&fs::read(&p).unwrap()));
        FileRecord {
            path: path.into(),
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: if m.is_file() { m.len() } else { 0 },
            sha256,
            link: link.map(Into::into),
            xattrs: Default::default(),
        }
    };
    let mut files = vec![
        rec("/bin", FileKind::Dir, None),
        rec("/bin/app", FileKind::File, None),
        rec("/bin/app-hard", FileKind::Hardlink, Some("/bin/app")),
        rec("/bin/sh", FileKind::Symlink, Some("app")),
        rec("/bin/su", FileKind::File, None),
        rec("/etc", FileKind::Dir, None),
        rec("/etc/big", FileKind::File, None),
        rec("/etc/motd", FileKind::File, None),
    ];
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let me = fs::symlink_metadata(&root).unwrap();
    Tree {
        rootfs: Rootfs {
            path: root,
            image: Digest::of(b"image"),
            unpacked: false,
            added: vec!["/proc".into(), "/tmp".into(), "/run".into()],
            specials: vec![Special {
                path: "/etc/initctl".into(),
                kind: SpecialKind::Fifo,
                mode: 0o600,
                uid: me.uid(),
                gid: me.gid(),
                major: 0,
                minor: 0,
            }],
        },
        baseline: Baseline {
            schema_version: 1,
            files,
        },
        _dir: dir,
    }
}

fn one(path: &str, change: Change) -> Vec<(String, Change)> {
    vec![(path.to_string(), change)]
}

#[test]
fn a_clean_tree_has_no_findings() {
    let t = tree();
    let r = t.scan();
    assert_eq!(r.findings, []);
    assert!(r.is_clean());
    // bin + 4, etc + 3, proc, tmp
    assert_eq!(r.files_checked, 11);
    // app, su, motd and big; the hard link's content is its target's
    assert_eq!(r.bytes_hashed, (3 + 2 + 6 + BIG) as u64);
    assert_eq!(r.root, t.rootfs.path);
}

#[test]
fn a_content_edit_of_the_same_size_is_found() {
    let t = tree();
    fs::write(t.p("/etc/motd"), b"HELLO\n").unwrap();
    assert_eq!(
        t.findings(),
        one(
            "/etc/motd",
            Change::Content {
                want: Digest::of(b"hello\n"),
                got: Digest::of(b"HELLO\n"),
            }
        )
    );
    // One byte in the middle of a file big enough to be hashed as a task of its own.
    let t = tree();
    let mut big = big_content();
    big[BIG / 2] ^= 1;
    fs::write(t.p("/etc/big"), &big).unwrap();
    assert_eq!(
        t.findings(),
        one(
            "/etc/big",
            Change::Content {
                want: Digest::of(&big_content()),
                got: Digest::of(&big),
            }
        )
    );
}

#[test]
fn a_size_change_is_found() {
    let t = tree();
    fs::write(t.p("/etc/motd"), b"hello!\n").unwrap();
    assert_eq!(
        t.findings(),
        one("/etc/motd", Change::Size { want: 6, got: 7 })
    );
}

#[test]
fn mode_changes_are_found_setuid_included() {
    let t = tree();
    chmod(&t.p("/bin/app"), 0o4755);
    chmod(&t.p("/etc"), 0o755);
    chmod(&t.rootfs.path, 0o777);
    assert_eq!(
        t.findings(),
        [
            (
                "/".to_string(),
                Change::Mode {
                    want: 0o755,
                    got: 0o777
                }
            ),
            (
                "/bin/app".to_string(),
                Change::Mode {
                    want: 0o755,
                    got: 0o4755
                }
            ),
            (
                "/etc".to_string(),
                Change::Mode {
                    want: 0o750,
                    got: 0o755
                }
            ),
        ]
    );
}

#[test]
fn an_owner_change_is_found() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: changing a file's owner needs root");
        return;
    }
    let t = tree();
    let was = fs::metadata(t.p("/etc/motd")).unwrap();
    std::os::unix::fs::lchown(t.p("/etc/motd"), Some(1000), Some(1001)).unwrap();
    std::os::unix::fs::lchown(t.p("/bin/sh"), Some(1000), None).unwrap();
    assert_eq!(
        t.findings(),
        [
            (
                "/bin/sh".to_string(),
                Change::Owner {
                    want: (was.uid(), was.gid()),
                    got: (1000, was.gid())
                }
            ),
            (
                "/etc/motd".to_string(),
                Change::Owner {
                    want: (was.uid(), was.gid()),
                    got: (1000, 1001)
                }
            ),
        ]
    );
}

#[test]
fn a_file_swapped_for_a_symlink_is_a_type_change_and_not_followed() {
    let t = tree();
    fs::remove_file(t.p("/etc/motd")).unwrap();
    // Pointing at an identical file: following it would see no change.
    fs::write(t.p("/etc/motd-copy"), b"hello\n").unwrap();
    symlink("motd-copy", t.p("/etc/motd")).unwrap();
    assert_eq!(
        t.findings(),
        [
            (
                "/etc/motd".to_string(),
                Change::Kind {
                    want: Kind::File,
                    got: Kind::Symlink
                }
            ),
            (
                "/etc/motd-copy".to_string(),
                Change::Added { kind: Kind::File }
            ),
        ]
    );
    // A directory swapped for a symlink to a copy of it is not entered.
    let t = tree();
    let copy = t._dir.path().join("etc-copy");
    fs::rename(t.p("/etc"), &copy).unwrap();
    symlink(&copy, t.p("/etc")).unwrap();
    let found = t.findings();
    assert_eq!(
        found[0],
        (
            "/etc".to_string(),
            Change::Kind {
                want: Kind::Dir,
                got: Kind::Symlink
            }
        )
    );
    assert!(
        found[1..]
            .iter()
            .all(|(p, c)| p.starts_with("/etc/") && matches!(c, Change::Removed { .. })),
        "{found:?}"
    );
}

#[test]
fn a_retargeted_symlink_is_found() {
    let t = tree();
    fs::remove_file(t.p("/bin/sh")).unwrap();
    symlink("su", t.p("/bin/sh")).unwrap();
    assert_eq!(
        t.findings(),
        one(
            "/bin/sh",
            Change::Link {
                want: "app".into(),
                got: "su".into()
            }
        )
    );
}

#[test]
fn added_files_and_directories_are_found_with_everything_in_them() {
    let t = tree();
    fs::write(t.p("/etc/new"), b"x").unwrap();
    fs::create_dir_all(t.p("/opt/app")).unwrap();
    fs::write(t.p("/opt/app/x"), b"x").unwrap();
    assert_eq!(
        t.findings(),
        [
            ("/etc/new".to_string(), Change::Added { kind: Kind::File }),
            ("/opt".to_string(), Change::Added { kind: Kind::Dir }),
            ("/opt/app".to_string(), Change::Added { kind: Kind::Dir }),
            ("/opt/app/x".to_string(), Change::Added { kind: Kind::File }),
        ]
    );
}

#[test]
fn removed_files_are_found() {
    let t = tree();
    fs::remove_file(t.p("/bin/su")).unwrap();
    fs::remove_file(t.p("/etc/initctl")).unwrap();
    assert_eq!(
        t.findings(),
        [
            ("/bin/su".to_string(), Change::Removed { kind: Kind::File }),
            (
                "/etc/initctl".to_string(),
                Change::Removed { kind: Kind::Fifo }
            ),
        ]
    );
}

#[test]
fn a_hard_link_replaced_by_an_identical_copy_is_found() {
    let t = tree();
    let hard = t.p("/bin/app-hard");
    fs::remove_file(&hard).unwrap();
    fs::copy(t.p("/bin/app"), &hard).unwrap();
    assert_eq!(
        t.findings(),
        one(
            "/bin/app-hard",
            Change::HardLink {
                target: "/bin/app".into()
            }
        )
    );
}

#[test]
fn special_files_are_checked_like_files() {
    let t = tree();
    fs::remove_file(t.p("/etc/initctl")).unwrap();
    fs::write(t.p("/etc/initctl"), b"").unwrap();
    chmod(&t.p("/etc/initctl"), 0o600);
    assert_eq!(
        t.findings(),
        one(
            "/etc/initctl",
            Change::Kind {
                want: Kind::Fifo,
                got: Kind::File
            }
        )
    );
    let t = tree();
    chmod(&t.p("/etc/initctl"), 0o666);
    nix::unistd::mkfifo(&t.p("/bin/pipe"), Mode::S_IRUSR).unwrap();
    assert_eq!(
        t.findings(),
        [
            ("/bin/pipe".to_string(), Change::Added { kind: Kind::Fifo }),
            (
                "/etc/initctl".to_string(),
                Change::Mode {
                    want: 0o600,
                    got: 0o666
                }
            ),
        ]
    );
}

#[test]
fn mountpoints_only_have_to_be_directories() {
    let t = tree();
    // Whatever is in them, their mode, or whether they exist at all.
    fs::write(t.p("/proc/stray"), b"x").unwrap();
    chmod(&t.p("/proc"), 0o700);
    fs::remove_dir(t.p("/tmp")).unwrap();
    assert_eq!(t.findings(), []);
    fs::remove_file(t.p("/proc/stray")).unwrap();
    fs::remove_dir(t.p("/proc")).unwrap();
    symlink("/", t.p("/proc")).unwrap();
    assert_eq!(
        t.findings(),
        one(
            "/proc",
            Change::Kind {
                want: Kind::Dir,
                got: Kind::Symlink
            }
        )
    );
}

#[test]
fn a_mount_inside_the_root_is_found_and_not_entered() {
    let t = tree();
    let etc = t.p("/etc");
    let mounted = nix::mount::mount(
        Some("tmpfs"),
        &etc,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    );
    if let Err(e) = mounted {
        eprintln!("skipped: cannot mount a tmpfs here: {e}");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _guard = Unmount(&etc);
    fs::write(etc.join("planted"), b"x").unwrap();
    let found = t.findings();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "/etc");
    assert!(matches!(found[0].1, Change::Mount { .. }), "{found:?}");
}

#[test]
fn a_missing_root_is_an_error_that_names_it() {
    let mut t = tree();
    t.rootfs.path = t._dir.path().join("gone");
    let err = scan(&t.rootfs, &t.baseline, &Budget::unlimited()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("gone"), "{err}");
}

#[test]
fn a_byte_budget_slows_the_scan_down() {
    let t = tree();
    let budget = Budget {
        threads: 2,
        bytes_per_sec: Some(4 << 20),
        low_priority: true,
    };
    let start = Instant::now();
    let r = scan(&t.rootfs, &t.baseline, &budget).unwrap();
    let took = start.elapsed();
    assert!(r.is_clean(), "{:?}", r.findings);
    // 3 MiB at 4 MiB/s is 0.75 s; allow for the burst and slack.
    assert!(took >= Duration::from_millis(500), "took {took:?}");
}

#[test]
fn findings_read_well_and_serialize_flat() {
    let f = |path: &str, change| Finding {
        path: path.into(),
        change,
    };
    let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
    let content = f("/etc/motd", Change::Content { want: a, got: b });
    assert_eq!(
        content.to_string(),
        format!(
            "/etc/motd: content sha256:{}… ≠ baseline sha256:{}…",
            b.short(),
            a.short()
        )
    );
    let mode = f(
        "/bin/x",
        Change::Mode {
            want: 0o755,
            got: 0o4755,
        },
    );
    assert_eq!(mode.to_string(), "/bin/x: mode 0755 → 4755");
    assert_eq!(
        f("/new", Change::Added { kind: Kind::File }).to_string(),
        "/new: added (file)"
    );
    assert_eq!(
        serde_json::to_value(&mode).unwrap(),
        serde_json::json!({"path": "/bin/x", "change": "mode", "want": "0755", "got": "4755"})
    );
    assert_eq!(
        serde_json::to_value(f(
            "/x",
            Change::Kind {
                want: Kind::File,
                got: Kind::CharDevice
            }
        ))
        .unwrap(),
        serde_json::json!({"path": "/x", "change": "kind", "want": "file", "got": "char_device"})
    );
}

// Issue 16: "an xattr added to a root file is not reported as drift".
#[test]
fn extended_attributes_added_removed_or_changed_are_drift() {
    let mut t = tree();
    assert!(t.findings().is_empty());
    // Added: a user xattr on a file and a capability-like one on su.
    crate::sys::set_xattr(&t.p("/etc/motd"), "user.evil", b"1").unwrap();
    let found = t.findings();
    assert_eq!(
        found,
        [(
            "/etc/motd".to_string(),
            Change::Xattr {
                name: "user.evil".into(),
                detail: "added".into()
            }
        )]
    );
    // The baseline records one: same value is clean, another value or none is drift.
    let i = t
        .baseline
        .files
        .iter()
        .position(|f| f.path == "/etc/motd")
        .unwrap();
    t.baseline.files[i]
        .xattrs
        .insert("user.evil".into(), hex::encode(b"1"));
    assert!(t.findings().is_empty(), "{:?}", t.findings());
    crate::sys::set_xattr(&t.p("/etc/motd"), "user.evil", b"2").unwrap();
    assert_eq!(
        t.findings()[0].1,
        Change::Xattr {
            name: "user.evil".into(),
            detail: "changed".into()
        }
    );
    t.baseline.files[i]
        .xattrs
        .insert("user.gone".into(), hex::encode(b"x"));
    assert!(
        t.findings().contains(&(
            "/etc/motd".to_string(),
            Change::Xattr {
                name: "user.gone".into(),
                detail: "removed".into()
            }
        )),
        "{:?}",
        t.findings()
    );
    // The host's LSM label is the host's, not drift.
    assert!(HOST_LABELS.contains(&"security.selinux"));
}
