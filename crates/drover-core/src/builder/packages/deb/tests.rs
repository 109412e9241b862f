use std::io::Write as _;
use std::os::unix::fs::MetadataExt;

use super::*;
use crate::digest::Digest;

/// One raw tar entry: its name as bytes (so hostile names can be made),
/// type flag, mode, link name and content.
struct T<'a> {
    name: &'a [u8],
    kind: u8,
    mode: u32,
    link: &'a [u8],
    data: &'a [u8],
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> T<'a> {
    T {
        name: name.as_bytes(),
        kind: b'0',
        mode: 0o644,
        link: b"",
        data,
    }
}

fn dir(name: &str) -> T<'_> {
    T {
        name: name.as_bytes(),
        kind: b'5',
        mode: 0o755,
        link: b"",
        data: b"",
    }
}

fn link<'a>(name: &'a str, kind: u8, target: &'a str) -> T<'a> {
    T {
        name: name.as_bytes(),
        kind,
        mode: 0o777,
        link: target.as_bytes(),
        data: b"",
    }
}

fn tar(entries: &[T<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = ::tar::Header::new_ustar();
        {
            let raw = h.as_old_mut();
            raw.name = [0; 100];
            raw.name[..e.name.len()].copy_from_slice(e.name);
            raw.linkname = [0; 100];
            raw.linkname[..e.link.len()].copy_from_slice(e.link);
        }
        h.set_entry_type(::tar::EntryType::new(e.kind));
        h.set_mode(e.mode);
        h.set_uid(0);
        h.set_gid(if e.mode & 0o2000 != 0 { 42 } else { 0 });
        h.set_size(e.data.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn xz(bytes: &[u8]) -> Vec<u8> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn ar(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        out.extend_from_slice(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                name,
                0,
                0,
                0,
                "100644",
                data.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

const CONTROL: &str = "Package: hello\nVersion: 1.0\nArchitecture: amd64\n";

fn control_tar() -> Vec<u8> {
    gz(&tar(&[
        dir("./"),
        file("./control", CONTROL.as_bytes()),
        file("./md5sums", b"abc  usr/bin/hello\n"),
        file("./conffiles", b"/etc/hello.conf\n"),
        T {
            mode: 0o755,
            ..file("./postinst", b"#!/bin/sh\necho hi\n")
        },
        file("./shlibs", b"libhello 1 hello\n"),
    ]))
}

fn deb_with(data: &[T<'_>]) -> Vec<u8> {
    ar(&[
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.gz", control_tar()),
        ("data.tar.xz", xz(&tar(data))),
    ])
}

struct Case {
    _dir: tempfile::TempDir,
    deb: PathBuf,
    staging: PathBuf,
}

fn case(bytes: &[u8]) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("p.deb");
    fs::write(&deb, bytes).unwrap();
    let staging = dir.path().join("staging");
    Case {
        _dir: dir,
        deb,
        staging,
    }
}

fn read(bytes: &[u8]) -> Result<(Deb, Case)> {
    let c = case(bytes);
    let d = unpack(&c.deb, "package hello", &c.staging, &Limits::default())?;
    Ok((d, c))
}

fn refused(bytes: &[u8], want: &str) {
    let e = read(bytes).map(|_| ()).unwrap_err();
    let s = e.to_string();
    assert!(s.contains(want), "expected {want:?} in: {s}");
    assert!(s.contains("package hello"), "the package is named: {s}");
}

#[test]
fn reads_control_and_writes_the_data_tree() {
    let (d, c) = read(&deb_with(&[
        dir("./"),
        dir("./usr/"),
        dir("./usr/bin/"),
        T {
            mode: 0o4755,
            ..file("./usr/bin/hello", b"#!/bin/sh\necho hello\n")
        },
        link("./usr/bin/hi", b'2', "hello"),
        link("./usr/bin/hello2", b'1', "./usr/bin/hello"),
        // Implied parents: usr/share and usr/share/doc are not listed.
        file("./usr/share/doc/hello/copyright", b"GPL"),
    ]))
    .unwrap();
    assert_eq!(d.control, CONTROL);
    assert_eq!(d.md5sums.as_deref(), Some("abc  usr/bin/hello\n"));
    assert_eq!(d.conffiles.as_deref(), Some("/etc/hello.conf\n"));
    assert_eq!(d.scripts.len(), 1);
    assert_eq!(d.scripts[0].0, "postinst");
    assert_eq!(d.other[0].0, "shlibs");
    let paths: Vec<(&str, Kind)> = d
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e.kind))
        .collect();
    assert_eq!(
        paths,
        [
            ("usr", Kind::Dir),
            ("usr/bin", Kind::Dir),
            ("usr/bin/hello", Kind::File),
            ("usr/bin/hi", Kind::Symlink),
            ("usr/bin/hello2", Kind::Hardlink),
            ("usr/share", Kind::Dir),
            ("usr/share/doc", Kind::Dir),
            ("usr/share/doc/hello", Kind::Dir),
            ("usr/share/doc/hello/copyright", Kind::File),
        ]
    );
    let hello = &d.entries[2];
    let content = b"#!/bin/sh\necho hello\n";
    assert_eq!(hello.mode, 0o4755, "setuid is kept in the entry");
    assert_eq!(hello.size, content.len() as u64);
    assert_eq!(hello.sha256, Some(Digest::of(content)));
    assert_eq!(hello.sha1, Some(crate::builder::sbom::sha1_of(content)));
    let Some(Source::Disk { path, stat }) = &hello.source else {
        panic!("a file has its bytes on disk");
    };
    assert_eq!(path, &c.staging.join("usr/bin/hello"));
    assert_eq!(fs::read(path).unwrap(), content);
    let meta = fs::symlink_metadata(path).unwrap();
    assert_eq!(
        meta.mode() & 0o7777,
        0o644,
        "never setuid on the staging disk"
    );
    assert_eq!(
        *stat,
        StatKey::of(&meta),
        "the stat is current (after the hard link)"
    );
    assert_eq!(meta.nlink(), 2);
    assert_eq!(d.entries[3].link.as_deref(), Some("hello"));
    assert_eq!(
        fs::read_link(c.staging.join("usr/bin/hi")).unwrap(),
        Path::new("hello")
    );
    assert_eq!(d.entries[4].link.as_deref(), Some("usr/bin/hello"));
    assert_eq!(d.entries[4].size, 0);
}

#[test]
fn every_compression_and_plain_members_work() {
    let data = tar(&[file("./a", b"x")]);
    let zst = zstd::encode_all(&data[..], 1).unwrap();
    for (name, bytes) in [
        ("data.tar", data.clone()),
        ("data.tar.gz", gz(&data)),
        ("data.tar.xz", xz(&data)),
        ("data.tar.zst", zst),
    ] {
        let control = tar(&[file("control", CONTROL.as_bytes())]);
        let deb = ar(&[
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar", control),
            (name, bytes),
        ]);
        let (d, _c) = read(&deb).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.entries.len(), 1, "{name}");
    }
}

#[test]
fn dpkg_deb_builds_what_we_read() {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        eprintln!("skipped: no dpkg-deb");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("DEBIAN")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("DEBIAN/control"), "Package: t\nVersion: 1\nArchitecture: all\nMaintainer: x <x@example.org>\nDescription: t\n").unwrap();
    fs::write(root.join("usr/bin/t"), b"tool").unwrap();
    std::os::unix::fs::symlink("t", root.join("usr/bin/u")).unwrap();
    for comp in ["xz", "gzip", "zstd", "none"] {
        let deb = dir.path().join(format!("t-{comp}.deb"));
        let out = Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Z", comp, "--build"])
            .arg(&root)
            .arg(&deb)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let staging = dir.path().join(format!("s-{comp}"));
        let d = unpack(&deb, "package t", &staging, &Limits::default()).unwrap();
        assert!(d.control.starts_with("Package: t\n"));
        let t = d.entries.iter().find(|e| e.path == "usr/bin/t").unwrap();
        assert_eq!(t.sha256, Some(Digest::of(b"tool")));
        assert_eq!(fs::read(staging.join("usr/bin/t")).unwrap(), b"tool");
    }
}

use std::process::Command;

#[test]
fn hostile_names_are_refused() {
    for (name, want) in [
        (&b"./../etc/passwd"[..], "escapes"),
        (b"./usr/../../x", "escapes"),
        (b"/etc/passwd", "absolute"),
        (b".//etc/x", "absolute"),
        (b"./a//b", "empty"),
        (b"./a/./b", "empty or '.'"),
        (b"./a/\xff", "UTF-8"),
    ] {
        let deb = deb_with(&[T {
            name,
            ..file("", b"x")
        }]);
        refused(&deb, want);
    }
}

#[test]
fn devices_and_fifos_are_refused_by_name() {
    for (kind, want) in [
        (b'3', "character device"),
        (b'4', "block device"),
        (b'6', "FIFO"),
    ] {
        let deb = deb_with(&[T {
            kind,
            ..file("./dev/null", b"")
        }]);
        let e = read(&deb).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("./dev/null"), "{e}");
    }
}

