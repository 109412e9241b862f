use std::os::unix::fs::{PermissionsExt, chown, symlink};

use super::*;

const BASE: u32 = 0x7001_0000;
const COUNT: u32 = 65536;

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn mknod_whiteout(path: &Path) {
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
}

fn paths(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.path.as_str()).collect()
}

/// An upper directory as overlayfs leaves it: changed files owned by the
/// sandbox's ids, whiteouts as char devices 0:0, an opaque directory.
#[test]
fn an_upper_directory_becomes_layer_entries() {
    if !root() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let up = d.path();
    let own = |p: &Path, id: u32| chown(p, Some(BASE + id), Some(BASE + id)).unwrap();
    fs::create_dir_all(up.join("etc")).unwrap();
    fs::set_permissions(up.join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
    own(&up.join("etc"), 0);
    fs::write(up.join("etc/greeting"), "hi\n").unwrap();
    fs::set_permissions(up.join("etc/greeting"), fs::Permissions::from_mode(0o640)).unwrap();
    own(&up.join("etc/greeting"), 1000);
    fs::hard_link(up.join("etc/greeting"), up.join("etc/hello")).unwrap();
    fs::create_dir(up.join("bin")).unwrap();
    own(&up.join("bin"), 0);
    mknod_whiteout(&up.join("bin/sh"));
    fs::create_dir_all(up.join("var/cache")).unwrap();
    own(&up.join("var"), 0);
    own(&up.join("var/cache"), 0);
    crate::sys::set_xattr(&up.join("var/cache"), OPAQUE_XATTR, b"y").unwrap();
    fs::write(up.join("var/cache/-x"), "").unwrap();
    own(&up.join("var/cache/-x"), 0);
    symlink("../etc/greeting", up.join("var/link")).unwrap();
    nix::unistd::fchownat(
        None,
        &up.join("var/link"),
        Some(nix::unistd::Uid::from_raw(BASE + 5)),
        Some(nix::unistd::Gid::from_raw(BASE + 6)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();

    let entries = upper_entries(up, BASE, COUNT).unwrap();
    assert_eq!(
        paths(&entries),
        [
            "bin",
            "bin/.wh.sh",
            "etc",
            "etc/greeting",
            "etc/hello",
            "var",
            "var/cache",
            "var/cache/.wh..wh..opq",
            "var/cache/-x",
            "var/link",
        ]
    );
    let by = |p: &str| entries.iter().find(|e| e.path == p).unwrap();
    let wh = by("bin/.wh.sh");
    assert_eq!(
        (wh.kind, wh.size, wh.uid, wh.mode),
        (Kind::File, 0, 0, 0o644)
    );
    let g = by("etc/greeting");
    assert_eq!(
        (g.kind, g.uid, g.gid, g.mode, g.size),
        (Kind::File, 1000, 1000, 0o640, 3)
    );
    let h = by("etc/hello");
    assert_eq!(h.kind, Kind::Hardlink);
    assert_eq!(h.link.as_deref(), Some("etc/greeting"));
    let l = by("var/link");
    assert_eq!((l.kind, l.uid, l.gid), (Kind::Symlink, 5, 6));
    assert_eq!(l.link.as_deref(), Some("../etc/greeting"));
    assert_eq!(by("var/cache/.wh..wh..opq").kind, Kind::File);

    // As the baseline reads them: the whiteout removes, the opaque marker empties.
    let mut m = crate::store::baseline::Merger::default();
    for p in ["/bin/sh", "/bin/ls", "/var/cache/old", "/var/cache/old/a"] {
        m.put(crate::store::baseline::FileRecord {
            path: p.into(),
            kind: crate::store::baseline::FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            sha256: None,
            link: None,
            xattrs: Default::default(),
        });
    }
    for e in &entries {
        m.apply_record(e.record());
    }
    let left: Vec<String> = m.finish().files.into_iter().map(|f| f.path).collect();
    assert!(left.contains(&"/bin/ls".to_string()));
    assert!(!left.contains(&"/bin/sh".to_string()));
    assert!(!left.iter().any(|p| p.starts_with("/var/cache/old")));
    assert!(left.contains(&"/var/cache/-x".to_string()));
    assert!(!left.iter().any(|p| p.contains(".wh.")));
}

#[test]
fn ids_outside_the_sandbox_and_special_files_are_refused_by_path() {
    if !root() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("f"), "").unwrap();
    chown(d.path().join("f"), Some(0), Some(0)).unwrap();
    let e = upper_entries(d.path(), BASE, COUNT)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/f") && e.contains("outside the sandbox's ids"),
        "{e}"
    );

    let d = tempfile::tempdir().unwrap();
    nix::unistd::mkfifo(
        &d.path().join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    chown(d.path().join("pipe"), Some(BASE), Some(BASE)).unwrap();
    let e = upper_entries(d.path(), BASE, COUNT)
        .unwrap_err()
        .to_string();
    assert!(e.contains("/pipe") && e.contains("a fifo"), "{e}");
}

#[test]
fn mount_points_the_runtime_made_are_not_part_of_the_layer() {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("opt")).unwrap();
    let dir = |p: &str| Entry {
        path: p.into(),
        kind: Kind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        link: None,
        source: None,
        sha256: None,
        sha1: None,
        xattrs: vec![],
    };
    let mut entries = vec![
        dir("opt"),
        dir("opt/src"),
        dir("src"),
        dir("src/app"),
        dir("work"),
        dir("work/in"),
        whiteout("work", ".wh.kept"),
    ];
    drop_scaffolding(
        &mut entries,
        d.path(),
        &["/opt/src", "/src/app", "/work/in"],
    );
    // /opt existed (it is a copied-up parent); /work holds something else.
    assert_eq!(paths(&entries), ["opt", "work", "work/.wh.kept"]);
}

#[test]
fn the_tail_keeps_the_last_lines() {
    let mut t = Tail::default();
    for i in 0..100 {
        t.push(format!("line {i}\n").as_bytes());
    }
    t.push(b"no newline");
    let lines = t.finish();
    assert_eq!(lines.len(), TAIL_LINES);
    assert_eq!(lines.last().unwrap(), "no newline");
    assert_eq!(lines[0], format!("line {}", 100 - TAIL_LINES + 1));
}

#[test]
fn the_environment_is_the_images_then_the_layers_with_a_default_path() {
    let run = RunLayer {
        command: vec!["x".into()],
        mounts: vec![],
        network: false,
        timeout_ms: 1,
        env: [("A".to_string(), "2".to_string())].into(),
        workdir: "/".into(),
        user: (0, 0),
    };
    assert_eq!(
        environment(&["A=1".into(), "B=x=y".into()], &run.env),
        [format!("PATH={DEFAULT_PATH}"), "B=x=y".into(), "A=2".into()]
    );
    assert_eq!(
        environment(&["PATH=/bin".into()], &run.env),
        ["PATH=/bin", "A=2"]
    );
}
