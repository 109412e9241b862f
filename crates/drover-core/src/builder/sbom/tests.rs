use super::*;
use crate::store::baseline::FileRecord;

const DPKG: &str = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u4\nDescription: GNU C Library\n more text: here\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\nPackage: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 1:2024a-0\n";
const APK: &str = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nT:the musl c library\n\nP:busybox\nV:1.36.1-r15\nA:x86_64\n";

fn file(path: &str, content: &[u8]) -> (FileRecord, Digest, Sha1) {
    let d = Digest::of(content);
    let rec = FileRecord {
        path: path.into(),
        kind: FileKind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: content.len() as u64,
        sha256: Some(d),
        link: None,
        xattrs: Default::default(),
    };
    (rec, d, sha1_of(content))
}

#[test]
fn dpkg_lists_installed_packages_only() {
    let p = parse_dpkg(DPKG);
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p[0].name, "libc6");
    assert_eq!(p[0].version, "2.36-9+deb12u4");
    assert_eq!(
        p[0].purl(),
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64"
    );
    assert_eq!(p[1].purl(), "pkg:deb/debian/tzdata@1%3A2024a-0?arch=all");
}

#[test]
fn deb_purls_name_the_distribution_and_the_source_package() {
    let p = parse_dpkg(
        "Package: nginx-light\nStatus: install ok installed\nSource: nginx (1.22.1-9)\n\
         Version: 1.22.1-9+deb12u2\nArchitecture: amd64\n\n\
         Package: zlib1g\nStatus: install ok installed\nSource: zlib\nVersion: 1:1.2.13\nArchitecture: amd64\n\n\
         Package: libc6\nStatus: install ok installed\nSource: libc6\nVersion: 2.36\nArchitecture: amd64\n",
    );
    let mut nginx = p[0].clone();
    assert_eq!(nginx.source.as_deref(), Some("nginx"));
    assert_eq!(
        p[2].source, None,
        "a source of the same name is not repeated"
    );
    nginx.distro = Some("debian-12".into());
    assert_eq!(
        nginx.purl(),
        "pkg:deb/debian/nginx-light@1.22.1-9%2Bdeb12u2?arch=amd64&distro=debian-12&upstream=nginx"
    );
}

#[test]
fn apk_lists_packages() {
    let p = parse_apk(APK);
    assert_eq!(
        p.iter().map(Package::purl).collect::<Vec<_>>(),
        [
            "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64",
            "pkg:apk/alpine/busybox@1.36.1-r15?arch=x86_64"
        ]
    );
}

#[test]
fn sha1_is_sha1() {
    // The FIPS 180 test vector.
    assert_eq!(
        hex::encode(sha1_of(b"abc")),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
}

#[test]
fn document_lists_files_packages_and_is_deterministic() {
    let image = Digest::of(b"manifest");
    let (a, da, sa) = file("/bin/sh", b"shell");
    let (b, db, sb) = file(DPKG_STATUS, DPKG.as_bytes());
    let dir = FileRecord {
        kind: FileKind::Dir,
        sha256: None,
        ..file("/bin", b"").0
    };
    let files = Baseline {
        schema_version: 1,
        files: vec![dir, a, b],
    };
    let sha1s = Sha1s::from([(da, sa), (db, sb)]);
    let pkgs = parse_dpkg(DPKG);
    let created = Some("2024-01-02T03:04:05.678Z");
    let doc =
        serde_json::to_value(document(&image, created, &files, &sha1s, &pkgs).unwrap()).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["creationInfo"]["created"], "2024-01-02T03:04:05Z");
    assert_eq!(
        doc["documentNamespace"],
        format!("https://drover.dev/spdx/{}", image.hex())
    );
    let fs = doc["files"].as_array().unwrap();
    assert_eq!(fs.len(), 2, "directories are not files");
    assert_eq!(fs[0]["fileName"], "./bin/sh");
    assert_eq!(fs[0]["checksums"][0]["checksumValue"], hex::encode(sa));
    assert_eq!(fs[0]["checksums"][1]["checksumValue"], da.hex());
    let pk = doc["packages"].as_array().unwrap();
    assert_eq!(pk.len(), 3);
    assert_eq!(pk[1]["name"], "libc6");
    assert_eq!(
        pk[1]["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64"
    );
    // DESCRIBES + 2 files + 2 packages.
    assert_eq!(doc["relationships"].as_array().unwrap().len(), 5);
    let mut codes = [hex::encode(sa), hex::encode(sb)];
    codes.sort();
    assert_eq!(
        pk[0]["packageVerificationCode"]["packageVerificationCodeValue"],
        hex::encode(sha1_of(codes.concat().as_bytes()))
    );
    let again =
        serde_json::to_value(document(&image, created, &files, &sha1s, &pkgs).unwrap()).unwrap();
    assert_eq!(
        serde_json::to_vec(&doc).unwrap(),
        serde_json::to_vec(&again).unwrap()
    );
}

#[test]
fn sha1s_come_from_sources_unless_a_file_changed_since_its_scan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, b"one").unwrap();
    let entry = |content: &[u8]| Entry {
        path: "f".into(),
        kind: Kind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: content.len() as u64,
        link: None,
        source: Some(Source::Disk {
            path: path.clone(),
            stat: StatKey::of(&fs::metadata(&path).unwrap()),
        }),
        sha256: Some(Digest::of(content)),
        sha1: None,
        xattrs: Vec::new(),
    };
    let inline = Entry {
        path: "g".into(),
        source: Some(Source::Inline(b"two".as_slice().into())),
        sha256: Some(Digest::of(b"two")),
        ..entry(b"one")
    };
    let entries = [entry(b"one"), inline];
    let got = sha1s_from_entries(&entries, &Sha1s::new()).unwrap();
    assert_eq!(got[&Digest::of(b"one")], sha1_of(b"one"));
    assert_eq!(got[&Digest::of(b"two")], sha1_of(b"two"));
    // Known content is not read again: a wrong value proves it.
    let known = Sha1s::from([(Digest::of(b"one"), [7u8; 20])]);
    let got = sha1s_from_entries(&entries, &known).unwrap();
    assert_eq!(got[&Digest::of(b"one")], [7u8; 20]);
    // Rewritten after the scan: the sources no longer tell.
    fs::write(&path, b"changed").unwrap();
    assert_eq!(sha1s_from_entries(&entries, &Sha1s::new()), None);
}

