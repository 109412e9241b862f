use super::*;
use crate::builder::packages::index::parse_packages;

/// A small archive modelled on bookworm: libc6 at two versions, nginx-light
/// and its exact-version chain, virtual packages (`awk`, `debconf-2.0`,
/// `mail-transport-agent`), versioned provides, `python3:any`, Essential
/// packages, conflicts. `Filename`, `Size` and `SHA256` are filled in.
const MINI: &str = "\
Package: libc6
Source: glibc
Version: 2.36-9+deb12u10
Architecture: amd64
Depends: libgcc-s1
Recommends: libidn2-0 (>= 2.0.5~)
Breaks: locales (<< 2.36)
Multi-Arch: same
Priority: optional

Package: libc6
Source: glibc
Version: 2.36-9+deb12u4
Architecture: amd64
Depends: libgcc-s1
Multi-Arch: same
Priority: optional

Package: libgcc-s1
Source: gcc-12 (12.2.0-14)
Version: 12.2.0-14
Architecture: amd64
Depends: gcc-12-base (= 12.2.0-14), libc6 (>= 2.35)
Priority: optional

Package: gcc-12-base
Source: gcc-12
Version: 12.2.0-14
Architecture: amd64
Priority: required

Package: libidn2-0
Version: 2.3.3-1+b1
Architecture: amd64
Depends: libc6 (>= 2.14)

Package: libssl3
Source: openssl
Version: 3.0.15-1~deb12u1
Architecture: amd64
Depends: libc6 (>= 2.34)

Package: zlib1g
Source: zlib
Version: 1:1.2.13.dfsg-1
Architecture: amd64
Depends: libc6 (>= 2.14)

Package: libcrypt1
Source: libxcrypt (1:4.4.33-2)
Version: 1:4.4.33-2
Architecture: amd64
Depends: libc6 (>= 2.36)

Package: libpcre2-8-0
Source: pcre2
Version: 10.42-1
Architecture: amd64
Depends: libc6 (>= 2.14)

Package: nginx
Version: 1.22.1-9+deb12u9
Architecture: amd64
Depends: nginx-common (= 1.22.1-9+deb12u9), iproute2, libc6 (>= 2.34), libcrypt1 (>= 1:4.1.0), libpcre2-8-0 (>= 10.22), libssl3 (>= 3.0.0), zlib1g (>= 1:1.1.4)
Recommends: nginx-doc
Provides: httpd, httpd-cgi, nginx-abi-1.22.1-7
Conflicts: nginx-extras

Package: nginx-common
Source: nginx
Version: 1.22.1-9+deb12u9
Architecture: all
Depends: debconf (>= 0.5) | debconf-2.0
Recommends: ssl-cert

Package: nginx-light
Source: nginx
Version: 1.22.1-9+deb12u9
Architecture: all
Depends: libnginx-mod-http-echo (>= 1:0.63-4~), nginx (>= 1.22.1-9+deb12u9), nginx (<< 1.22.1-9+deb12u9.1~)

Package: nginx-extras
Source: nginx
Version: 1.22.1-9+deb12u9
Architecture: amd64
Provides: httpd
Conflicts: nginx

Package: libnginx-mod-http-echo
Source: libnginx-mod-http-echo (1:0.63-4)
Version: 1:0.63-4+b1
Architecture: amd64
Depends: nginx-abi-1.22.1-7, libc6 (>= 2.4)

Package: libnginx-mod-http-geoip
Source: nginx
Version: 1.22.1-9
Architecture: amd64
Depends: libc6 (>= 2.99)

Package: nginx-geo
Source: nginx
Version: 1.22.1-9
Architecture: all
Depends: libnginx-mod-http-geoip (= 1.22.1-9)

Package: iproute2
Version: 6.1.0-3
Architecture: amd64
Depends: libc6 (>= 2.34), libcap2 (>= 1:2.10)
Recommends: libatm1 (>= 2.4.1-17~)

Package: libcap2
Version: 1:2.66-4
Architecture: amd64
Depends: libc6 (>= 2.34)

Package: ssl-cert
Version: 1.1.2
Architecture: all
Depends: openssl (>= 0.9.8g-9)

Package: openssl
Version: 3.0.15-1~deb12u1
Architecture: amd64
Depends: libc6 (>= 2.34), libssl3 (>= 3.0.9)

