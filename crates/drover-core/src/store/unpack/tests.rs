use std::io::Write as _;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::*;
use crate::error::ErrorKind;
use crate::limits::Limits;
use crate::store::Descriptor;
use crate::store::baseline::{ARTIFACT_TYPE, Baseline};
use crate::store::oci::{self, ContainerConfig, ImageConfig, Manifest, RootFs};

const MTIME: u64 = 1_700_000_000;

/// A tar stream written header by header, so tests can write what the
/// tar crate refuses to (`..`, absolute names, device nodes).
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    #[allow(clippy::too_many_arguments)]
    fn raw(
        mut self,
        name: &str,
        flag: u8,
        mode: u32,
        owner: u32,
        link: &str,
        data: &[u8],
        dev: (u32, u32),
    ) -> Self {
        let mut h = [0u8; 512];
        let octal = |v: u64, width: usize| format!("{v:0w$o}\0", w = width - 1).into_bytes();
        let put = |h: &mut [u8; 512], at: usize, bytes: &[u8]| {
            h[at..at + bytes.len()].copy_from_slice(bytes)
        };
        put(&mut h, 0, name.as_bytes());
        put(&mut h, 100, &octal(mode.into(), 8));
        put(&mut h, 108, &octal(owner.into(), 8));
        put(&mut h, 116, &octal(owner.into(), 8));
        put(&mut h, 124, &octal(data.len() as u64, 12));
        put(&mut h, 136, &octal(MTIME, 12));
        put(&mut h, 148, b"        ");
        h[156] = flag;
        put(&mut h, 157, link.as_bytes());
        put(&mut h, 257, b"ustar\x0000");
        put(&mut h, 329, &octal(dev.0.into(), 8));
        put(&mut h, 337, &octal(dev.1.into(), 8));
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        put(&mut h, 148, &octal(sum.into(), 8));
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(512), 0);
        self
    }
    fn entry(self, name: &str, flag: u8, mode: u32, owner: u32, data: &[u8]) -> Self {
        self.raw(name, flag, mode, owner, "", data, (0, 0))
    }
    fn dir(self, name: &str) -> Self {
        self.entry(name, b'5', 0o755, 0, b"")
    }
    fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(name, b'0', 0o644, 0, data)
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        self.raw(name, b'2', 0o777, 0, target, b"", (0, 0))
    }
    fn hardlink(self, name: &str, target: &str) -> Self {
        self.raw(name, b'1', 0o644, 0, target, b"", (0, 0))
    }
    fn device(self, name: &str, flag: u8, dev: (u32, u32)) -> Self {
        self.raw(name, flag, 0o666, 0, "", b"", dev)
    }
    /// A PAX record for the next entry.
    fn pax(self, key: &str, value: &str) -> Self {
        let body = format!(" {key}={value}\n");
        let len = (1..)
            .find(|&l| l == body.len() + l.to_string().len())
            .unwrap();
        self.entry(
            "PaxHeader",
            b'x',
            0o644,
            0,
            format!("{len}{body}").as_bytes(),
        )
    }
    fn bytes(mut self) -> Vec<u8> {
        self.0.extend([0; 1024]);
        self.0
    }
}

fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// Store an image of `layers` (gzip, zstd, then plain tar) and attach
/// the baseline the layers give, after `edit`.
fn image_with(
    store: &mut Store,
    layers: &[Vec<u8>],
    labels: &[(&str, &str)],
    edit: impl FnOnce(&mut Baseline),
) -> Digest {
    let descs = layers
        .iter()
        .enumerate()
        .map(|(i, tar)| {
            let (media_type, blob) = match i {
                0 => {
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gz.write_all(tar).unwrap();
                    (oci::MEDIA_LAYER_GZIP, gz.finish().unwrap())
                }
                1 => (
                    oci::MEDIA_LAYER_ZSTD,
                    zstd::encode_all(&tar[..], 3).unwrap(),
                ),
                _ => (oci::MEDIA_LAYER_TAR, tar.clone()),
            };
            Descriptor::new(
                media_type,
                store.put_blob(&blob).unwrap(),
                blob.len() as u64,
            )
        })
        .collect();
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: ContainerConfig {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|t| Digest::of(t)).collect(),
        },
        ..Default::default()
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.into()),
        artifact_type: None,
        config: store.put_json(oci::MEDIA_CONFIG, &config).unwrap(),
        layers: descs,
        subject: None,
        annotations: Default::default(),
    };
    let image = store.put_json(oci::MEDIA_MANIFEST, &manifest).unwrap();
    let mut b = baseline::of_image(store, &image.digest).unwrap();
    edit(&mut b);
    let artifact = baseline::store_artifact(store, &image, &b).unwrap();
    store
        .mutate(|m| m.add_referrer(&artifact, &image.digest, ARTIFACT_TYPE))
        .unwrap();
    image.digest
}

