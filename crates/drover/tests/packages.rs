//! Debian packages layers through the CLI, against the real Debian
//! repository (every machine here, CI included, reaches deb.debian.org):
//! bad input (issue 17, deliverable 7), each refused with a message that
//! names the thing and with nothing stored.
//!
//! Also the package cache the whole test run shares: each `.deb` is
//! downloaded once per run (and kept in `target/tmp/packages` for the next
//! one), then hard-linked into each fresh store's cache before it builds
//! ([`store`]), so a test pays for unpacking, never for the network.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;

use crate::common::{Env, show};

/// The shared package cache: `sha256/<hex>`, the layout of a store's
/// `packages/sha256/`.
fn shared() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("packages/sha256")
}

/// Link the shared cache's copy of `package` (of the nginx example's lock)
/// into `env`'s store again.
fn store_one(env: &Env, package: &str) {
    let (_, hex) = locked_debs("nginx")
        .into_iter()
        .find(|(n, _)| n == package)
        .unwrap();
    fs::hard_link(
        shared().join(&hex),
        env.store().join("packages/sha256").join(&hex),
    )
    .unwrap();
}

/// `examples/<name>`
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// A fresh store whose package cache holds (hard links to) every `.deb`
/// and index this test run has downloaded so far.
pub fn store() -> Env {
    let env = Env::new();
    let to = env.store().join("packages/sha256");
    fs::create_dir_all(&to).unwrap();
    if let Ok(list) = fs::read_dir(shared()) {
        for entry in list {
            let from = entry.unwrap().path();
            let dest = to.join(from.file_name().unwrap());
            // Another file system (a CI runner's /tmp): copy.
            if fs::hard_link(&from, &dest).is_err() {
                fs::copy(&from, &dest).unwrap();
            }
        }
    }
    env
}

/// Add what `env`'s store downloaded to the shared cache. Files enter a
/// store's cache whole (renamed in once verified), so any file there is
/// safe to share.
pub fn keep(env: &Env) {
    let to = shared();
    fs::create_dir_all(&to).unwrap();
    for entry in fs::read_dir(env.store().join("packages/sha256")).unwrap() {
        let from = entry.unwrap().path();
        let dest = to.join(from.file_name().unwrap());
        if !dest.exists() && fs::hard_link(&from, &dest).is_err() {
            let tmp = to.join(format!(".tmp-{}", std::process::id()));
            fs::copy(&from, &tmp).unwrap();
            fs::rename(&tmp, &dest).unwrap();
        }
    }
}

/// The `.deb` digests (hex) that `examples/<name>/drover.lock` names, by
/// package name.
pub fn locked_debs(name: &str) -> Vec<(String, String)> {
    let lock = fs::read_to_string(example(name).join("drover.lock")).unwrap();
    let mut out = Vec::new();
    let mut package = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            package = Some(n.trim_matches('"').to_string());
        }
        if let Some(d) = line.strip_prefix("sha256 = \"sha256:") {
            out.push((package.take().unwrap(), d.trim_end_matches('"').to_string()));
        }
    }
    assert!(
        !out.is_empty(),
        "no packages in examples/{name}/drover.lock"
    );
    out
}

/// Have every `.deb` of `examples/<name>`'s lock in the shared cache:
/// built once, in a scratch store, by the first test that asks; the
/// others wait rather than download the same files at the same time.
pub fn warm(name: &str) {
    static WARMING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = WARMING.lock().unwrap_or_else(|e| e.into_inner());
    if locked_debs(name)
        .iter()
        .all(|(_, hex)| shared().join(hex).exists())
    {
        return;
    }
    let env = store();
    let def = example(name).join("drover.toml");
    env.ok(&["build", "-f", def.to_str().unwrap()]);
    keep(&env);
}