Package: debconf
Version: 1.5.82
Architecture: all
Pre-Depends: perl-base (>= 5.20.1-3~)
Provides: debconf-2.0
Conflicts: cdebconf (<< 0.96), debconf-tiny
Priority: important

Package: cdebconf
Version: 0.270
Architecture: amd64
Provides: debconf-2.0
Priority: optional

Package: perl-base
Source: perl
Version: 5.36.0-7+deb12u1
Architecture: amd64
Essential: yes
Pre-Depends: libc6 (>= 2.35)
Provides: perlapi-5.36.0
Priority: required

Package: dash
Version: 0.5.12-2
Architecture: amd64
Essential: yes
Pre-Depends: libc6 (>= 2.34)
Priority: required

Package: base-files
Version: 12.4+deb12u8
Architecture: amd64
Essential: yes
Pre-Depends: awk
Priority: required

Package: mawk
Version: 1.3.4.20200120-3.1
Architecture: amd64
Depends: libc6 (>= 2.29)
Provides: awk
Priority: required

Package: gawk
Version: 1:5.2.1-2
Architecture: amd64
Pre-Depends: libc6 (>= 2.34)
Provides: awk
Priority: optional

Package: original-awk
Version: 2012-12-20-10
Architecture: amd64
Provides: awk
Priority: optional

Package: python3
Source: python3-defaults
Version: 3.11.2-1+b1
Architecture: amd64
Multi-Arch: allowed
Pre-Depends: python3-minimal (= 3.11.2-1+b1)
Depends: python3.11 (>= 3.11.2-1~), libpython3-stdlib (= 3.11.2-1+b1)
Provides: python3-profiler
Priority: optional

Package: python3-minimal
Source: python3-defaults
Version: 3.11.2-1+b1
Architecture: amd64
Pre-Depends: python3.11-minimal (>= 3.11.2-1~)
Priority: optional

Package: python3.11
Version: 3.11.2-6+deb12u6
Architecture: amd64
Depends: python3.11-minimal (= 3.11.2-6+deb12u6), libpython3.11-stdlib (= 3.11.2-6+deb12u6)

Package: python3.11-minimal
Source: python3.11
Version: 3.11.2-6+deb12u6
Architecture: amd64
Pre-Depends: libc6 (>= 2.36)
Depends: libpython3.11-minimal (= 3.11.2-6+deb12u6), zlib1g (>= 1:1.2.0)

Package: libpython3.11-minimal
Source: python3.11
Version: 3.11.2-6+deb12u6
Architecture: amd64

Package: libpython3.11-stdlib
Source: python3.11
Version: 3.11.2-6+deb12u6
Architecture: amd64
Depends: libpython3.11-minimal (= 3.11.2-6+deb12u6)

Package: libpython3-stdlib
Source: python3-defaults
Version: 3.11.2-1+b1
Architecture: amd64
Depends: libpython3.11-stdlib (>= 3.11.2-1~)

Package: python3-yaml
Source: pyyaml
Version: 6.0-3+b2
Architecture: amd64
Depends: python3 (<< 3.12), python3 (>= 3.11~), python3:any, libyaml-0-2
Provides: python3-yaml-abi (= 6)

Package: libyaml-0-2
Source: libyaml
Version: 0.2.5-1
Architecture: amd64
Depends: libc6 (>= 2.14)

Package: needs-yaml-abi
Version: 1.0
Architecture: all
Depends: python3-yaml-abi (>= 6)

Package: needs-old-yaml-abi
Version: 1.0
Architecture: all
Depends: python3-yaml-abi (>= 7)

Package: bsd-mailx
Version: 8.1.2-0.20220412cvs-1
Architecture: amd64
Depends: default-mta | mail-transport-agent, libc6 (>= 2.34)

Package: postfix
Version: 3.7.11-0+deb12u1
Architecture: amd64
Provides: mail-transport-agent
Conflicts: mail-transport-agent
Priority: optional

Package: exim4-daemon-light
Source: exim4
Version: 4.96-15+deb12u6
Architecture: amd64
Provides: mail-transport-agent
Conflicts: mail-transport-agent
Priority: optional

Package: needs-mta
Version: 1
Architecture: all
Depends: mail-transport-agent

Package: wants-foreign
Version: 1
Architecture: all
Depends: libc6:i386