fn image(store: &mut Store, layers: &[Vec<u8>], labels: &[(&str, &str)]) -> Digest {
    image_with(store, layers, labels, |_| {})
}

/// What is under rootfs/ besides lock files.
fn leftovers(layout: &Layout) -> Vec<String> {
    let Ok(dir) = fs::read_dir(rootfs_dir(layout)) else {
        return Vec::new();
    };
    dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect()
}

/// Materialize an image of `layers`, expecting a refusal that leaves nothing behind.
fn refusal(layers: &[Vec<u8>], labels: &[(&str, &str)]) -> String {
    let (_dir, mut store) = new_store();
    let image = image(&mut store, layers, labels);
    let err = materialize(&store, &image).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert_eq!(leftovers(store.layout()), Vec::<String>::new());
    err.to_string()
}

fn assert_contains(haystack: &str, needle: &str) {
    assert!(haystack.contains(needle), "{needle:?} not in {haystack:?}");
}

#[test]
fn layers_unpack_faithfully_and_only_once() {
    let (_dir, mut store) = new_store();
    let base = Tar::default()
        .dir("etc/")
        .file("etc/passwd", b"root:x:0:0\n")
        .file("etc/gone", b"x")
        .pax("SCHILY.xattr.user.drover", "yes")
        .file("etc/tagged", b"t")
        .entry("etc/initctl", b'6', 0o600, 0, b"")
        .dir("bin/")
        .entry("bin/busybox", b'0', 0o755, 0, b"busybox")
        .symlink("bin/sh", "/bin/busybox")
        .entry("bin/su", b'0', 0o4755, 0, b"su")
        .entry("home/user/", b'5', 0o700, 1000, b"")
        .entry("home/user/notes", b'0', 0o600, 1000, b"mine")
        .dir("var/cache/")
        .file("var/cache/old", b"old")
        .dir("opt/app/")
        .file("opt/app/x", b"x")
        .entry("tmp/", b'5', 0o1777, 0, b"")
        .bytes();
    let top = Tar::default()
        .file("etc/.wh.gone", b"")
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/new", b"new")
        .hardlink("bin/busybox-hard", "bin/busybox")
        .file("etc/passwd", b"root:x:0:0:root\n")
        .file("opt/app", b"now a file")
        .bytes();
    let last = Tar::default().file("./etc/motd", b"hi").bytes();
    let image = image(&mut store, &[base, top, last], &[]);

    let r = materialize(&store, &image).unwrap();
    assert!(r.unpacked);
    assert_eq!(r.path, rootfs_path(store.layout(), &image));
    assert_eq!(r.added, ["/proc", "/dev", "/sys", "/run"]);
    assert_eq!(
        r.specials,
        [Special {
            path: "/etc/initctl".into(),
            kind: SpecialKind::Fifo,
            mode: 0o600,
            uid: 0,
            gid: 0,
            major: 0,
            minor: 0,
        }]
    );
    let p = |rel: &str| r.path.join(rel);
    let meta = |rel: &str| fs::symlink_metadata(p(rel)).unwrap();
    let mode = |rel: &str| meta(rel).mode() & 0o7777;
    assert_eq!(fs::read(p("etc/passwd")).unwrap(), b"root:x:0:0:root\n");
    assert_eq!(fs::read(p("etc/motd")).unwrap(), b"hi");
    assert!(fs::symlink_metadata(p("etc/gone")).is_err());
    assert!(fs::symlink_metadata(p("var/cache/old")).is_err());
    assert_eq!(fs::read(p("var/cache/new")).unwrap(), b"new");
    assert_eq!(fs::read(p("opt/app")).unwrap(), b"now a file");
    assert_eq!(
        fs::read_link(p("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(meta("bin/busybox-hard").ino(), meta("bin/busybox").ino());
    assert!(meta("etc/initctl").file_type().is_fifo());
    assert_eq!(mode("bin/su"), 0o4755);
    let home = meta("home/user");
    assert_eq!(
        (home.uid(), home.gid(), mode("home/user")),
        (1000, 1000, 0o700)
    );
    assert_eq!(
        (meta("home/user/notes").uid(), mode("home/user/notes")),
        (1000, 0o600)
    );
    assert_eq!(meta("etc/passwd").mtime(), MTIME as i64);
    assert_eq!(
        (mode(""), mode("home"), mode("proc"), mode("tmp")),
        (0o755, 0o755, 0o755, 0o1777)
    );
    let user_xattrs: Vec<_> = crate::sys::xattrs(&p("etc/tagged"))
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.starts_with("user."))
        .collect();
    assert_eq!(user_xattrs, [("user.drover".to_string(), b"yes".to_vec())]);

    let again = materialize(&store, &image).unwrap();
    assert!(!again.unpacked);
    assert_eq!((&again.path, &again.added), (&r.path, &r.added));
}

#[test]
fn names_that_escape_the_root_are_refused() {
    for (name, why) in [
        (
            "../etc/passwd",
            r#"entry "../etc/passwd": path escapes the root"#,
        ),
        ("a/../../x", "path escapes the root"),
        ("/etc/passwd", "path escapes the root (absolute name)"),
        ("a//b", "empty or '.' component"),
        ("", "empty name"),
        // Would remove the directory holding it.
        ("etc/.wh...", "whiteout names no file"),
    ] {
        let msg = refusal(&[Tar::default().dir("etc/").file(name, b"x").bytes()], &[]);
        assert_contains(&msg, why);
    }
}

#[test]
fn nothing_is_written_through_a_symlink() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap();
    let msg = refusal(
        &[Tar::default()
            .symlink("a", target)
            .file("a/passwd", b"pwned")
            .bytes()],
        &[],
    );
    assert_contains(
        &msg,
        r#"entry "a/passwd": /a (on the way to /a/passwd) is a symlink"#,
    );
    assert!(!outside.path().join("passwd").exists());

    let chain = Tar::default()
        .symlink("a", "b")
        .symlink("b", "../..")
        .file("a/x", b"pwned");
    assert_contains(
        &refusal(&[chain.bytes()], &[]),
        "/a (on the way to /a/x) is a symlink",
    );
    // Not even when the symlink arrives in an earlier layer.
    let layers = [
        Tar::default().symlink("etc", target).bytes(),
        Tar::default().file("etc/x", b"pwned").bytes(),
    ];
    assert_contains(
        &refusal(&layers, &[]),
        "/etc (on the way to /etc/x) is a symlink",
    );
    let through_file = Tar::default().file("f", b"").file("f/x", b"");
    assert_contains(
        &refusal(&[through_file.bytes()], &[]),
        "/f (on the way to /f/x) is a regular file",
    );
}

#[test]
fn hard_links_must_name_a_regular_file_in_the_tree() {
    for (tar, why) in [
        (
            Tar::default().file("x", b"").hardlink("h", "../x"),
            "hard link target: path escapes the root",
        ),
        (
            Tar::default().file("x", b"").hardlink("h", "/x"),
            "hard link target: path escapes the root (absolute name)",
        ),
        (
            Tar::default().hardlink("h", "later").file("later", b""),
            "hard link target /later does not exist",
        ),
        (
            Tar::default()
                .dir("real/")
                .file("real/f", b"")
                .symlink("d", "real")
                .hardlink("h", "d/f"),
            "/d (on the way to /d/f) is a symlink",
        ),
        (
            Tar::default()
                .symlink("s", "/etc/shadow")
                .hardlink("h", "s"),
            "/s is a symlink, not a regular file",
        ),
        (
            Tar::default().dir("d/").hardlink("h", "d"),
            "/d is a directory, not a regular file",
        ),
    ] {
        assert_contains(&refusal(&[tar.bytes()], &[]), why);
    }
}

#[test]
fn device_nodes_need_the_image_label() {
    let tar = || Tar::default().device("dev/zero", b'3', (1, 5)).bytes();
    assert_contains(
        &refusal(&[tar()], &[]),
        r#"entry "dev/zero": device nodes must be listed in the image label vnd.drover.devices"#,
    );
    let block = Tar::default().device("dev/sda", b'4', (8, 0)).bytes();
    assert_contains(
        &refusal(&[block], &[(DEVICES_LABEL, "/dev/zero")]),
        "device nodes must be listed",
    );

    let (_dir, mut store) = new_store();
    let image = image(
        &mut store,
        &[tar()],
        &[(DEVICES_LABEL, "/dev/null, /dev/zero")],
    );
    let r = materialize(&store, &image).unwrap();
    let zero = fs::symlink_metadata(r.path.join("dev/zero")).unwrap();
    assert!(zero.file_type().is_char_device());
    assert_eq!(zero.rdev(), makedev(1, 5));
    assert!(!r.added.contains(&"/dev".to_string()));
    let zero = &r.specials[0];
    assert_eq!(
        (r.specials.len(), zero.path.as_str(), zero.kind),
        (1, "/dev/zero", SpecialKind::Char)
    );
    assert_eq!((zero.mode, zero.major, zero.minor), (0o666, 1, 5));
}

#[test]
fn a_tree_unlike_its_baseline_is_corrupt_and_leaves_nothing() {
    let layer = || {
        Tar::default()
            .dir("etc/")
            .file("etc/passwd", b"root:x:0:0\n")
            .bytes()
    };
    for (wrong_hash, why) in [
        (true, "at /etc/passwd: the layers give"),
        (false, "at /etc/passwd: missing from the baseline"),
    ] {
        let (_dir, mut store) = new_store();
        let image = image_with(&mut store, &[layer()], &[], |b| {
            assert_eq!(b.files[1].path, "/etc/passwd");
            if wrong_hash {
                b.files[1].sha256 = Some(Digest::of(b"other"));
            } else {
                b.files.remove(1);
            }
        });
        let err = materialize(&store, &image).unwrap_err().to_string();
        assert_contains(&err, &format!("corrupt image {image}"));
        assert_contains(&err, why);
        assert_eq!(leftovers(store.layout()), Vec::<String>::new());
    }
}

#[test]
fn a_corrupt_layer_blob_fails_and_leaves_nothing() {
    let (_dir, mut store) = new_store();
    let files = (0..50).fold(Tar::default(), |t, i| {
        t.file(&format!("f{i}"), &[i as u8; 3000])
    });
    let image = image(&mut store, &[files.bytes()], &[]);
    let blob = store.blob_path(&store.manifest(&image).unwrap().layers[0].digest);
    let mut bytes = fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    let err = materialize(&store, &image).unwrap_err();
    assert!(matches!(err, Error::CorruptBlob { .. }), "{err}");
    assert_eq!(leftovers(store.layout()), Vec::<String>::new());
}

#[test]
fn concurrent_calls_share_one_unpack() {
    let (dir, mut store) = new_store();
    let files = (0..300).fold(Tar::default(), |t, i| {
        t.file(&format!("f{i}"), &[i as u8; 4000])
    });
    let image = image(&mut store, &[files.bytes()], &[]);
    let results: Vec<Rootfs> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..2)
            .map(|_| s.spawn(|| materialize(&Store::open(dir.path()).unwrap(), &image).unwrap()))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.unpacked).count(), 1);
    assert_eq!(
        (&results[0].path, &results[0].added),
        (&results[1].path, &results[1].added)
    );
    assert_eq!(
        fs::read(results[0].path.join("f299")).unwrap(),
        [43u8; 4000]
    );
}

