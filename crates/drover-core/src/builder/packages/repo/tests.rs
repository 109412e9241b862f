use std::io::Write as _;
use std::process::Command;

use super::super::test_server::{Server, dead_url};
use super::*;

/// A signing key made with gpg in a temp home, its keyring exported
/// binary and armored.
struct Key {
    home: tempfile::TempDir,
    keyring: PathBuf,
    armored: PathBuf,
}

fn gpg(home: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.arg("--homedir").arg(home).args(["--batch", "--quiet"]);
    c
}

fn key(name: &str) -> Option<Key> {
    if Command::new("gpg").arg("--version").output().is_err() {
        eprintln!("skipped: no gpg to make a test key with");
        return None;
    }
    let home = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(home.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let ok = gpg(home.path())
        .args(["--passphrase", "", "--quick-gen-key"])
        .arg(format!("{name} <{name}@example.org>"))
        .args(["ed25519", "sign", "never"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "gpg could not make a key");
    let keyring = home.path().join("keyring.gpg");
    let out = gpg(home.path()).arg("--export").output().unwrap();
    fs::write(&keyring, out.stdout).unwrap();
    let armored = home.path().join("keyring.asc");
    let out = gpg(home.path())
        .args(["--armor", "--export"])
        .output()
        .unwrap();
    fs::write(&armored, out.stdout).unwrap();
    Some(Key {
        home,
        keyring,
        armored,
    })
}

impl Drop for Key {
    /// gpg started an agent for this home; it goes with the key.
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

impl Key {
    fn clearsign(&self, text: &str) -> Vec<u8> {
        let mut child = gpg(self.home.path())
            .args(["--clearsign", "--digest-algo", "SHA256"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        out.stdout
    }
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

const PACKAGES: &str =
    "Package: hello\nVersion: 1.0\nFilename: pool/main/h/hello/hello_1.0_amd64.deb\n\n";

/// A mirror serving suite "bookworm", component "main", amd64, signed by `key`.
struct Mirror {
    server: Server,
    release: String,
    packages_gz: Vec<u8>,
}

fn release_text(extra: &str, packages_gz: &[u8]) -> String {
    format!(
        "Origin: Test\nSuite: stable\nCodename: bookworm\nDate: Sat, 10 Aug 2024 09:21:35 UTC\n\
         {extra}Acquire-By-Hash: yes\nComponents: main\nSHA256:\n {} {} main/binary-amd64/Packages.gz\n \
         {} {} main/binary-amd64/Packages\n",
        Digest::of(packages_gz).hex(),
        packages_gz.len(),
        Digest::of(PACKAGES.as_bytes()).hex(),
        PACKAGES.len(),
    )
}

fn mirror(key: &Key, extra: &str) -> Mirror {
    let server = Server::start();
    let packages_gz = gz(PACKAGES.as_bytes());
    let release = release_text(extra, &packages_gz);
    server.put("/debian/dists/bookworm/InRelease", key.clearsign(&release));
    server.put(
        &format!(
            "/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/{}",
            Digest::of(&packages_gz).hex()
        ),
        packages_gz.clone(),
    );
    Mirror {
        server,
        release,
        packages_gz,
    }
}

fn repo(url: &str, keyring: &Path) -> Repository {
    Repository {
        url: format!("{url}/debian"),
        suite: "bookworm".into(),
        components: vec!["main".into()],
        keyring: keyring.to_path_buf(),
    }
}

fn cache() -> (tempfile::TempDir, PackageCache) {
    let dir = tempfile::tempdir().unwrap();
    let c = PackageCache::open(dir.path(), &dir.path().join("tmp")).unwrap();
    (dir, c)
}

fn opts(online: Online) -> IndexOptions {
    IndexOptions {
        online,
        allow_expired: false,
    }
}

fn fetch(r: &Repository, c: &PackageCache, online: Online) -> Result<Indexes> {
    fetch_indexes(r, "amd64", c, &Limits::default(), &opts(online))
}

#[test]
fn fetches_verifies_caches_and_then_works_offline() {
    let Some(k) = key("archive") else { return };
    let m = mirror(&k, "");
    let r = repo(&m.server.url, &k.keyring);
    let (_d, c) = cache();
    let ix = fetch(&r, &c, Online::Auto).unwrap();
    assert_eq!(
        ix.packages,
        vec![("main".to_string(), PACKAGES.to_string())]
    );
    assert_eq!(ix.release_date, "Sat, 10 Aug 2024 09:21:35 UTC");
    assert!(ix.offline.is_none());
    assert!(c.has(&Digest::of(&m.packages_gz)));
    assert!(c.has(&ix.inrelease));
    // Offline: the same, from the cache, with no request.
    let before = m.server.requests();
    let off = fetch(&r, &c, Online::No).unwrap();
    assert_eq!(off.packages, ix.packages);
    assert_eq!(off.inrelease, ix.inrelease);
    assert!(off.offline.is_some());
    assert_eq!(m.server.requests(), before);
    // Auto with the repository unreachable: the cache, and it says so.
    let mut gone = r.clone();
    gone.url = format!("{}/debian", dead_url());
    // (The pointer is per URL: copy it over as if the mirror moved away.)
    c.set_ref(&ref_key(&gone), &ix.inrelease).unwrap();
    let auto = fetch(&gone, &c, Online::Auto).unwrap();
    assert!(
        auto.offline
            .as_deref()
            .unwrap()
            .contains("cannot be reached"),
        "{:?}",
        auto.offline
    );
    assert_eq!(auto.packages, ix.packages);
    // Yes: no falling back.
    assert!(fetch(&gone, &c, Online::Yes).is_err());
}

#[test]
fn an_armored_keyring_works_too() {
    let Some(k) = key("archive") else { return };
    let m = mirror(&k, "");
    let (_d, c) = cache();
    let ix = fetch(&repo(&m.server.url, &k.armored), &c, Online::Yes).unwrap();
    assert_eq!(ix.packages[0].1, PACKAGES);
}

fn assert_nothing_stored(c: &PackageCache, r: &Repository) {
    assert_eq!(c.usage().unwrap(), (0, 0), "nothing enters the cache");
    assert!(c.get_ref(&ref_key(r)).unwrap().is_none());
}

#[test]
fn a_bad_signature_is_refused_and_nothing_is_stored() {
    let Some(k) = key("archive") else { return };
    let Some(other) = key("mallory") else { return };
    let m = mirror(&k, "");
    // Tampered: one byte of the signed text changed.
    let signed = String::from_utf8(k.clearsign(&m.release)).unwrap();
    let tampered = signed.replace("Origin: Test", "Origin: Evil");
    m.server.put("/debian/dists/bookworm/InRelease", tampered);
    let r = repo(&m.server.url, &k.keyring);
    let (_d, c) = cache();
    let e = fetch(&r, &c, Online::Yes).unwrap_err().to_string();
    assert!(
        e.contains(&r.url) && e.contains(&k.keyring.display().to_string()),
        "{e}"
    );
    assert!(e.contains("BADSIG") || e.contains("bad signature"), "{e}");
    assert_nothing_stored(&c, &r);
    // Signed by a key the keyring does not hold.
    m.server.put(
        "/debian/dists/bookworm/InRelease",
        other.clearsign(&m.release),
    );
    let e = fetch(&r, &c, Online::Yes).unwrap_err().to_string();
    assert!(e.contains("cannot check a signature"), "{e}");
    assert_nothing_stored(&c, &r);
    // Unsigned text, and text smuggled after the signature.
    m.server
        .put("/debian/dists/bookworm/InRelease", m.release.clone());
    assert!(fetch(&r, &c, Online::Yes).is_err());
    let mut smuggled = k.clearsign(&m.release);
    smuggled.extend_from_slice(b"\nSHA256:\n 00 1 main/binary-amd64/Packages.gz\n");
    m.server.put("/debian/dists/bookworm/InRelease", smuggled);
    let e = fetch(&r, &c, Online::Yes).unwrap_err().to_string();
    assert!(e.contains("after its signature"), "{e}");
    assert_nothing_stored(&c, &r);
}

#[test]
fn an_index_whose_hash_differs_is_refused_by_name_and_nothing_is_stored() {
    let Some(k) = key("archive") else { return };
    let m = mirror(&k, "");
    // Release without by-hash, and a Packages.gz that is not the signed one.
    let release = m.release.replace("Acquire-By-Hash: yes\n", "");
    m.server
        .put("/debian/dists/bookworm/InRelease", k.clearsign(&release));
    m.server.put(
        "/debian/dists/bookworm/main/binary-amd64/Packages.gz",
        gz(b"Package: evil\n"),
    );
    let r = repo(&m.server.url, &k.keyring);
    let (_d, c) = cache();
    let e = fetch(&r, &c, Online::Yes).unwrap_err().to_string();
    assert!(
        e.contains("main/binary-amd64/Packages.gz") && e.contains("signed InRelease"),
        "{e}"
    );
    assert_nothing_stored(&c, &r);
}

#[test]
fn offline_with_an_incomplete_cache_names_what_is_missing() {
    let Some(k) = key("archive") else { return };
    let m = mirror(&k, "");
    let r = repo(&m.server.url, &k.keyring);
    let (_d, c) = cache();
    let e = fetch(&r, &c, Online::No).unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::NotFound);
    assert!(e.to_string().contains("InRelease"), "{e}");
    fetch(&r, &c, Online::Yes).unwrap();
    fs::remove_file(c.object_path(&Digest::of(&m.packages_gz))).unwrap();
    let e = fetch(&r, &c, Online::No).unwrap_err().to_string();
    assert!(
        e.contains("main/binary-amd64/Packages.gz")
            && e.contains(&Digest::of(&m.packages_gz).to_string()),
        "{e}"
    );
}

#[test]
fn expired_indexes_and_other_suites_are_refused() {
    let Some(k) = key("archive") else { return };
    let m = mirror(&k, "Valid-Until: Sat, 10 Aug 2024 10:00:00 UTC\n");
    let r = repo(&m.server.url, &k.keyring);
    let (_d, c) = cache();
    let e = fetch(&r, &c, Online::Yes).unwrap_err().to_string();
    assert!(e.contains("expired"), "{e}");
    let allow = IndexOptions {
        online: Online::Yes,
        allow_expired: true,
    };
    let ix = fetch_indexes(&r, "amd64", &c, &Limits::default(), &allow).unwrap();
    assert_eq!(
        ix.valid_until.as_deref(),
        Some("Sat, 10 Aug 2024 10:00:00 UTC")
    );
    let mut trixie = r.clone();
    trixie.suite = "trixie".into();
    m.server
        .put("/debian/dists/trixie/InRelease", k.clearsign(&m.release));
    let e = fetch(&trixie, &c, Online::Yes).unwrap_err().to_string();
    assert!(
        e.contains("signed for suite") && e.contains("trixie"),
        "{e}"
    );
}

#[test]
fn a_missing_component_or_architecture_is_named() {
    let Some(k) = key("archive") else { return };
    let m = mirror(&k, "");
    let mut r = repo(&m.server.url, &k.keyring);
    r.components.push("contrib".into());
    let (_d, c) = cache();
    let e = fetch(&r, &c, Online::Yes).unwrap_err().to_string();
    assert!(e.contains("\"contrib\"") && e.contains("amd64"), "{e}");
    assert_nothing_stored(&c, &r);
}

#[test]
fn reads_gpgv_status() {
    let good = "[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG AB name\n[GNUPG:] VALIDSIG FP 2024\n";
    assert!(judge(good).is_ok());
    let missing = "[GNUPG:] NEWSIG\n[GNUPG:] ERRSIG AB 1 8 01 1 9\n[GNUPG:] NO_PUBKEY AB\n";
    assert!(judge(missing).is_err());
    assert!(
        judge(&format!("{missing}{good}")).is_ok(),
        "another key's signature is passed over"
    );
    let bad = "[GNUPG:] NEWSIG\n[GNUPG:] BADSIG AB name\n";
    assert!(
        judge(&format!("{good}{bad}"))
            .unwrap_err()
            .contains("bad signature")
    );
    let revoked = "[GNUPG:] NEWSIG\n[GNUPG:] REVKEYSIG AB name\n[GNUPG:] VALIDSIG FP\n";
    assert!(
        judge(&format!("{good}{revoked}"))
            .unwrap_err()
            .contains("revoked")
    );
    let expired = "[GNUPG:] NEWSIG\n[GNUPG:] EXPKEYSIG AB name\n[GNUPG:] VALIDSIG FP\n";
    assert!(judge(expired).unwrap_err().contains("expired"));
    assert!(judge("").is_err());
}

#[test]
fn reads_release_dates() {
    assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:10 UTC"), Some(10));
    assert_eq!(
        parse_date("Sat, 10 Aug 2024 09:21:35 UTC"),
        Some(1_723_281_695)
    );
    assert_eq!(
        parse_date("10 Aug 2024 09:21:35 +0000"),
        Some(1_723_281_695)
    );
    assert_eq!(parse_date("Sat, 10 Aug 2024 09:21:35 +0200"), None);
    assert_eq!(parse_date("yesterday"), None);
}

#[test]
fn dearmors_key_blocks() {
    let armored = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: x\n\nAAEC\nAw==\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n";
    assert_eq!(dearmor(armored).unwrap(), vec![0, 1, 2, 3]);
    assert!(dearmor("nothing").is_err());
    assert!(dearmor("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAEC\n").is_err());
}

/// The real Debian archive, if this machine reaches it: contrib (a small
/// index) of bookworm against debian-archive-keyring. Skipped otherwise.
#[test]
fn real_debian_bookworm_contrib() {
    let Some(r) = real_repo(&["contrib"]) else {
        return;
    };
    let (_d, c) = cache();
    let ix = fetch(&r, &c, Online::Yes).unwrap();
    assert!(
        ix.packages[0].1.contains("\nPackage: "),
        "an index of packages"
    );
    let off = fetch(&r, &c, Online::No).unwrap();
    assert_eq!(off.packages, ix.packages);
}

pub(crate) fn real_repo(components: &[&str]) -> Option<Repository> {
    let keyring = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
    let reachable = std::net::ToSocketAddrs::to_socket_addrs("deb.debian.org:80")
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5)).is_ok()
        });
    if !reachable || !keyring.exists() {
        eprintln!("skipped: deb.debian.org is not reachable, or no debian-archive-keyring");
        return None;
    }
    Some(Repository {
        url: "http://deb.debian.org/debian".into(),
        suite: "bookworm".into(),
        components: components.iter().map(|c| c.to_string()).collect(),
        keyring: keyring.to_path_buf(),
    })
}
