use std::fs;

use super::*;

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// This machine's files, as the farm's Debian images ship them.
const DEBIAN_SOURCES: &str = "\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

#[test]
fn machine_sources_in_both_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(
        root,
        "etc/apt/sources.list.d/debian.sources",
        DEBIAN_SOURCES,
    );
    write(
        root,
        "etc/apt/sources.list",
        "# comment\n\
         deb http://deb.debian.org/debian/ bookworm main contrib # trailing\n\
         deb-src http://deb.debian.org/debian bookworm main\n\
         deb [ arch=amd64,arm64 signed-by=/etc/apt/keyrings/extra.gpg ] https://example.invalid/apt bookworm extra\n",
    );
    write(
        root,
        "etc/apt/sources.list.d/google.list.disabled-by-farm",
        "deb https://x.invalid/apt cloud-sdk main\n",
    );
    write(root, "etc/apt/sources.list.d/old.list~", "garbage\n");
    write(
        root,
        "etc/apt/sources.list.d/nodesource.sources",
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\nComponents: main\nArchitectures: amd64\nEnabled: no\n",
    );
    write(
        root,
        "etc/apt/sources.list.d/zz-src.sources",
        "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n",
    );
    let sources = machine_sources(root).unwrap();
    let seen: Vec<(String, String, Vec<String>)> = sources
        .iter()
        .map(|s| (s.url.clone(), s.suite.clone(), s.components.clone()))
        .collect();
    let v = |s: &[&str]| s.iter().map(|c| c.to_string()).collect::<Vec<_>>();
    assert_eq!(
        seen,
        [
            (
                "http://deb.debian.org/debian".into(),
                "bookworm".into(),
                v(&["main", "contrib"])
            ),
            (
                "https://example.invalid/apt".into(),
                "bookworm".into(),
                v(&["extra"])
            ),
            (
                "http://deb.debian.org/debian".into(),
                "bookworm".into(),
                v(&["main"])
            ),
            (
                "http://deb.debian.org/debian".into(),
                "bookworm-updates".into(),
                v(&["main"])
            ),
            (
                "http://deb.debian.org/debian-security".into(),
                "bookworm-security".into(),
                v(&["main"])
            ),
        ]
    );
    let default_keyring = Keyring::Path(root.join("usr/share/keyrings/debian-archive-keyring.gpg"));
    assert_eq!(sources[0].keyring, default_keyring);
    assert_eq!(
        sources[1].keyring,
        Keyring::Path(root.join("etc/apt/keyrings/extra.gpg"))
    );
    assert_eq!(sources[1].architectures, ["amd64", "arm64"]);
    assert_eq!(sources[2].keyring, default_keyring);
    assert!(
        sources[0].origin.ends_with("etc/apt/sources.list:2"),
        "{}",
        sources[0].origin
    );
    assert!(
        sources[4].origin.ends_with("debian.sources:8"),
        "{}",
        sources[4].origin
    );

    // bookworm: the suite, its updates and its security suite; repeated
    // entries merged; another architecture's source left out.
    let repos = repositories_for(&sources, "bookworm", "amd64").unwrap();
    let keyring = root.join("usr/share/keyrings/debian-archive-keyring.gpg");
    assert_eq!(
        repos,
        [
            Repository {
                url: "http://deb.debian.org/debian".into(),
                suite: "bookworm".into(),
                components: v(&["main", "contrib"]),
                keyring: keyring.clone(),
            },
            Repository {
                url: "https://example.invalid/apt".into(),
                suite: "bookworm".into(),
                components: v(&["extra"]),
                keyring: root.join("etc/apt/keyrings/extra.gpg"),
            },
            Repository {
                url: "http://deb.debian.org/debian".into(),
                suite: "bookworm-updates".into(),
                components: v(&["main"]),
                keyring: keyring.clone(),
            },
            Repository {
                url: "http://deb.debian.org/debian-security".into(),
                suite: "bookworm-security".into(),
                components: v(&["main"]),
                keyring,
            },
        ]
    );
    let repos = repositories_for(&sources, "bookworm", "i386").unwrap();
    assert_eq!(repos.len(), 3);
    assert!(
        repositories_for(&sources, "trixie", "amd64")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn no_sources_at_all() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(machine_sources(tmp.path()).unwrap().is_empty());
}