#[test]
fn an_image_cannot_redirect_a_mountpoint() {
    let tar = Tar::default()
        .dir("var/tmp/")
        .symlink("tmp", "/var/tmp")
        .bytes();
    assert_contains(
        &refusal(&[tar], &[]),
        "/tmp is a symlink; an image cannot redirect a runtime mount",
    );
}

#[test]
fn list_and_remove() {
    let (_dir, mut store) = new_store();
    let a = image(&mut store, &[Tar::default().file("a", b"a").bytes()], &[]);
    let b = image(&mut store, &[Tar::default().file("b", b"b").bytes()], &[]);
    assert_eq!(list(store.layout()).unwrap(), []);
    remove(store.layout(), &a).unwrap();
    materialize(&store, &a).unwrap();
    materialize(&store, &b).unwrap();
    let mut both = vec![a, b];
    both.sort();
    assert_eq!(list(store.layout()).unwrap(), both);
    remove(store.layout(), &a).unwrap();
    assert_eq!(list(store.layout()).unwrap(), [b]);
    assert!(!rootfs_path(store.layout(), &a).exists());
    assert!(materialize(&store, &a).unwrap().unpacked);
}

#[test]
fn special_files_are_recorded_as_the_layers_leave_them() {
    let (_dir, mut store) = new_store();
    let base = Tar::default()
        .entry("a/p", b'6', 0o600, 0, b"")
        .entry("a/q", b'6', 0o600, 0, b"")
        .entry("b/p", b'6', 0o600, 0, b"")
        .entry("c/p", b'6', 0o600, 0, b"")
        .entry("d", b'6', 0o600, 0, b"")
        .bytes();
    let top = Tar::default()
        .file("a/.wh.p", b"")
        .file("b/.wh..wh..opq", b"")
        .file("c", b"a file over the directory")
        .dir("d/")
        .entry("e", b'6', 0o640, 0, b"")
        .bytes();
    let image = image(&mut store, &[base, top], &[]);
    let r = materialize(&store, &image).unwrap();
    let paths: Vec<_> = r.specials.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/a/q", "/e"]);
    assert_eq!(r.specials[1].mode, 0o640);
    // The record keeps them for later calls.
    assert_eq!(
        existing(store.layout(), &image).unwrap().specials,
        r.specials
    );
}