/// A copy of `examples/<name>` as `env`'s build context.
pub fn copy_example(env: &Env, name: &str) {
    copy_dir(&example(name), &env.ctx());
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// `drover build -f ctx/drover.toml`, in a network namespace with only
/// `lo` when `offline` (the network is down).
fn build(env: &Env, offline: bool) -> Output {
    let def = env.ctx().join("drover.toml");
    let mut cmd = if offline {
        let mut c = std::process::Command::new("unshare");
        c.arg("-n").arg(crate::common::DROVER);
        c.arg("--init").arg("--store").arg(env.store());
        c
    } else {
        env.cmd()
    };
    cmd.args(["build", "--sign", "-f", def.to_str().unwrap()])
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

fn lock(env: &Env) -> Output {
    let def = env.ctx().join("drover.toml");
    env.run(&["lock", "-f", def.to_str().unwrap()])
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The store's cached files.
fn cached(env: &Env) -> BTreeSet<String> {
    fs::read_dir(env.store().join("packages/sha256"))
        .map(|l| {
            l.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Nothing stored: no image, no layer blob.
fn assert_no_image(env: &Env) {
    if env.store().join("drover.db").exists() {
        let images = env.items(&["images"]);
        assert!(images.is_empty(), "{images:?}");
    }
    let blobs = env.store().join("blobs/sha256");
    let n = fs::read_dir(&blobs).map(|l| l.count()).unwrap_or(0);
    assert_eq!(n, 0, "blobs stored in {}", blobs.display());
}

fn packages_def(body: &str) -> String {
    format!("[image]\nname = \"bad\"\ntag = \"1\"\n\n[[layer]]\nkind = \"packages\"\n{body}\n")
}

#[test]
fn an_unknown_package_is_named_with_the_close_names() {
    let env = store();
    env.write_def(&packages_def("packages = [\"ngnix\"]"));
    let out = lock(&env);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "drover.toml: layer[0].packages: package \"ngnix\" is not in these repositories"
        ) && err.contains("did you mean nginx"),
        "{err}"
    );
    assert!(!env.ctx().join("drover.lock").exists());
    // A build says so too (asking for `drover lock`, or resolving itself).
    let out = build(&env, false);
    assert!(
        matches!(out.status.code(), Some(2 | 4))
            && (stderr(&out).contains("drover lock") || stderr(&out).contains("\"ngnix\"")),
        "{}",
        show(&out)
    );
    assert_no_image(&env);
    keep(&env);
}

#[test]
fn an_unsatisfiable_dependency_shows_the_chain() {
    let env = store();
    // Contrib alone: its packages need main's, which are not there.
    env.write_def(&packages_def(
        "packages = [\"ttf-mscorefonts-installer\"]\ncomponents = [\"contrib\"]",
    ));
    let out = lock(&env);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("unsatisfiable dependency: ttf-mscorefonts-installer → ")
            && err.contains("is not in these repositories"),
        "{err}"
    );
    assert!(!env.ctx().join("drover.lock").exists());
    // A version constraint (any of Debian's operators) that no version meets.
    env.write_def(&packages_def(
        "packages = [\"nginx-light\", \"libc6 (<< 2.0)\"]",
    ));
    let out = lock(&env);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("libc6 (<< 2.0): no such version; available: 2.36-"),
        "{err}"
    );
    assert!(!env.ctx().join("drover.lock").exists());
    assert_no_image(&env);
    keep(&env);
}

#[test]
fn a_repository_whose_signature_fails_is_refused_and_nothing_is_stored() {
    let keyring = "/usr/share/keyrings/debian-archive-removed-keys.gpg";
    if !Path::new(keyring).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{keyring} (debian-archive-keyring) is needed in CI"
        );
        eprintln!("skipping: no {keyring}");
        return;
    }
    let env = Env::new();
    // Keys Debian retired: none of them signed bookworm.
    env.write_def(&packages_def(&format!(
        "packages = [\"nginx-light\"]\n\
         repositories = [{{ url = \"http://deb.debian.org/debian\", keyring = \"{keyring}\" }}]"
    )));
    let out = lock(&env);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("InRelease of repository http://deb.debian.org/debian (suite bookworm)")
            && err.contains(&format!("does not verify against the keyring {keyring}"))
            && err.contains("refused, nothing stored"),
        "{err}"
    );
    assert!(cached(&env).is_empty(), "{:?}", cached(&env));
    let refs = env.store().join("packages/refs");
    assert_eq!(fs::read_dir(&refs).map(|l| l.count()).unwrap_or(0), 0);
    assert!(!env.ctx().join("drover.lock").exists());
}