#[test]
fn this_machine_reads() {
    // Whatever this machine has must parse (it is what a build defaults to).
    if Path::new("/etc/apt").is_dir() {
        machine_sources(Path::new("/")).unwrap();
    }
}

#[test]
fn signed_by_forms() {
    let root = Path::new("/");
    let inline = "Types: deb\nURIs: http://r.invalid/debian\nSuites: bookworm\nComponents: main\n\
                  Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBGPL\n -----END PGP PUBLIC KEY BLOCK-----\n";
    let s =
        parse_deb822_sources(inline, Path::new("/etc/apt/sources.list.d/r.sources"), root).unwrap();
    assert_eq!(s[0].keyring, Keyring::Unsupported("an inline key".into()));
    let err = repositories_for(&s, "bookworm", "amd64")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("/etc/apt/sources.list.d/r.sources:1: Signed-By of http://r.invalid/debian bookworm is an inline key"), "{err}");
    // Unused by this suite: no error.
    assert!(repositories_for(&s, "trixie", "amd64").unwrap().is_empty());

    let fpr = inline.replace(
        "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBGPL\n -----END PGP PUBLIC KEY BLOCK-----\n",
        "Signed-By: 4D64FEC119C2029067D6E791F8D2585B8783D481\n",
    );
    let s = parse_deb822_sources(&fpr, Path::new("r.sources"), root).unwrap();
    assert_eq!(
        s[0].keyring,
        Keyring::Unsupported("a list of key fingerprints".into())
    );

    let s = parse_one_line_sources(
        "deb [signed-by=/k.gpg] http://a.invalid/ bookworm main\n",
        Path::new("l"),
        Path::new("/chroot"),
    )
    .unwrap();
    assert_eq!(s[0].keyring, Keyring::Path("/chroot/k.gpg".into()));
    assert_eq!(s[0].url, "http://a.invalid");
}

#[test]
fn malformed_sources_are_located() {
    let cases = [
        (
            "deb http://a.invalid\n",
            "line 1: expected `deb [options] URI suite",
        ),
        (
            "\n\ndeb http://a.invalid bookworm\n",
            "line 3: suite \"bookworm\" needs at least one component",
        ),
        (
            "rpm http://a.invalid bookworm main\n",
            "unknown source type \"rpm\"",
        ),
        (
            "deb [arch=amd64 http://a.invalid bookworm main\n",
            "missing `]`",
        ),
        (
            "deb [signed-by=relative.gpg] http://a.invalid bookworm main\n",
            "neither an absolute keyring path",
        ),
    ];
    for (text, want) in cases {
        let err = parse_one_line_sources(text, Path::new("/etc/apt/sources.list"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    // A flat repository (`suite/`) needs no component.
    let flat = parse_one_line_sources(
        "deb http://a.invalid/repo ./\n",
        Path::new("l"),
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(flat[0].suite, "./");
    let cases = [
        (
            "URIs: http://a.invalid\nSuites: bookworm\nComponents: main\n",
            "line 1: no Types",
        ),
        (
            "Types: deb\nSuites: bookworm\nComponents: main\n",
            "needs URIs and Suites",
        ),
        (
            "Types: deb\nURIs: http://a.invalid\nSuites: bookworm\n",
            "needs Components",
        ),
        (
            "Types: deb rpm\nURIs: http://a.invalid\nSuites: bookworm\nComponents: main\n",
            "unknown source type",
        ),
        ("Types: deb\nbroken line\n", "line 2"),
    ];
    for (text, want) in cases {
        let err = parse_deb822_sources(text, Path::new("x.sources"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
}