#[test]
fn a_tainted_root_is_moved_aside_and_unpacked_afresh() {
    let (dir, mut store) = new_store();
    let image = image(&mut store, &[Tar::default().file("f", b"f").bytes()], &[]);
    assert_eq!(taint(store.layout(), &image).unwrap(), None);
    let r = materialize(&store, &image).unwrap();
    fs::write(r.path.join("f"), b"tampered").unwrap();
    let before = SystemTime::now();
    let moved = taint(store.layout(), &image).unwrap().unwrap();
    assert!(moved.starts_with(rootfs_dir(store.layout()).join(".tainted")));
    assert_eq!(fs::read(moved.join("f")).unwrap(), b"tampered");
    assert!(Path::new(&format!("{}.json", moved.display())).exists());
    assert!(!r.path.exists());
    assert!(existing(store.layout(), &image).is_none());
    let fresh = materialize(&store, &image).unwrap();
    assert!(fresh.unpacked);
    assert_eq!(fs::read(fresh.path.join("f")).unwrap(), b"f");
    // `.tainted` is no image's root: list (and gc's sweep of roots) skips it.
    assert_eq!(list(store.layout()).unwrap(), [image]);

    let copies = tainted(store.layout(), &image).unwrap();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].0, moved);
    assert!(copies[0].1 >= before);
    assert_eq!(tainted_images(store.layout()).unwrap(), [image]);
    // Copies moved aside after `before` are kept.
    assert_eq!(
        remove_tainted(store.layout(), &image, Some(before)).unwrap(),
        Vec::<PathBuf>::new()
    );
    assert!(moved.exists());
    // gc removes the copies of images no instance runs, even tagged ones.
    store.tag(&image.to_string(), "t:1").unwrap();
    drop(store);
    let mut store = Store::open_exclusive(dir.path()).unwrap();
    let mut report = store.gc(&Default::default()).unwrap();
    store.gc_finish(&mut report).unwrap();
    // The tainted copy, and the fresh root: a tag alone keeps no root.
    assert_eq!(report.removed_roots, 2);
    assert!(!moved.exists());
    assert!(!Path::new(&format!("{}.json", moved.display())).exists());
    assert!(existing(store.layout(), &image).is_none());
    assert_eq!(tainted_images(store.layout()).unwrap(), []);
}

