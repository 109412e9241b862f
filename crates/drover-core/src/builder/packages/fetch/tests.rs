use std::fs;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::super::test_server::{Server, dead_url};
use super::*;

fn cache() -> (tempfile::TempDir, PackageCache) {
    let dir = tempfile::tempdir().unwrap();
    let c = PackageCache::open(dir.path(), &dir.path().join("tmp")).unwrap();
    (dir, c)
}

fn request(server_url: &str, name: &str, bytes: &[u8]) -> DebRequest {
    DebRequest {
        name: name.to_string(),
        url: format!("{server_url}/pool/{name}.deb"),
        sha256: Digest::of(bytes),
        size: bytes.len() as u64,
    }
}

#[derive(Default)]
struct Seen {
    phases: Mutex<Vec<(String, u64, u64)>>,
    bytes: AtomicU64,
}

impl Progress for Seen {
    fn phase(&self, name: &str, files: u64, bytes: u64) {
        self.phases
            .lock()
            .unwrap()
            .push((name.into(), files, bytes));
    }
    fn advance(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::SeqCst);
    }
}

fn debs(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| (format!("pkg{i}"), vec![i as u8; 1000 + i * 4096]))
        .collect()
}

#[test]
fn downloads_in_parallel_then_the_cache_answers() {
    let server = Server::start();
    let debs = debs(20);
    let mut items = Vec::new();
    for (name, bytes) in &debs {
        server.put(&format!("/pool/{name}.deb"), bytes.clone());
        items.push(request(&server.url, name, bytes));
    }
    let (_d, c) = cache();
    let seen = Seen::default();
    let total: u64 = debs.iter().map(|(_, b)| b.len() as u64).sum();
    let got = fetch_debs(&items, &c, &Limits::default(), Online::Auto, &seen).unwrap();
    assert_eq!(
        (got.downloaded, got.cached, got.downloaded_bytes),
        (20, 0, total)
    );
    assert_eq!(
        *seen.phases.lock().unwrap(),
        [("download".to_string(), 20, total)]
    );
    assert_eq!(seen.bytes.load(Ordering::SeqCst), total);
    for ((_, bytes), p) in debs.iter().zip(&got.paths) {
        assert_eq!(&fs::read(p).unwrap(), bytes);
    }
    // Again, and offline: nothing is fetched, nothing asked.
    let before = server.requests();
    for online in [Online::Auto, Online::No] {
        let again = fetch_debs(&items, &c, &Limits::default(), online, &NoProgress).unwrap();
        assert_eq!((again.downloaded, again.cached), (0, 20));
        assert_eq!(again.paths, got.paths);
    }
    assert_eq!(server.requests(), before);
}

use crate::builder::NoProgress;

#[test]
fn a_package_whose_hash_differs_is_refused_by_name_and_not_stored() {
    let server = Server::start();
    let good = request(&server.url, "good", b"good bytes");
    server.put("/pool/good.deb", b"good bytes".to_vec());
    let mut evil = request(&server.url, "evil", b"what the index says");
    server.put("/pool/evil.deb", b"what the mirror sez".to_vec());
    let (_d, c) = cache();
    let e = fetch_debs(
        &[good.clone(), evil.clone()],
        &c,
        &Limits::default(),
        Online::Yes,
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("package evil")
            && e.contains(&evil.sha256.to_string())
            && e.contains(&Digest::of(b"what the mirror sez").to_string()),
        "{e}"
    );
    assert!(!c.has(&evil.sha256));
    // A mirror that sends more than the index declares is cut off.
    evil.size = 5;
    let e = fetch_debs(
        &[evil.clone()],
        &c,
        &Limits::default(),
        Online::Yes,
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("package evil") && e.contains("declares"), "{e}");
    // 404: named.
    let gone = request(&server.url, "gone", b"x");
    let e = fetch_debs(&[gone], &c, &Limits::default(), Online::Yes, &NoProgress).unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::NotFound);
    assert!(e.to_string().contains("package gone"), "{e}");
    let (files, _) = c.usage().unwrap();
    assert!(files <= 1, "only the good package may be cached");
}