#[test]
fn a_stale_lock_is_refused_naming_what_differs() {
    warm("nginx");
    let env = store();
    copy_example(&env, "nginx");
    let def = env.ctx().join("drover.toml");
    let text = fs::read_to_string(&def).unwrap();
    // Comments, key order and CRLF are not meaning: the lock still holds.
    let reworded = text
        .replace(
            "packages = [\"nginx-light\"]",
            "# the light one\npackages = [ \"nginx-light\" ]",
        )
        .replace('\n', "\r\n");
    fs::write(&def, reworded).unwrap();
    let out = env.run(&["lock", "--check", "-f", def.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    // A package added: the build names it and stores nothing.
    fs::write(
        &def,
        text.replace(
            "packages = [\"nginx-light\"]",
            "packages = [\"nginx-light\", \"ca-certificates\"]",
        ),
    )
    .unwrap();
    let out = build(&env, false);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("packages added: ca-certificates") && err.contains("drover lock"),
        "{err}"
    );
    // And one removed.
    fs::write(&def, text.replace("\"nginx-light\"", "\"nginx\"")).unwrap();
    let err = stderr(&build(&env, false));
    assert!(
        err.contains("packages added: nginx") && err.contains("packages removed: nginx-light"),
        "{err}"
    );
    assert_no_image(&env);
}

#[test]
fn offline_a_complete_cache_builds_and_an_incomplete_one_names_what_is_missing() {
    warm("nginx");
    let env = store();
    copy_example(&env, "nginx");
    let out = build(&env, true);
    assert!(out.status.success(), "{}", show(&out));

    let env = store();
    copy_example(&env, "nginx");
    let debs = locked_debs("nginx");
    let (name, hex) = debs.iter().find(|(n, _)| n == "nginx-light").unwrap();
    fs::remove_file(env.store().join("packages/sha256").join(hex)).unwrap();
    let out = build(&env, true);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "1 package in the package cache: {name} ({}) not found",
            &hex[..12]
        )) && err.contains("the repository cannot be reached"),
        "{err}"
    );
    assert_no_image(&env);
}

#[test]
fn a_deb_whose_hash_differs_from_the_lock_is_refused_by_name() {
    warm("nginx");
    let env = store();
    copy_example(&env, "nginx");
    let lock = env.ctx().join("drover.lock");
    let (_, hex) = locked_debs("nginx")
        .into_iter()
        .find(|(n, _)| n == "nginx-light")
        .unwrap();
    // What the repository sends for nginx-light is not what the lock says.
    let wrong = format!("{:064x}", 0xbad);
    let text = fs::read_to_string(&lock).unwrap();
    fs::write(&lock, text.replace(&hex, &wrong)).unwrap();
    let before = cached(&env);
    let out = build(&env, false);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("corrupt package nginx-light (http://deb.debian.org/")
            && err.contains(&format!(
                "its sha256 is sha256:{hex}, but sha256:{wrong} was expected"
            ))
            && err.contains("refused, nothing stored"),
        "{err}"
    );
    assert_eq!(cached(&env), before, "nothing new in the cache");
    assert_no_image(&env);
}

/// Regression (issue 17): a cached `.deb` was trusted by its file name; a
/// damaged one went into the image. Now it is downloaded again (the image
/// is the same), or, offline, named as missing.
#[test]
fn a_damaged_cached_deb_is_never_installed() {
    warm("nginx");
    let damage = |env: &Env| {
        let (_, hex) = locked_debs("nginx")
            .into_iter()
            .find(|(n, _)| n == "nginx-light")
            .unwrap();
        let path = env.store().join("packages/sha256").join(hex);
        // A new file, not a write through the link into the shared cache.
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x55;
        fs::remove_file(&path).unwrap();
        fs::write(&path, bytes).unwrap();
    };
    let clean = store();
    copy_example(&clean, "nginx");
    let out = build(&clean, false);
    assert!(out.status.success(), "{}", show(&out));
    let want = crate::common::last_line(&String::from_utf8_lossy(&out.stdout));

    let env = store();
    copy_example(&env, "nginx");
    damage(&env);
    let out = build(&env, true);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert!(
        stderr(&out).contains("nginx-light (")
            && stderr(&out).contains("its cached copy was damaged and is removed) not found"),
        "{}",
        show(&out)
    );
    assert_no_image(&env);
    // Online, the damaged copy is replaced by a download.
    store_one(&env, "nginx-light");
    damage(&env);
    let out = build(&env, false);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        crate::common::last_line(&String::from_utf8_lossy(&out.stdout)),
        want
    );
    assert!(
        stderr(&out).contains("package nginx-light: its cached copy did not match"),
        "{}",
        show(&out)
    );
}
