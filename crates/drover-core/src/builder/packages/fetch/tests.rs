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
        &[a.clone()],
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

#[test]
fn a_declared_size_past_the_limit_is_refused_before_any_request() {
    let (_d, c) = cache();
    let mut big = request(&dead_url(), "huge", b"x");
    big.size = 5 << 30;
    let e = fetch_debs(&[big], &c, &Limits::default(), Online::Yes, &NoProgress).unwrap_err();
    assert!(e.to_string().contains("deb_bytes"), "{e}");
}