/// The SHA-1s taken while the layer is written give the SBOM, byte for
/// byte, that reading the sources again or reading the blob gives.
#[test]
fn sha1s_taken_while_writing_give_the_same_sbom_as_a_reread() {
    use super::super::layer::{self, HASH_AHEAD_ABOVE};
    use super::super::{Compression, LayerDef, def, scan, statcache::StatCache};
    use crate::store::oci;

    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    let root = ctx.join("root");
    fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    fs::write(root.join("var/lib/dpkg/status"), DPKG).unwrap();
    fs::write(root.join("a"), b"same").unwrap();
    fs::write(root.join("b"), b"same").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    // Hashed ahead of the layer, then tarred in pieces across chunks.
    let big: Vec<u8> = (0..HASH_AHEAD_ABOVE + 12_345)
        .map(|i| (i % 251) as u8)
        .collect();
    fs::write(root.join("big"), &big).unwrap();
    let text = "[image]\nname = \"t\"\n[[layer]]\nkind = \"copy\"\nsrc = \"root\"\ndest = \"/\"\n";
    let def = def::parse(text, &ctx.join("drover.toml")).unwrap();
    let LayerDef::Copy(copy) = &def.layers[0] else {
        panic!("a copy layer")
    };

    // A cold build of the layer: empty store, empty content-hash cache.
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mut entries = scan::copy_layer(&ctx, copy).unwrap();
    let mut stat = StatCache::load(&store.cache_dir(), &ctx);
    stat.hash_entries(&mut entries, false, HASH_AHEAD_ABOVE, &|_| {})
        .unwrap();
    let settings = layer::Settings {
        mtime: 0,
        compression: Compression::Gzip,
        level: Compression::Gzip.default_level(),
        threads: 2,
        use_cache: true,
    };
    let (rec, _, _) =
        layer::produce(&store, &mut entries, &settings, "slot", None, &|_| {}).unwrap();
    for e in entries.iter().filter(|e| e.kind == Kind::File) {
        assert!(e.sha1.is_some(), "{} was hashed without its SHA-1", e.path);
    }
    let mut merger = baseline::Merger::default();
    for f in rec.files.clone() {
        merger.put(f);
    }
    let files = merger.finish();
    let image = store
        .put_json(oci::MEDIA_CONFIG, &serde_json::json!({ "an": "image" }))
        .unwrap();
    let image = Descriptor::new(oci::MEDIA_MANIFEST, image.digest, image.size);
    let blob = Descriptor::new(&rec.media_type, rec.blob, rec.size);
    // The SBOM's bytes from one layer input, with no SHA-1 map cached.
    let sbom = |built: Option<Vec<Entry>>| -> Vec<u8> {
        let _ = fs::remove_dir_all(store.cache_dir().join("sbom"));
        let layers = [LayerInput {
            desc: blob.clone(),
            diff_id: rec.diff_id,
            built: built.map(|e| (e, None)),
        }];
        let (desc, written) = attach(
            &store,
            &image,
            Some("2024-01-02T03:04:05Z"),
            &files,
            &layers,
            None,
        )
        .unwrap();
        assert!(written);
        let m = store.manifest(&desc.digest).unwrap();
        store.read_blob(&m.layers[0].digest).unwrap()
    };

    let unread: Vec<Entry> = entries
        .iter()
        .cloned()
        .map(|e| Entry { sha1: None, ..e })
        .collect();
    let reread = sbom(Some(unread));
    let from_blob = sbom(None);
    // Without the sources, nothing can be read again: the SHA-1s taken
    // while writing are all the SBOM has.
    fs::remove_dir_all(&ctx).unwrap();
    assert!(sha1s_from_entries(&entries, &Sha1s::new()).is_some());
    let fused = sbom(Some(entries));
    assert_eq!(fused, reread, "fused and re-read SBOMs differ");
    assert_eq!(fused, from_blob, "fused and blob SBOMs differ");

    let doc: Value = serde_json::from_slice(&fused).unwrap();
    let sha1_of_path = |name: &str| {
        doc["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["fileName"] == name)
            .map(|f| f["checksums"][0]["checksumValue"].clone())
    };
    assert_eq!(
        sha1_of_path("./big"),
        Some(hex::encode(sha1_of(&big)).into())
    );
    assert_eq!(
        sha1_of_path("./empty"),
        Some(hex::encode(sha1_of(b"")).into())
    );
    assert_eq!(doc["files"].as_array().unwrap().len(), 5);
    assert_eq!(doc["packages"][1]["name"], "libc6");
}

#[test]
fn a_file_without_a_sha1_is_an_error_naming_it() {
    let (a, _, _) = file("/etc/x", b"x");
    let files = Baseline {
        schema_version: 1,
        files: vec![a],
    };
    let err = document(&Digest::of(b"m"), None, &files, &Sha1s::new(), &[]).unwrap_err();
    assert!(err.to_string().contains("/etc/x"), "{err}");
}