#[test]
fn hard_links_must_point_at_an_earlier_regular_file() {
    refused(
        &deb_with(&[link("./a", b'1', "./b"), file("./b", b"x")]),
        "not earlier in the package",
    );
    refused(&deb_with(&[link("./a", b'1', "/etc/shadow")]), "absolute");
    refused(
        &deb_with(&[link("./a", b'1', "../../etc/shadow")]),
        "escapes",
    );
    refused(
        &deb_with(&[dir("./d/"), link("./a", b'1', "./d")]),
        "not a regular file",
    );
    refused(
        &deb_with(&[link("./s", b'2', "/etc/shadow"), link("./a", b'1', "./s")]),
        "not a regular file",
    );
}

#[test]
fn nothing_is_written_through_a_symlink() {
    let c = case(b"");
    let outside = c._dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let target = outside.to_str().unwrap();
    for deb in [
        deb_with(&[link("./evil", b'2', target), file("./evil/x", b"pwned")]),
        deb_with(&[link("./evil", b'2', target), dir("./evil/sub/")]),
        deb_with(&[
            link("./evil", b'2', target),
            file("./y", b"y"),
            link("./evil/y", b'1', "./y"),
        ]),
        deb_with(&[link("./evil", b'2', "."), file("./evil/x", b"x")]),
        deb_with(&[file("./f", b"f"), file("./f/x", b"x")]),
    ] {
        let staging = c._dir.path().join(format!("s{}", rand_suffix()));
        fs::write(&c.deb, &deb).unwrap();
        let e = unpack(&c.deb, "package hello", &staging, &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("refusing to go through"), "{e}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn a_staging_dir_already_holding_a_symlink_is_not_followed() {
    let c = case(&deb_with(&[file("./evil/x", b"pwned")]));
    let outside = c._dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::create_dir(&c.staging).unwrap();
    std::os::unix::fs::symlink(&outside, c.staging.join("evil")).unwrap();
    assert!(unpack(&c.deb, "package hello", &c.staging, &Limits::default()).is_err());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn the_same_path_twice_is_refused_but_a_directory_may_repeat() {
    refused(
        &deb_with(&[file("./a", b"1"), file("./a", b"2")]),
        "same path twice",
    );
    let (d, _c) = read(&deb_with(&[
        dir("./d/"),
        T {
            mode: 0o700,
            ..dir("./d/")
        },
    ]))
    .unwrap();
    assert_eq!(d.entries.len(), 1);
    assert_eq!(d.entries[0].mode, 0o700);
}

#[test]
fn wrong_ar_members_are_refused() {
    let data = || xz(&tar(&[file("./a", b"x")]));
    refused(b"not an archive at all", "ar archive");
    refused(
        &ar(&[("control.tar.gz", control_tar()), ("data.tar.xz", data())]),
        "not debian-binary",
    );
    refused(
        &ar(&[
            ("debian-binary", b"3.0\n".to_vec()),
            ("control.tar.gz", control_tar()),
            ("data.tar.xz", data()),
        ]),
        "debian-binary",
    );
    refused(
        &ar(&[
            ("debian-binary", b"2.0\n".to_vec()),
            ("data.tar.xz", data()),
            ("control.tar.gz", control_tar()),
        ]),
        "where control.tar",
    );
    refused(
        &ar(&[
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.gz", control_tar()),
        ]),
        "no data.tar",
    );
    refused(
        &ar(&[
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.gz", control_tar()),
            ("data.tar.bz2", b"BZh".to_vec()),
        ]),
        "not supported",
    );
    refused(
        &ar(&[
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.gz", control_tar()),
            ("data.tar.xz", data()),
            ("evil", b"x".to_vec()),
        ]),
        "after data.tar",
    );
    // A truncated member and a corrupt stream.
    let mut cut = deb_with(&[file("./a", &[7u8; 100_000])]);
    cut.truncate(cut.len() - 40);
    assert!(read(&cut).is_err());
    refused(
        &ar(&[
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.gz", control_tar()),
            ("data.tar.xz", b"not xz at all".to_vec()),
        ]),
        "data.tar",
    );
    // No control file in control.tar.
    refused(
        &ar(&[
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar", tar(&[file("./md5sums", b"")])),
            ("data.tar.xz", data()),
        ]),
        "no control file",
    );
    // dpkg ignores members named _*; so do we.
    let (d, _c) = read(&ar(&[
        ("debian-binary", b"2.0\n".to_vec()),
        ("_gpgorigin", b"sig".to_vec()),
        ("control.tar.gz", control_tar()),
        ("data.tar.xz", data()),
    ]))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.entries.len(), 1);
}

#[test]
fn sizes_and_counts_are_bounded() {
    let big = vec![0u8; 1 << 20];
    let c = case(&deb_with(&[file("./a", &big), file("./b", b"x")]));
    let limits = Limits {
        layer_bytes: 512 << 10,
        ..Limits::default()
    };
    let e = unpack(&c.deb, "package hello", &c.staging, &limits).unwrap_err();
    assert!(e.to_string().contains("layer_bytes"), "{e}");
    let limits = Limits {
        layer_entries: 1,
        ..Limits::default()
    };
    let staging = c.staging.with_extension("2");
    let e = unpack(&c.deb, "package hello", &staging, &limits).unwrap_err();
    assert!(e.to_string().contains("layer_entries"), "{e}");
    // A GNU long name declaring far more than tar_header_bytes.
    let mut h = ::tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(::tar::EntryType::GNULongName);
    h.set_size(1 << 40);
    h.set_cksum();
    let mut stream = h.as_bytes().to_vec();
    stream.resize(64 << 10, 0);
    let deb = ar(&[
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.gz", control_tar()),
        ("data.tar.gz", gz(&stream)),
    ]);
    refused(&deb, "tar_header_bytes");
}