#[test]
fn offline_or_unreachable_lists_the_missing_packages() {
    let url = dead_url();
    let (_d, c) = cache();
    let a = request(&url, "liba", b"a");
    let b = request(&url, "libb", b"b");
    c.put_bytes(b"a", &a.sha256, 1, "liba").unwrap();
    // What is cached needs no network, even with none there.
    let got = fetch_debs(
        std::slice::from_ref(&a),
        &c,
        &Limits::default(),
        Online::Auto,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(got.cached, 1);
    for online in [Online::No, Online::Auto] {
        let e = fetch_debs(
            &[a.clone(), b.clone()],
            &c,
            &Limits::default(),
            online,
            &NoProgress,
        )
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        let s = e.to_string();
        assert!(s.contains("libb") && !s.contains("liba"), "{s}");
    }
}

/// Regression (issue 17): a cached `.deb` was trusted by its file name, so
/// a damaged or swapped copy went into the image. It is now checked,
/// removed, and downloaded again, or, offline, reported missing.
#[test]
fn a_damaged_cached_package_is_downloaded_again_never_used() {
    let server = Server::start();
    let a = request(&server.url, "liba", b"the real bytes");
    server.put("/pool/liba.deb", b"the real bytes".to_vec());
    let (_d, c) = cache();
    c.put_bytes(b"the real bytes", &a.sha256, a.size, "liba")
        .unwrap();
    let path = c.path(&a.sha256).unwrap();
    fs::write(&path, b"the fake bytes").unwrap();
    let e = fetch_debs(
        std::slice::from_ref(&a),
        &c,
        &Limits::default(),
        Online::No,
        &NoProgress,
    )
    .unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::NotFound);
    assert!(
        e.to_string().contains("liba (") && e.to_string().contains("damaged"),
        "{e}"
    );
    assert!(!c.has(&a.sha256), "the damaged copy is gone");
    fs::write(&path, b"the real bytes, and more").unwrap();
    let got = fetch_debs(
        std::slice::from_ref(&a),
        &c,
        &Limits::default(),
        Online::Auto,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(
        (got.downloaded, got.cached, got.damaged),
        (1, 0, vec!["liba".to_string()])
    );
    assert_eq!(fs::read(&path).unwrap(), b"the real bytes");
}

#[test]
fn a_declared_size_past_the_limit_is_refused_before_any_request() {
    let (_d, c) = cache();
    let mut big = request(&dead_url(), "huge", b"x");
    big.size = 5 << 30;
    let e = fetch_debs(&[big], &c, &Limits::default(), Online::Yes, &NoProgress).unwrap_err();
    assert!(e.to_string().contains("deb_bytes"), "{e}");
}

/// The real thing, by hand (`--ignored`, best in a release build): bookworm
/// main's indexes, then the .debs named by DROVER_SMOKE_PACKAGES (default:
/// nginx-light, libc6 and python3's runtime closure), downloaded and
/// unpacked, with timings.
#[test]
#[ignore = "downloads ~25 MB from deb.debian.org; run by hand"]
fn real_debian_end_to_end() {
    use std::time::Instant;
    let Some(repo) = super::super::repo::tests::real_repo(&["main"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let c = PackageCache::open(dir.path(), &dir.path().join("tmp")).unwrap();
    let limits = Limits::default();
    let opts = super::super::repo::IndexOptions::default();
    let t = Instant::now();
    let ix = super::super::repo::fetch_indexes(&repo, "amd64", &c, &limits, &opts).unwrap();
    let index_time = t.elapsed();
    let text = &ix.packages[0].1;
    let t = Instant::now();
    let again = super::super::repo::fetch_indexes(&repo, "amd64", &c, &limits, &opts).unwrap();
    let cached_index_time = t.elapsed();
    assert_eq!(again.inrelease, ix.inrelease);
    let names = std::env::var("DROVER_SMOKE_PACKAGES").unwrap_or_else(|_| {
        "nginx-light libc6 python3 python3.11 python3.11-minimal libpython3.11-minimal \
         libpython3.11-stdlib python3-minimal libpython3-stdlib media-types tzdata libssl3 \
         zlib1g libexpat1 libffi8 libsqlite3-0 libncursesw6 libtinfo6 libreadline8 \
         readline-common libbz2-1.0 liblzma5 libuuid1 libdb5.3 libgdbm6 libnsl2 \
         libtirpc3 libcrypt1 libgcc-s1 libtirpc-common libgssapi-krb5-2 libkrb5-3 \
         libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1"
            .into()
    });
    let mut items = Vec::new();
    for name in names.split_whitespace() {
        let para = text
            .split("\n\n")
            .find(|p| p.starts_with(&format!("Package: {name}\n")))
            .unwrap_or_else(|| panic!("{name} is not in bookworm main"));
        let field = |k: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                .unwrap()
                .to_string()
        };
        items.push(DebRequest {
            name: name.to_string(),
            url: format!("{}/{}", repo.url, field("Filename")),
            sha256: format!("sha256:{}", field("SHA256")).parse().unwrap(),
            size: field("Size").parse().unwrap(),
        });
    }
    let t = Instant::now();
    let got = fetch_debs(&items, &c, &limits, Online::Auto, &NoProgress).unwrap();
    let download_time = t.elapsed();
    let t = Instant::now();
    let mut files = 0;
    let mut bytes = 0;
    for (item, path) in items.iter().zip(&got.paths) {
        let staging = dir.path().join("staging").join(&item.name);
        let deb = super::super::deb::unpack(path, &item.name, &staging, &limits).unwrap();
        assert!(
            deb.control
                .starts_with(&format!("Package: {}\n", item.name))
        );
        files += deb.entries.len();
        bytes += deb.entries.iter().map(|e| e.size).sum::<u64>();
    }
    let unpack_time = t.elapsed();
    // The same, one .deb per thread (each is independent).
    let t = Instant::now();
    use rayon::prelude::*;
    items.par_iter().zip(&got.paths).for_each(|(item, path)| {
        let staging = dir.path().join("staging2").join(&item.name);
        super::super::deb::unpack(path, &item.name, &staging, &limits).unwrap();
    });
    let parallel_unpack_time = t.elapsed();
    let t = Instant::now();
    let warm = fetch_debs(&items, &c, &limits, Online::No, &NoProgress).unwrap();
    let warm_time = t.elapsed();
    assert_eq!(warm.cached, items.len());
    eprintln!(
        "indexes (InRelease + main/amd64 Packages.gz, verified): {index_time:?}, again from cache: \
         {cached_index_time:?}\n{} .debs ({} bytes) downloaded in {download_time:?}; \
         all cached, offline: {warm_time:?}\nunpacked {files} entries ({bytes} bytes) in {unpack_time:?}, \
         in parallel ({} threads): {parallel_unpack_time:?}",
        items.len(),
        got.downloaded_bytes,
        rayon::current_num_threads()
    );
}
