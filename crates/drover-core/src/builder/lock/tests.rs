use super::*;
use crate::builder::def;

fn layer(text: &str) -> PackagesLayer {
    let d = def::parse(
        &format!("[image]\nname = \"x\"\n[[layer]]\nkind = \"packages\"\n{text}"),
        Path::new("drover.toml"),
    )
    .unwrap();
    match &d.layers[0] {
        LayerDef::Packages(p) => p.clone(),
        other => panic!("{other:?}"),
    }
}

fn sample(request: Request) -> Lock {
    Lock {
        version: VERSION,
        layers: vec![LockedLayer {
            index: 0,
            input: request.input(),
            request,
            repositories: vec![LockedRepository {
                url: "http://deb.debian.org/debian".into(),
                suite: "bookworm".into(),
                keyring: "/usr/share/keyrings/debian-archive-keyring.gpg".into(),
                date: "Sat, 11 Jul 2026 10:16:37 UTC".into(),
                inrelease: Digest::of(b"inrelease"),
                origin: Some("Debian".into()),
                release: Some("12.15".into()),
            }],
            packages: vec![LockedPackage {
                name: "libc6".into(),
                version: "2.36-9+deb12u10".into(),
                architecture: "amd64".into(),
                source: "glibc".into(),
                url:
                    "http://deb.debian.org/debian/pool/main/g/glibc/libc6_2.36-9+deb12u10_amd64.deb"
                        .into(),
                sha256: Digest::of(b"libc6"),
                size: 2_800_000,
            }],
        }],
    }
}

#[test]
fn the_request_ignores_order_comments_and_layout() {
    let a = layer("packages = [\"nginx-light\", \"ca-certificates\"]\nsuite = \"bookworm\"\n");
    let b = layer(
        "# a comment\r\nsuite = \"bookworm\"   # same suite\r\npackages = [\r\n  \"ca-certificates\",\r\n  \"nginx-light\",\r\n]\r\n",
    );
    assert_eq!(
        Request::of(&a, "amd64").input(),
        Request::of(&b, "amd64").input()
    );
    let c = layer("packages = [\"nginx-light\"]\n");
    assert_ne!(
        Request::of(&a, "amd64").input(),
        Request::of(&c, "amd64").input()
    );
    // The host's architecture counts only when the layer names none.
    let pinned = layer("packages = [\"nginx-light\"]\narch = \"amd64\"\n");
    assert_eq!(
        Request::of(&pinned, "arm64").input(),
        Request::of(&c, "amd64").input()
    );
    // `scripts` changes how the layer is built, not what it holds.
    let scripts = layer("packages = [\"nginx-light\"]\nscripts = true\n");
    assert_eq!(Request::of(&scripts, "amd64"), Request::of(&c, "amd64"));
}

#[test]
fn a_lock_round_trips_through_its_canonical_text() {
    let lock = sample(Request::of(&layer("packages = [\"libc6\"]\n"), "amd64"));
    let text = lock.to_text();
    let back = Lock::parse(&text, Path::new("drover.lock")).unwrap();
    assert_eq!(back, lock);
    assert_eq!(back.to_text(), text, "the text is canonical");
    assert!(text.contains("[[layer.package]]"), "{text}");
}

#[test]
fn a_stale_lock_names_what_differs() {
    let old = Request::of(
        &layer("packages = [\"nginx-light\", \"ca-certificates\"]\n"),
        "amd64",
    );
    let lock = sample(old);
    let new = Request::of(
        &layer("packages = [\"nginx-light\", \"curl\"]\nsuite = \"trixie\"\n"),
        "amd64",
    );
    let err = lock
        .layer(0, &new, Path::new("drover.lock"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("packages added: curl"), "{err}");
    assert!(err.contains("packages removed: ca-certificates"), "{err}");
    assert!(err.contains("suite bookworm → trixie"), "{err}");
    assert!(err.contains("drover lock"), "{err}");
}

#[test]
fn a_hand_edited_or_foreign_lock_is_refused() {
    let lock = sample(Request::of(&layer("packages = [\"libc6\"]\n"), "amd64"));
    let edited = lock.to_text().replace("\"libc6\"]", "\"libc6\", \"curl\"]");
    let err = Lock::parse(&edited, Path::new("drover.lock"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match its request"), "{err}");
    let err = Lock::parse("version = 99\n", Path::new("drover.lock"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("lock format 99"), "{err}");
    let err = Lock::parse("version = 1\nsurprise = true\n", Path::new("drover.lock"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a valid lock file"), "{err}");
}

#[test]
fn the_lock_sits_beside_its_definition() {
    assert_eq!(
        path_for(Path::new("examples/nginx/drover.toml")),
        Path::new("examples/nginx/drover.lock")
    );
    assert_eq!(path_for(Path::new("web.toml")), Path::new("web.lock"));
}