/// What `drover build` writes must pass the unpacker's checks.
#[test]
fn built_images_unpack() {
    let (dir, mut store) = new_store();
    let ctx = dir.path().join("ctx");
    let root = ctx.join("rootfs");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("etc/motd"), b"welcome\n").unwrap();
    fs::hard_link(root.join("etc/motd"), root.join("etc/motd.hard")).unwrap();
    std::os::unix::fs::symlink("../etc/motd", root.join("bin/motd-link")).unwrap();
    let def = ctx.join("drover.toml");
    fs::write(
            &def,
            "[image]\nname = \"unpack\"\n\n[[layer]]\nkind = \"copy\"\nsrc = \"rootfs\"\ndest = \"/\"\nowner = \"1000:1000\"\n\n\
             [[layer]]\nkind = \"file\"\ndest = \"/etc/greeting\"\ncontent = \"hello\\n\"\n",
        )
        .unwrap();
    let def = crate::builder::def::load(&def).unwrap();
    let built = crate::builder::build(
        &mut store,
        &def,
        &Default::default(),
        &crate::builder::NoProgress,
    )
    .unwrap();
    let r = materialize(&store, &built.digest).unwrap();
    assert_eq!(fs::read(r.path.join("etc/greeting")).unwrap(), b"hello\n");
    assert_eq!(
        fs::symlink_metadata(r.path.join("etc/motd")).unwrap().uid(),
        1000
    );
}