Package: libc6
Source: glibc
Version: 2.36-9+deb12u10
Architecture: i386
";

/// `MINI` with the fields every record needs, as one repository.
fn universe_text() -> String {
    MINI.split("\n\n")
        .enumerate()
        .map(|(i, stanza)| {
            let name = stanza
                .lines()
                .next()
                .unwrap()
                .trim_start_matches("Package: ");
            format!(
                "{}\nFilename: pool/main/{}/{name}_{i}.deb\nSize: {}\nSHA256: {:064x}\n",
                stanza.trim_end(),
                &name[..1],
                1000 + i,
                i
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn packages() -> Vec<Package> {
    parse_packages(&universe_text(), 0, "amd64").unwrap()
}

fn request(names: &[&str]) -> Request {
    Request {
        packages: names
            .iter()
            .map(|n| Requirement::parse(n).unwrap())
            .collect(),
        arch: "amd64".to_string(),
        recommends: false,
        essential: false,
    }
}

fn names(pkgs: &[Package], r: &Resolution) -> Vec<String> {
    r.packages.iter().map(|p| pkgs[p.package].label()).collect()
}

fn run(names_: &[&str]) -> (Vec<Package>, Result<Resolution, ResolveError>) {
    let pkgs = packages();
    let res = resolve(&Universe::new(&pkgs), &request(names_));
    (pkgs, res)
}

#[test]
fn nginx_light_closure() {
    let (pkgs, res) = run(&["nginx-light"]);
    let res = res.unwrap();
    assert_eq!(
        names(&pkgs, &res),
        [
            "debconf 1.5.82",
            "gcc-12-base 12.2.0-14",
            "iproute2 6.1.0-3",
            "libc6 2.36-9+deb12u10",
            "libcap2 1:2.66-4",
            "libcrypt1 1:4.4.33-2",
            "libgcc-s1 12.2.0-14",
            "libnginx-mod-http-echo 1:0.63-4+b1",
            "libpcre2-8-0 10.42-1",
            "libssl3 3.0.15-1~deb12u1",
            "nginx 1.22.1-9+deb12u9",
            "nginx-common 1.22.1-9+deb12u9",
            "nginx-light 1.22.1-9+deb12u9",
            "perl-base 5.36.0-7+deb12u1",
            "zlib1g 1:1.2.13.dfsg-1",
        ]
    );
    // No Recommends (ssl-cert, libidn2-0, libatm1), no Suggests.
    assert!(res.choices.is_empty());
    let why = |name: &str| {
        let r = res
            .packages
            .iter()
            .find(|r| pkgs[r.package].name == name)
            .unwrap();
        r.why_text()
    };
    assert_eq!(why("nginx-light"), "nginx-light");
    assert_eq!(why("nginx"), "nginx-light → nginx (>= 1.22.1-9+deb12u9)");
    assert_eq!(
        why("libcap2"),
        "nginx-light → nginx (>= 1.22.1-9+deb12u9) → iproute2 → libcap2 (>= 1:2.10)"
    );
    // The first alternative that can be met: debconf, not a debconf-2.0 provider.
    assert_eq!(
        why("debconf"),
        "nginx-light → nginx (>= 1.22.1-9+deb12u9) → nginx-common (= 1.22.1-9+deb12u9) → debconf (>= 0.5) | debconf-2.0"
    );
}

#[test]
fn recommends_only_when_asked_and_unsatisfiable_ones_are_skipped() {
    let pkgs = packages();
    let mut req = request(&["nginx-light"]);
    req.recommends = true;
    let res = resolve(&Universe::new(&pkgs), &req).unwrap();
    let got = names(&pkgs, &res);
    for want in [
        "ssl-cert 1.1.2",
        "openssl 3.0.15-1~deb12u1",
        "libidn2-0 2.3.3-1+b1",
    ] {
        assert!(got.iter().any(|g| g == want), "{want} missing from {got:?}");
    }
    // nginx-doc and libatm1 are not in the archive: skipped, not an error.
    assert!(
        !got.iter()
            .any(|g| g.starts_with("nginx-doc") || g.starts_with("libatm1"))
    );
}

#[test]
fn python3_with_any_qualifier_and_exact_versions() {
    let (pkgs, res) = run(&["python3-yaml"]);
    let got = names(&pkgs, &res.unwrap());
    for want in [
        "python3 3.11.2-1+b1",
        "python3-minimal 3.11.2-1+b1",
        "python3.11-minimal 3.11.2-6+deb12u6",
        "libpython3.11-minimal 3.11.2-6+deb12u6",
        "libpython3.11-stdlib 3.11.2-6+deb12u6",
        "libyaml-0-2 0.2.5-1",
        "zlib1g 1:1.2.13.dfsg-1",
    ] {
        assert!(got.iter().any(|g| g == want), "{want} missing from {got:?}");
    }
}

#[test]
fn virtual_packages() {
    // Several providers, none selected: best Priority (mawk is required).
    let pkgs = packages();
    let mut req = request(&[]);
    req.essential = true;
    let res = resolve(&Universe::new(&pkgs), &req).unwrap();
    let got = names(&pkgs, &res);
    assert!(
        got.contains(&"mawk 1.3.4.20200120-3.1".to_string()),
        "{got:?}"
    );
    assert!(
        !got.iter()
            .any(|g| g.starts_with("gawk") || g.starts_with("original-awk"))
    );
    assert_eq!(res.choices.len(), 1);
    let c = &res.choices[0];
    assert_eq!((c.relation.as_str(), c.chosen.as_str()), ("awk", "mawk"));
    assert_eq!(c.providers, ["gawk", "mawk", "original-awk"]);
    assert_eq!(c.why, ["base-files (essential)"]);
    assert!(
        c.to_string().contains("chose mawk over gawk, original-awk"),
        "{c}"
    );
    for essential in ["base-files", "dash", "perl-base"] {
        assert!(
            got.iter().any(|g| g.starts_with(&format!("{essential} "))),
            "{essential} missing"
        );
    }

    // A provider already requested wins over the priority rule.
    let (pkgs, res) = run(&["base-files", "gawk"]);
    let res = res.unwrap();
    let got = names(&pkgs, &res);
    assert!(
        got.iter().any(|g| g.starts_with("gawk ")) && !got.iter().any(|g| g.starts_with("mawk ")),
        "{got:?}"
    );
    assert!(res.choices.is_empty());

    // Requesting the virtual name picks like a dependency, recorded.
    let (pkgs, res) = run(&["awk"]);
    let res = res.unwrap();
    assert_eq!(names(&pkgs, &res)[..1], ["gcc-12-base 12.2.0-14"]);
    assert!(names(&pkgs, &res).contains(&"mawk 1.3.4.20200120-3.1".to_string()));
    assert_eq!(res.choices[0].why, Vec::<String>::new());
    assert!(res.choices[0].to_string().contains("(requested)"));

    // Equal priority: the first name; `default-mta` does not exist, so the
    // second alternative's providers are chosen from.
    let (pkgs, res) = run(&["bsd-mailx"]);
    let res = res.unwrap();
    let got = names(&pkgs, &res);
    assert!(
        got.contains(&"exim4-daemon-light 4.96-15+deb12u6".to_string()),
        "{got:?}"
    );
    assert_eq!(res.choices[0].providers, ["exim4-daemon-light", "postfix"]);
    // A provider that conflicts with the virtual name it provides is fine.
    assert!(!got.iter().any(|g| g.starts_with("postfix")));

    // A single provider is just taken.
    let (pkgs, res) = run(&["nginx-light"]);
    let res = res.unwrap();
    let echo = res
        .packages
        .iter()
        .find(|r| pkgs[r.package].name == "libnginx-mod-http-echo")
        .unwrap();
    assert!(
        echo.why_text()
            .ends_with("libnginx-mod-http-echo (>= 1:0.63-4~)")
    );
}

#[test]
fn versioned_provides() {
    let (pkgs, res) = run(&["needs-yaml-abi"]);
    let got = names(&pkgs, &res.unwrap());
    assert!(
        got.contains(&"python3-yaml 6.0-3+b2".to_string()),
        "{got:?}"
    );

    let (_, res) = run(&["needs-old-yaml-abi"]);
    let err = res.unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsatisfiable dependency: needs-old-yaml-abi → python3-yaml-abi (>= 7): python3-yaml provides 6"
    );
}

#[test]
fn pinned_versions() {
    let (pkgs, res) = run(&["libc6=2.36-9+deb12u4", "dash"]);
    let got = names(&pkgs, &res.unwrap());
    assert!(got.contains(&"libc6 2.36-9+deb12u4".to_string()), "{got:?}");

    let (pkgs, res) = run(&["libc6 (<< 2.36-9+deb12u10)"]);
    assert!(names(&pkgs, &res.unwrap()).contains(&"libc6 2.36-9+deb12u4".to_string()));

    let (_, res) = run(&["libc6=2.40-1"]);
    assert_eq!(
        res.unwrap_err().to_string(),
        "libc6=2.40-1: no such version; available: 2.36-9+deb12u10, 2.36-9+deb12u4"
    );

    // A pin the rest of the closure cannot live with: the chain says why.
    let (_, res) = run(&["libc6=2.36-9+deb12u4", "nginx-geo"]);
    let err = res.unwrap_err().to_string();
    assert_eq!(
        err,
        "unsatisfiable dependency: nginx-geo → libnginx-mod-http-geoip (= 1.22.1-9) → libc6 (>= 2.99): \
         libc6 2.36-9+deb12u4 is already selected (by libc6=2.36-9+deb12u4)"
    );
}

#[test]
fn unsatisfiable_chain() {
    let (_, res) = run(&["nginx-geo"]);
    assert_eq!(
        res.unwrap_err().to_string(),
        "unsatisfiable dependency: nginx-geo → libnginx-mod-http-geoip (= 1.22.1-9) → libc6 (>= 2.99): available 2.36-9+deb12u10, 2.36-9+deb12u4"
    );
    let (_, res) = run(&["wants-foreign"]);
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains("wants-foreign → libc6:i386") && err.contains("not the target amd64"),
        "{err}"
    );
}

#[test]
fn unknown_packages_suggest_close_names() {
    let cases: &[(&str, &[&str])] = &[
        ("ngnix", &["nginx"]),
        ("nginx-lite", &["nginx-light"]),
        ("Nginx-Light", &["nginx-light"]),
        ("python", &["python3", "python3.11", "python3-yaml"]),
        ("zzzz", &[]),
    ];
    for (name, want) in cases {
        let (_, res) = run(&[name]);
        match res {
            Err(ResolveError::UnknownPackage {
                suggestions,
                mentioned_by,
                ..
            }) => {
                assert_eq!(
                    &suggestions[..want.len().min(suggestions.len())],
                    *want,
                    "{name}: {suggestions:?}"
                );
                assert!(mentioned_by.is_empty());
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let pkgs = packages();
    let u = Universe::new(&pkgs);
    let err = resolve(&u, &request(&["ngnix"])).unwrap_err().to_string();
    assert!(
        err.starts_with("package \"ngnix\" is not in these repositories; did you mean nginx"),
        "{err}"
    );
    assert_eq!(
        suggest("Nginx-Light", ["nginx-light", "nginx"].into_iter()),
        ["nginx-light", "nginx"]
    );

    // A virtual package nothing provides, named by others.
    let err = resolve(&u, &request(&["default-mta"])).unwrap_err();
    assert!(
        matches!(&err, ResolveError::UnknownPackage { mentioned_by, .. } if mentioned_by == &["bsd-mailx"])
    );
    assert!(
        err.to_string().contains(
            "virtual package that no package in these repositories provides (named by bsd-mailx)"
        ),
        "{err}"
    );
}

#[test]
fn conflicts_and_breaks() {
    let (_, res) = run(&["nginx", "nginx-extras"]);
    let err = res.unwrap_err().to_string();
    assert!(
        err == "nginx 1.22.1-9+deb12u9 and nginx-extras 1.22.1-9+deb12u9 cannot be installed together \
                (nginx has Conflicts: nginx-extras); nginx comes from nginx, nginx-extras from nginx-extras",
        "{err}"
    );
    // Two providers of a virtual package that both conflict with it.
    let (_, res) = run(&["postfix", "needs-mta", "exim4-daemon-light"]);
    let err = res.unwrap_err().to_string();
    assert!(err.contains("exim4-daemon-light 4.96-15+deb12u6 and postfix 3.7.11-0+deb12u1 cannot be installed together"), "{err}");
    // debconf Conflicts: cdebconf (<< 0.96): 0.270 is later, fine.
    let (_, res) = run(&["debconf", "cdebconf"]);
    res.unwrap();
}

#[test]
fn requirements() {
    let ok = [
        ("nginx", "nginx"),
        ("nginx=1.22.1-9", "nginx=1.22.1-9"),
        ("nginx (>= 1.2)", "nginx (>= 1.2)"),
        ("nginx>=1.2", "nginx (>= 1.2)"),
        (" libc6 (<< 2.37) ", "libc6 (<< 2.37)"),
        ("g++-12", "g++-12"),
    ];
    for (text, shown) in ok {
        assert_eq!(Requirement::parse(text).unwrap().to_string(), shown);
        // The definition's grammar accepts it and spells it the same way
        // (regression, issue 17: it refused every operator but `=`).
        let (name, c) = crate::grammar::deb_request(text).unwrap();
        assert_eq!(crate::grammar::deb_request_text(name, c), shown);
    }
    for bad in [
        "",
        "nginx=",
        "nginx (>= 1.2",
        "nginx ~ 1",
        "nginx 1.2",
        "-x",
        "a b",
    ] {
        let e = Requirement::parse(bad).unwrap_err();
        assert!(
            e.to_string().contains("not a package requirement"),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn deterministic_whatever_the_order_of_the_universe() {
    let pkgs = packages();
    let mut req = request(&["nginx-light", "python3-yaml", "bsd-mailx"]);
    req.essential = true;
    let want = resolve(&Universe::new(&pkgs), &req).unwrap();
    let want_names = names(&pkgs, &want);
    let mut reversed = pkgs.clone();
    reversed.reverse();
    let got = resolve(&Universe::new(&reversed), &req).unwrap();
    assert_eq!(names(&reversed, &got), want_names);
    assert_eq!(got.choices, want.choices);
    // Same version in two repositories: the first repository's is taken.
    let mut two = pkgs.clone();
    two.extend(pkgs.iter().cloned().map(|mut p| {
        p.repo = 1;
        p
    }));
    let got = resolve(&Universe::new(&two), &req).unwrap();
    assert!(got.packages.iter().all(|r| two[r.package].repo == 0));
    assert_eq!(names(&two, &got), want_names);
}

/// Every `*_Packages` index apt left on this machine (lz4-compressed ones
/// through the `lz4` tool), or `DROVER_TEST_PACKAGES`: the whole of bookworm
/// main, parsed and resolved against the budget. Skipped when there
/// is none.
#[test]
fn real_bookworm_index_when_present() {
    let Some(text) = real_index() else {
        eprintln!("no Packages index on this machine; skipped");
        return;
    };
    let start = std::time::Instant::now();
    let pkgs = parse_packages(&text, 0, "amd64").unwrap();
    let parsed = start.elapsed();
    let universe = Universe::new(&pkgs);
    let req = request(&["nginx-light", "redis-server", "python3"]);
    let res = resolve(&universe, &req).unwrap();
    let total = start.elapsed();
    let got: Vec<&str> = res
        .packages
        .iter()
        .map(|r| pkgs[r.package].name.as_str())
        .collect();
    eprintln!(
        "{} packages parsed in {parsed:?}; {} resolved, {total:?} in all; choices: {:?}",
        pkgs.len(),
        got.len(),
        res.choices
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    for want in [
        "libc6",
        "libssl3",
        "libpython3.11-minimal",
        "python3.11-minimal",
        "nginx",
        "nginx-common",
        "redis-tools",
        "libjemalloc2",
    ] {
        assert!(got.contains(&want), "{want} missing from {got:?}");
    }
    // Sorted by name, one version each.
    assert!(got.windows(2).all(|w| w[0] < w[1]));
}

fn real_index() -> Option<String> {
    if let Some(path) = std::env::var_os("DROVER_TEST_PACKAGES") {
        return std::fs::read_to_string(path).ok();
    }
    let dir = std::fs::read_dir("/var/lib/apt/lists").ok()?;
    let mut files: Vec<std::path::PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.contains("_dists_bookworm_main_binary-amd64_Packages")
        })
        .collect();
    files.sort();
    let file = files.first()?;
    if file.extension().is_some_and(|e| e == "lz4") {
        let out = std::process::Command::new("lz4")
            .arg("-dc")
            .arg(file)
            .output()
            .ok()?;
        return out
            .status
            .success()
            .then(|| String::from_utf8(out.stdout).ok())
            .flatten();
    }
    std::fs::read_to_string(file).ok()
}
