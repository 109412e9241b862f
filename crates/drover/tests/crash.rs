//! Crash safety and concurrency through the real binary: a `build` or `gc`
//! killed with SIGKILL at any moment leaves a store that verifies, holds no
//! partial blob under a real digest, lists only manifests it has, keeps an
//! intact ledger, and finishes the job on the next run; two builds (and a gc)
//! running at once into one store all succeed.
use crate::common;
use common::*;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// splitmix64: a deterministic byte source, so every run builds the same tree.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "drover", "image", "layer", "store", "blob", "digest", "ledger", "tag", "manifest", "config",
    "the", "a", "of", "and", "to", "in", "is", "for", "on", "with", "build", "verify", "gc",
    "chunk", "sha256", "gzip", "tar", "file", "mode", "owner", "path", "link",
];

/// `files` files in nested directories: one in four random bytes, the rest
/// word salad (compressible like text), 4–28 KiB each; plus a symlink and an
/// empty directory. 200 files are ~3 MiB, which a cold debug build takes
/// about a second over: the debug binary deflates random data at ~2 MB/s, so
/// the "~40 MB" a release build would manage in that time is out of reach.
fn gen_tree(root: &Path, files: usize, seed: u64) -> u64 {
    let mut rng = Rng(seed);
    let mut total = 0;
    for i in 0..files {
        let dir = root.join(format!("d{:02}/e{}", i % 13, i % 3));
        let size = 4096 + rng.below(24 * 1024) as usize;
        let (name, body) = if i % 4 == 0 {
            let mut b = Vec::with_capacity(size + 8);
            while b.len() < size {
                b.extend_from_slice(&rng.next().to_le_bytes());
            }
            b.truncate(size);
            (format!("blob-{i:03}.bin"), b)
        } else {
            let mut b = Vec::with_capacity(size + 16);
            while b.len() < size {
                b.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
                b.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
            }
            b.truncate(size);
            (format!("text-{i:03}.txt"), b)
        };
        total += body.len() as u64;
        write(
            &dir.join(name),
            &body,
            if i % 7 == 0 { 0o755 } else { 0o644 },
        );
    }
    fs::create_dir_all(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("d00/e0/blob-000.bin", root.join("first")).unwrap();
    total
}

fn def(name: &str) -> String {
    format!(
        "[image]\nname = \"{name}\"\ntag = \"1\"\n\n[[layer]]\nkind = \"copy\"\nsrc = \"rootfs\"\ndest = \"/\"\n\n[config]\ncmd = [\"/bin/sh\"]\n"
    )
}

/// A build context `dir` with a generated tree and a definition for `name:1`.
fn context(dir: &Path, name: &str, files: usize, seed: u64) -> PathBuf {
    let bytes = gen_tree(&dir.join("rootfs"), files, seed);
    eprintln!("{name}: {files} files, {} KiB", bytes >> 10);
    let file = dir.join("drover.toml");
    write(&file, def(name).as_bytes(), 0o644);
    file
}

fn drover(store: &Path) -> Command {
    let mut c = Command::new(DROVER);
    c.arg("--init")
        .arg("--store")
        .arg(store)
        .env_remove("SOURCE_DATE_EPOCH");
    c
}

fn run(store: &Path, args: &[&str]) -> Output {
    drover(store).args(args).output().expect("run drover")
}

fn ok(store: &Path, args: &[&str]) -> String {
    let out = run(store, args);
    assert!(
        out.status.success(),
        "drover --store {} {args:?} failed:\n{}",
        store.display(),
        show(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn build(store: &Path, def: &Path, extra: &[&str]) -> String {
    let mut args = vec!["build", "-f", def.to_str().unwrap()];
    args.extend_from_slice(extra);
    last_line(&ok(store, &args))
}

fn blob_files(store: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(store.join("blobs/sha256"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn blob_names(store: &Path) -> BTreeSet<String> {
    blob_files(store)
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect()
}

/// Every file under `blobs/sha256/` is named by a sha256 digest and holds
/// exactly the bytes that hash to it (checked with `sha256sum`, independently
/// of drover).
fn assert_blobs_hash_to_their_names(store: &Path, when: &str) {
    let files = blob_files(store);
    if files.is_empty() {
        return;
    }
    let out = Command::new("sha256sum")
        .args(&files)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "{when}: {}", show(&out));
    let sums = String::from_utf8(out.stdout).unwrap();
    assert_eq!(sums.lines().count(), files.len(), "{when}: {sums}");
    for line in sums.lines() {
        let (hash, path) = line.split_once("  ").unwrap();
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        assert_eq!(
            hash, name,
            "{when}: a blob does not hash to its name: {path}"
        );
    }
}

/// `index.json`, when present, parses and lists only manifests the store has.
/// It must be present once any blob is (the store writes it on open, before
/// a build writes anything).
fn assert_index_sound(store: &Path, when: &str) {
    let path = store.join("index.json");
    let Ok(bytes) = fs::read(&path) else {
        assert!(
            blob_files(store).is_empty(),
            "{when}: blobs exist but index.json does not"
        );
        return;
    };
    let index: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{when}: index.json does not parse ({e}):\n{}",
            String::from_utf8_lossy(&bytes)
        )
    });
    for m in index["manifests"].as_array().expect("manifests") {
        let digest = m["digest"].as_str().unwrap();
        let blob = store
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap());
        assert!(
            blob.is_file(),
            "{when}: index.json lists {digest}, which is not in the store"
        );
    }
}

/// What must hold of a store after a drover process was killed in it.
fn assert_sound_after_kill(store: &Path, when: &str) {
    // Look before running drover: opening the store rewrites a stale index.
    assert_index_sound(store, when);
    assert_blobs_hash_to_their_names(store, when);
    let out = run(store, &["verify"]);
    assert!(
        out.status.success(),
        "{when}: verify failed:\n{}",
        show(&out)
    );
    let out = run(store, &["audit", "verify"]);
    assert!(
        out.status.success(),
        "{when}: audit verify failed:\n{}",
        show(&out)
    );
    assert_index_sound(store, when);
}

/// When to send SIGKILL.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This long after the start.
    Time(Duration),
    /// As soon as `blobs/sha256/` holds this many files: a build commits the
    /// layer, config, manifest, baseline, empty config and artifact manifest
    /// in that order, so these points land between its late steps.
    Blobs(usize),
    /// As soon as `blobs/sha256/` holds at most this many files (gc deleting).
    BlobsAtMost(usize),
}

/// How a run that was meant to be killed ended.
enum Ended {
    Killed,
    /// It finished first, after this long.
    Finished(Duration),
}

/// Start `args` in `store` and SIGKILL it at `at`, polling every half
/// millisecond.
fn kill_at(store: &Path, args: &[&str], at: KillAt) -> Ended {
    let started = Instant::now();
    let mut child = drover(store)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn drover");
    loop {
        if child.try_wait().unwrap().is_some() {
            return Ended::Finished(started.elapsed());
        }
        let fire = match at {
            KillAt::Time(t) => started.elapsed() >= t,
            KillAt::Blobs(n) => blob_files(store).len() >= n,
            KillAt::BlobsAtMost(n) => blob_files(store).len() <= n,
        };
        if fire {
            child.kill().unwrap(); // SIGKILL; it has not been reaped, so this cannot miss
            child.wait().unwrap();
            return Ended::Killed;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

#[test]
fn build_killed_at_any_moment_leaves_the_store_valid() {
    let dir = tempfile::tempdir().unwrap();
    let def = context(&dir.path().join("ctx"), "crash", 200, 1);

    let started = Instant::now();
    let reference = build(&dir.path().join("reference"), &def, &[]);
    // How long a cold build takes. Other tests and builds share the machine,
    // so this is only an estimate: it shrinks whenever a run finishes before
    // its kill point, so later points still land inside the build.
    let mut wall = started.elapsed();
    eprintln!("cold build: {wall:?}");

    let timed = 16u32;
    let mut points: Vec<(u32, KillAt)> = [1, 3, 5]
        .map(|ms| (0, KillAt::Time(Duration::from_millis(ms))))
        .to_vec();
    points.extend((0..timed).map(|i| (i, KillAt::Time(Duration::ZERO))));
    points.extend((1..=6).map(|n| (0, KillAt::Blobs(n))));
    let mut killed = 0;
    for (n, (i, mut at)) in points.iter().copied().enumerate() {
        if n >= 3 && matches!(at, KillAt::Time(_)) {
            at = KillAt::Time(wall * i / timed);
        }
        let store = dir.path().join(format!("store-{n}"));
        let when = format!("build killed at {at:?}");
        match kill_at(
            &store,
            &["build", "--no-cache", "-f", def.to_str().unwrap()],
            at,
        ) {
            Ended::Killed => killed += 1,
            Ended::Finished(took) => wall = wall.min(took),
        }
        assert_sound_after_kill(&store, &when);
        assert_eq!(
            build(&store, &def, &[]),
            reference,
            "{when}: the next build gave another image"
        );
        let out = run(&store, &["verify"]);
        assert!(
            out.status.success(),
            "{when}: verify after the rebuild:\n{}",
            show(&out)
        );
        // Disk space: a 25-store test should not keep 25 copies around.
        fs::remove_dir_all(&store).unwrap();
    }
    eprintln!("{killed} of {} builds were killed mid-run", points.len());
    assert!(
        killed * 3 >= points.len() * 2,
        "only {killed} of {} kills landed during the build",
        points.len()
    );
}

/// A store holding `keep:1`, plus the blobs of an untagged image for gc to delete.
fn gc_template(dir: &Path) -> (PathBuf, PathBuf) {
    let store = dir.join("template");
    let keep = dir.join("keep");
    sample_tree(&keep.join("rootfs"));
    write(&keep.join("drover.toml"), def("keep").as_bytes(), 0o644);
    build(&store, &keep.join("drover.toml"), &[]);

    // Many small layers, so gc has many blobs to delete.
    let doomed = dir.join("doomed");
    let mut d = def("doomed");
    for i in 0..60 {
        d.push_str(&format!(
            "\n[[layer]]\nkind = \"file\"\ndest = \"/etc/part-{i}\"\ncontent = \"part {i}\\n\"\n"
        ));
    }
    fs::create_dir_all(doomed.join("rootfs")).unwrap();
    write(&doomed.join("drover.toml"), d.as_bytes(), 0o644);
    build(&store, &doomed.join("drover.toml"), &[]);
    ok(&store, &["rmi", "doomed:1"]);
    (store, keep.join("drover.toml"))
}

fn copy_store(from: &Path, to: &Path) {
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn gc_killed_at_any_moment_leaves_the_store_valid() {
    let dir = tempfile::tempdir().unwrap();
    let (template, keep_def) = gc_template(dir.path());
    let before = blob_names(&template);

    // A clean gc on a copy: how long it takes and what it leaves.
    let clean = dir.path().join("clean");
    copy_store(&template, &clean);
    let started = Instant::now();
    let report = common::doc(&ok(&clean, &["--json", "gc"]));
    let wall = started.elapsed();
    let after = blob_names(&clean);
    assert!(report["removed_blobs"].as_u64().unwrap() >= 60, "{report}");
    assert!(after.len() < before.len() && after.is_subset(&before));
    eprintln!(
        "gc: {wall:?}, {} of {} blobs removed",
        before.len() - after.len(),
        before.len()
    );

    let keep_digest = build(&clean, &keep_def, &[]);

    let mut points: Vec<KillAt> = [0, 1, 2, 3, 4, 5, 7, 9, 12, 15]
        .map(|ms| KillAt::Time(Duration::from_millis(ms)))
        .to_vec();
    points.extend((1..8).map(|i| KillAt::Time(wall * i / 8)));
    // Mid-deletion, when the poll is quick enough to see it.
    points.extend([1, 20, 50].map(|n| KillAt::BlobsAtMost(before.len() - n)));
    let mut killed = 0;
    for (n, at) in points.iter().enumerate() {
        let store = dir.path().join(format!("gc-{n}"));
        copy_store(&template, &store);
        let when = format!("gc killed at {at:?}");
        if let Ended::Killed = kill_at(&store, &["gc"], *at) {
            killed += 1;
        }
        assert_sound_after_kill(&store, &when);
        ok(&store, &["gc"]);
        assert_eq!(
            blob_names(&store),
            after,
            "{when}: the rerun of gc left another set of blobs"
        );
        ok(&store, &["verify"]);
        ok(&store, &["audit", "verify"]);
        ok(&store, &["baseline", "keep:1"]);
        assert_eq!(build(&store, &keep_def, &[]), keep_digest, "{when}");
        fs::remove_dir_all(&store).unwrap();
    }
    eprintln!("{killed} of {} gc runs were killed mid-run", points.len());
    assert!(
        killed >= points.len() / 2,
        "only {killed} of {} kills landed during gc",
        points.len()
    );
}

#[test]
fn concurrent_builds_into_one_store_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = context(&dir.path().join("alpha"), "alpha", 100, 2);
    let beta = context(&dir.path().join("beta"), "beta", 100, 3);
    let ref_alpha = build(&dir.path().join("ref-alpha"), &alpha, &[]);
    let ref_beta = build(&dir.path().join("ref-beta"), &beta, &[]);
    assert_ne!(ref_alpha, ref_beta);

    let spawn = |store: &Path, args: &[&str]| {
        drover(store)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn drover")
    };
    let build_args = |def: &Path, no_cache: bool| {
        let mut a = vec![
            "build".to_string(),
            "-f".into(),
            def.to_str().unwrap().into(),
        ];
        if no_cache {
            a.push("--no-cache".into());
        }
        a
    };
    // Rounds: two fresh stores (both processes create the store and its
    // database at once), then the second store again, then with a gc racing.
    let rounds: [(&str, bool, bool); 4] = [
        ("store-1", false, false),
        ("store-2", false, false),
        ("store-2", true, false),
        ("store-2", true, true),
    ];
    for (round, (name, no_cache, with_gc)) in rounds.into_iter().enumerate() {
        let store = dir.path().join(name);
        let a = build_args(&alpha, no_cache);
        let b = build_args(&beta, no_cache);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let b: Vec<&str> = b.iter().map(String::as_str).collect();
        let children = [
            Some(spawn(&store, &a)),
            Some(spawn(&store, &b)),
            with_gc.then(|| spawn(&store, &["gc"])),
        ];
        let outs: Vec<Option<Output>> = children
            .into_iter()
            .map(|c| c.map(|c| c.wait_with_output().unwrap()))
            .collect();
        for out in outs.iter().flatten() {
            assert!(
                out.status.success(),
                "round {round}: a concurrent run failed:\n{}",
                show(out)
            );
        }
        let digest =
            |o: &Option<Output>| last_line(&String::from_utf8_lossy(&o.as_ref().unwrap().stdout));
        assert_eq!(digest(&outs[0]), ref_alpha, "round {round}");
        assert_eq!(digest(&outs[1]), ref_beta, "round {round}");

        let images = common::items(&ok(&store, &["--json", "images"]));
        let tags: Vec<(&str, &str)> = images
            .iter()
            .map(|r| (r["name"].as_str().unwrap(), r["digest"].as_str().unwrap()))
            .collect();
        assert_eq!(
            tags,
            [
                ("alpha:1", ref_alpha.as_str()),
                ("beta:1", ref_beta.as_str())
            ],
            "round {round}"
        );
        ok(&store, &["verify"]);
        ok(&store, &["audit", "verify"]);
        assert_index_sound(&store, &format!("round {round}"));
        let ledger = common::items(&ok(&store, &["--json", "audit", "--action", "image.build"]));
        let builds = ledger.len();
        let expected = rounds[..=round].iter().filter(|r| r.0 == name).count() * 2;
        assert_eq!(builds, expected, "round {round}: image.build entries");
    }
}