/// The refusal of an image over a bound: it names the bound, the layer and
/// the image, leaves nothing under rootfs/, and the next try (within the
/// bound) unpacks cleanly.
fn refused_over(store: &mut Store, image: &Digest, limit: &str, set: impl FnOnce(&mut Limits)) {
    let saved = store.limits().clone();
    set(store.limits_mut());
    let err = materialize(store, image).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{msg}");
    assert_eq!(err.kind(), ErrorKind::Invalid, "{msg}");
    let layer = store.manifest(image).unwrap().layers[0].digest;
    for want in [limit, &layer.to_string(), &image.to_string()] {
        assert_contains(&msg, want);
    }
    assert_eq!(leftovers(store.layout()), Vec::<String>::new());
    *store.limits_mut() = saved;
    assert!(materialize(store, image).unwrap().unpacked);
}

#[test]
fn a_layer_that_inflates_past_layer_bytes_is_refused_early() {
    let (_dir, mut store) = new_store();
    // 8 MiB of zeros: a few KiB of gzip.
    let bomb = Tar::default().file("zeros", &vec![0u8; 8 << 20]).bytes();
    let image = image(&mut store, &[bomb], &[]);
    refused_over(&mut store, &image, "layer_bytes", |l| {
        l.layer_bytes = 1 << 20
    });
}

/// Issue 16: the tar crate reads a GNU long name (or link, or PAX header)
/// whole into memory, so a layer could declare one of many GiB.
#[test]
fn a_long_name_past_tar_header_bytes_is_refused() {
    let (_dir, mut store) = new_store();
    let name = "dd/".repeat(700) + "f";
    let tar = Tar::default()
        .entry(
            "././@LongLink",
            b'L',
            0o644,
            0,
            format!("{name}\0").as_bytes(),
        )
        .file(&name[..99], b"x")
        .bytes();
    let image = image(&mut store, &[tar], &[]);
    refused_over(&mut store, &image, "tar_header_bytes", |l| {
        l.tar_header_bytes = 2048
    });
}

#[test]
fn a_layer_with_too_many_entries_is_refused() {
    let (_dir, mut store) = new_store();
    let mut tar = Tar::default().dir("d/");
    for i in 0..50 {
        tar = tar.file(&format!("d/{i}"), b"x");
    }
    let image = image(&mut store, &[tar.bytes()], &[]);
    refused_over(&mut store, &image, "layer_entries", |l| {
        l.layer_entries = 20
    });
}

#[test]
fn the_inflate_ratio_counts_only_past_the_floor() {
    use crate::store::baseline::Budget;
    let limits = Limits {
        inflate_ratio: 100,
        ..Limits::default()
    };
    let layer = Digest::of(b"layer");
    // Under the floor any ratio passes: small, compressible layers are normal.
    let b = Budget::new(layer, limits.clone());
    b.read_compressed(1);
    assert!(b.check(Limits::RATIO_FLOOR).is_ok());
    // Past it, inflated/compressed above the ratio is a bomb.
    let b = Budget::new(layer, limits.clone());
    b.read_compressed(Limits::RATIO_FLOOR / 200);
    assert!(b.check(Limits::RATIO_FLOOR + 1).is_err());
    let e = b.take_tripped().expect("remembered").to_string();
    assert_contains(&e, "inflate_ratio");
    assert_contains(&e, "DROVER_LIMIT_INFLATE_RATIO");
    // Within it, fine.
    let b = Budget::new(layer, limits);
    b.read_compressed(Limits::RATIO_FLOOR / 50);
    assert!(b.check(Limits::RATIO_FLOOR + 1).is_ok());
}

/// Two versions of an image: one shared file, one of their own, one
/// identical in content but not in mode, and a hard link within the image.
fn two_versions(store: &mut Store) -> (Digest, Digest) {
    let layer = |own: &[u8], mode: u32| {
        Tar::default()
            .dir("etc")
            .file("etc/base", b"shared by both\n")
            .file("etc/own", own)
            .entry("etc/mode", b'0', mode, 0, b"same bytes\n")
            .file("etc/h1", b"linked\n")
            .hardlink("etc/h2", "etc/h1")
            .bytes()
    };
    let a = image(store, &[layer(b"version a\n", 0o644)], &[]);
    let b = image(store, &[layer(b"version b\n", 0o600)], &[]);
    (a, b)
}

fn ino(root: &Rootfs, path: &str) -> u64 {
    fs::symlink_metadata(root.path.join(path)).unwrap().ino()
}

#[test]
fn identical_files_of_two_versions_are_one_inode() {
    let (_dir, mut store) = new_store();
    let (a, b) = two_versions(&mut store);
    let ra = materialize(&store, &a).unwrap();
    let rb = materialize(&store, &b).unwrap();
    assert_eq!(ino(&ra, "etc/base"), ino(&rb, "etc/base"));
    assert_ne!(ino(&ra, "etc/own"), ino(&rb, "etc/own"));
    // Same bytes, other mode: a hard link would share the mode, so no.
    assert_ne!(ino(&ra, "etc/mode"), ino(&rb, "etc/mode"));
    // A hard link within the image keeps its own inode pair.
    assert_eq!(ino(&ra, "etc/h1"), ino(&ra, "etc/h2"));
    assert_ne!(ino(&ra, "etc/h1"), ino(&rb, "etc/h1"));
    assert_eq!(
        fs::read(rb.path.join("etc/base")).unwrap(),
        b"shared by both\n"
    );
    // Drift scans still find nothing in either.
    for (image, root) in [(a, &ra), (b, &rb)] {
        let want = baseline::stored(&store, &image).unwrap().unwrap();
        let report = crate::drift::scan(root, &want, &crate::drift::Budget::unlimited()).unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
    }
}

#[test]
fn a_tampered_shared_file_is_never_linked_into_a_new_root() {
    let (_dir, mut store) = new_store();
    let (a, b) = two_versions(&mut store);
    let ra = materialize(&store, &a).unwrap();
    // Same length, same metadata kept: only the content differs.
    let tampered = ra.path.join("etc/base");
    let mtime = fs::metadata(&tampered).unwrap().modified().unwrap();
    let f = fs::OpenOptions::new().write(true).open(&tampered).unwrap();
    (&f).write_all(b"shared by evil\n").unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let rb = materialize(&store, &b).unwrap();
    assert_ne!(ino(&ra, "etc/base"), ino(&rb, "etc/base"));
    assert_eq!(
        fs::read(rb.path.join("etc/base")).unwrap(),
        b"shared by both\n"
    );
    // The pool now holds the fresh copy: a third root links that one.
    discard_all(&store, &[b]);
    let rb2 = materialize(&store, &b).unwrap();
    assert_eq!(
        fs::read(rb2.path.join("etc/base")).unwrap(),
        b"shared by both\n"
    );
    // Drift finds the tampered file in the root that links it.
    let want = baseline::stored(&store, &a).unwrap().unwrap();
    let report = crate::drift::scan(&ra, &want, &crate::drift::Budget::unlimited()).unwrap();
    assert!(
        report.findings.iter().any(|f| f.path == "/etc/base"),
        "{:?}",
        report.findings
    );
}

fn discard_all(store: &Store, images: &[Digest]) {
    let trash = store.root().join("trash");
    fs::create_dir_all(&trash).unwrap();
    for i in images {
        discard(store.layout(), i, &trash).unwrap();
    }
    fs::remove_dir_all(&trash).unwrap();
}

#[test]
fn the_pool_sweep_removes_only_files_no_root_links() {
    let (_dir, mut store) = new_store();
    let (a, b) = two_versions(&mut store);
    materialize(&store, &a).unwrap();
    let rb = materialize(&store, &b).unwrap();
    assert_eq!(pool::sweep(store.layout()).unwrap().0, 0);
    discard_all(&store, &[a]);
    // a's own file and its mode variant; "base" is still b's.
    let (files, _) = pool::sweep(store.layout()).unwrap();
    assert_eq!(files, 2);
    assert_eq!(
        fs::symlink_metadata(rb.path.join("etc/base"))
            .unwrap()
            .nlink(),
        2
    );
    discard_all(&store, &[b]);
    assert_eq!(pool::sweep(store.layout()).unwrap().0, 3);
    assert!(existing(store.layout(), &a).is_none());
}
