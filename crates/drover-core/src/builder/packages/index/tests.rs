use super::*;

/// Two records as bookworm's main/binary-amd64/Packages has them.
const REAL: &str = "\
Package: nginx-light
Source: nginx
Version: 1.22.1-9+deb12u9
Installed-Size: 92
Maintainer: Debian Nginx Maintainers <pkg-nginx-maintainers@alioth-lists.debian.net>
Architecture: all
Depends: libnginx-mod-http-echo (>= 1:0.63-4~), nginx (>= 1.22.1-9+deb12u9), nginx (<< 1.22.1-9+deb12u9.1~)
Description: nginx web/proxy server (basic version)
Homepage: https://nginx.org
Description-md5: 3988a4d9cebce50812e3e3cb815d6200
Tag: implemented-in::c, interface::daemon, network::server, protocol::http,
 role::program, web::server
Section: httpd
Priority: optional
Filename: pool/main/n/nginx/nginx-light_1.22.1-9+deb12u9_all.deb
Size: 81060
MD5sum: d441b25fe3f24159b0c4156ba8dec24a
SHA256: 0ce1d5e09be853c9d02ee820d152078111e2a99af810aca891e75a9215b3b926

Package: libcrypt1
Source: libxcrypt (1:4.4.33-2)
Version: 1:4.4.33-2
Installed-Size: 233
Maintainer: Marco d'Itri <md@linux.it>
Architecture: amd64
Replaces: libc6 (<< 2.29-4)
Depends: libc6 (>= 2.36)
Conflicts: libpam0g (<< 1.4.0-10)
Breaks: libc6 (<< 2.29-4)
Description: libcrypt shared library
Multi-Arch: same
Homepage: https://github.com/besser82/libxcrypt
Description-md5: 8f2b3dbd6e4d8e1a5e9e0bd0c8e1e5d1
Protected: yes
Section: libs
Priority: required
Filename: pool/main/libx/libxcrypt/libcrypt1_4.4.33-2_amd64.deb
Size: 91564
MD5sum: 35e7c5e1e1b1c0e8ba4e41d0d7b1b6a2
SHA256: 5b6e4ebd9a1e4b1a3d9b6c0e6e2b6fa4a0e6b1d4c5a5d2b3a1c6e7f8091a2b3c

Package: libc6
Source: glibc
Version: 2.36-9+deb12u10
Architecture: i386
Filename: pool/main/g/glibc/libc6_2.36-9+deb12u10_i386.deb
Size: 1
SHA256: 0000000000000000000000000000000000000000000000000000000000000000
";

#[test]
fn parses_real_records_and_keeps_the_architecture() {
    let pkgs = parse_packages(REAL, 3, "amd64").unwrap();
    assert_eq!(pkgs.len(), 2, "the i386 record is dropped");
    let light = &pkgs[0];
    assert_eq!(light.name, "nginx-light");
    assert_eq!(light.version.as_str(), "1.22.1-9+deb12u9");
    assert_eq!(light.architecture, "all");
    assert_eq!(
        (light.source.as_str(), light.source_version.as_str()),
        ("nginx", "1.22.1-9+deb12u9")
    );
    let deps: Vec<String> = light
        .depends
        .iter()
        .map(|a| relation::alternatives_text(a))
        .collect();
    assert_eq!(
        deps,
        [
            "libnginx-mod-http-echo (>= 1:0.63-4~)",
            "nginx (>= 1.22.1-9+deb12u9)",
            "nginx (<< 1.22.1-9+deb12u9.1~)"
        ]
    );
    assert_eq!(light.priority, Priority::Optional);
    assert_eq!(light.multi_arch, MultiArch::No);
    assert!(!light.essential);
    assert_eq!(
        light.filename,
        "pool/main/n/nginx/nginx-light_1.22.1-9+deb12u9_all.deb"
    );
    assert_eq!(light.size, 81060);
    assert_eq!(
        light.sha256.hex(),
        "0ce1d5e09be853c9d02ee820d152078111e2a99af810aca891e75a9215b3b926"
    );
    assert_eq!(light.repo, 3);

    let crypt = &pkgs[1];
    assert_eq!(
        (crypt.source.as_str(), crypt.source_version.as_str()),
        ("libxcrypt", "1:4.4.33-2")
    );
    assert_eq!(crypt.version.epoch(), 1);
    assert_eq!(crypt.conflicts[0].to_string(), "libpam0g (<< 1.4.0-10)");
    assert_eq!(crypt.breaks[0].to_string(), "libc6 (<< 2.29-4)");
    assert_eq!(crypt.priority, Priority::Required);
    assert_eq!(crypt.multi_arch, MultiArch::Same);

    let i386 = parse_packages(REAL, 0, "i386").unwrap();
    let names: Vec<&str> = i386.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["nginx-light", "libc6"]);
}

#[test]
fn fields_in_any_case_and_essential() {
    let text = "package: dash\nversion: 0.5.12-2\narchitecture: amd64\nESSENTIAL: yes\npriority: required\n\
                pre-depends: libc6 (>= 2.34)\nprovides: sh\nfilename: pool/main/d/dash/dash_0.5.12-2_amd64.deb\n\
                size: 10\nsha256: 0CE1D5E09BE853C9D02EE820D152078111E2A99AF810ACA891E75A9215B3B926\n";
    let p = &parse_packages(text, 0, "amd64").unwrap()[0];
    assert!(p.essential);
    assert_eq!(p.priority, Priority::Required);
    assert_eq!(p.pre_depends.len(), 1);
    assert_eq!(p.provides[0].name, "sh");
    assert_eq!(
        p.sha256.hex(),
        "0ce1d5e09be853c9d02ee820d152078111e2a99af810aca891e75a9215b3b926"
    );
}

#[test]
fn bad_records_name_the_package_and_line() {
    let base = "Package: a\nVersion: 1\nArchitecture: amd64\nFilename: pool/a.deb\nSize: 1\nSHA256: 0ce1d5e09be853c9d02ee820d152078111e2a99af810aca891e75a9215b3b926\n";
    let cases = [
        (base.replace("Size: 1", "Size: x"), "Size"),
        (base.replace("SHA256: 0ce1", "SHA256: zz"), "SHA256"),
        (base.replace("Version: 1", "Version: 1 2"), "Debian version"),
        (
            base.replace("Filename: pool/a.deb", "Filename: ../a.deb"),
            "Filename",
        ),
        (
            base.replace("Filename: pool/a.deb", "Filename: /a.deb"),
            "Filename",
        ),
        (base.replace("Filename: pool/a.deb\n", ""), "no Filename"),
        (format!("{base}Depends: b (>= )\n"), "Depends"),
        (format!("{base}Multi-Arch: maybe\n"), "Multi-Arch"),
        (format!("{base}Source: a (1\n"), "Source"),
    ];
    for (text, want) in cases {
        let text = format!(
            "Package: ok\nVersion: 1\nArchitecture: all\nFilename: p/ok.deb\nSize: 1\nSHA256: {}\n\n{text}",
            "0".repeat(64)
        );
        let err = parse_packages(&text, 0, "amd64").unwrap_err().to_string();
        assert!(
            err.contains("line 8") && err.contains("\"a\"") && err.contains(want),
            "{want}: {err}"
        );
    }
    let err = parse_packages("Package: a\nbroken\n", 0, "amd64")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2"), "{err}");
}

const RELEASE: &str = "\
Origin: Debian
Label: Debian
Suite: stable
Version: 12.8
Codename: bookworm
Changelogs: https://metadata.ftp-master.debian.org/changelogs/@CHANGEPATH@_changelog
Date: Sat, 09 Nov 2024 10:06:44 UTC
Acquire-By-Hash: yes
No-Support-for-Architecture-all: Packages
Architectures: all amd64 arm64 armel armhf i386 mips64el mipsel ppc64el s390x
Components: main contrib non-free-firmware non-free
Description: Debian 12.8 Released 09 November 2024
MD5Sum:
 0ed6d4c8891eb86358b94bb35d9e4da4  1484322 contrib/Contents-all
SHA256:
 d6c9c82f4e61b4662f9ba16b9ebb379c57b4943f8b7813091d1f637325ddfb79  1484322 contrib/Contents-all
 3a1b5ea0f0b4a3c6e7d2f1c2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2 8786414 main/binary-amd64/Packages.xz
 0ce1d5e09be853c9d02ee820d152078111e2a99af810aca891e75a9215b3b926 50060337 main/binary-amd64/Packages
";

#[test]
fn release_files() {
    let r = parse_release(RELEASE).unwrap();
    assert_eq!(
        (r.origin.as_str(), r.suite.as_str(), r.codename.as_str()),
        ("Debian", "stable", "bookworm")
    );
    assert_eq!(r.date, "Sat, 09 Nov 2024 10:06:44 UTC");
    assert_eq!(release_time(&r.date), Some(1_731_146_804));
    assert_eq!(r.valid_until, None);
    assert!(r.acquire_by_hash);
    assert_eq!(r.architectures.len(), 10);
    assert_eq!(
        r.components,
        ["main", "contrib", "non-free-firmware", "non-free"]
    );
    assert_eq!(r.sha256.len(), 3);
    let (size, digest) = r.file("main/binary-amd64/Packages").unwrap();
    assert_eq!(size, 50_060_337);
    assert_eq!(
        digest.hex(),
        "0ce1d5e09be853c9d02ee820d152078111e2a99af810aca891e75a9215b3b926"
    );
    assert_eq!(r.file("main/binary-i386/Packages"), None);

    let security = RELEASE.replace(
        "Acquire-By-Hash: yes\n",
        "Valid-Until: Sat, 16 Nov 2024 10:06:44 UTC\n",
    );
    let r = parse_release(&security).unwrap();
    assert_eq!(
        r.valid_until.as_deref(),
        Some("Sat, 16 Nov 2024 10:06:44 UTC")
    );
    assert!(!r.acquire_by_hash);
}

#[test]
fn bad_release_files() {
    for (text, want) in [
        (RELEASE.replace("SHA256:", "SHA1:"), "no SHA256"),
        (RELEASE.replace(" 8786414 ", " big "), "size"),
        (
            RELEASE.replace("Sat, 09 Nov 2024 10:06:44 UTC", "yesterday"),
            "Date",
        ),
        (format!("{RELEASE}\nOrigin: again\n"), "one paragraph"),
        (
            RELEASE.replace(
                " 1484322 contrib/Contents-all\nSHA256",
                " 1484322 contrib/Contents-all\nSHA256:\n x\nS",
            ),
            "SHA256",
        ),
    ] {
        let err = parse_release(&text).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn release_dates() {
    assert_eq!(release_time("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
    assert_eq!(release_time("01 Jan 1970 00:01:00 GMT"), Some(60));
    assert_eq!(
        release_time("Sat, 10 Aug 2024 09:14:24 +0000"),
        Some(1_723_281_264)
    );
    assert_eq!(release_time("Sat, 10 Aug 2024 09:14:24 +0200"), None);
    assert_eq!(release_time("Sat, 31 Feb 2024 09:14:24 UTC"), None);
    assert_eq!(release_time(""), None);
}

#[test]
fn large_indexes_parse_in_slices_and_errors_keep_their_line() {
    // Over 1 MiB, so the parallel slices are used; the order is kept.
    let record = |i: usize, size: &str| {
        format!(
            "Package: p{i}\nVersion: 1.{i}\nArchitecture: amd64\nDescription: filler filler filler filler\n \
             filler filler filler filler filler filler filler filler filler filler filler filler\n\
             Filename: pool/main/p/p{i}.deb\nSize: {size}\nSHA256: {:064x}\n\n",
            i
        )
    };
    let n = 12_000;
    let text: String = (0..n).map(|i| record(i, "7")).collect();
    assert!(text.len() > 2 << 20);
    let pkgs = parse_packages(&text, 0, "amd64").unwrap();
    assert_eq!(pkgs.len(), n);
    assert!(
        pkgs.iter()
            .enumerate()
            .all(|(i, p)| p.name == format!("p{i}"))
    );

    let bad = 11_000;
    let text: String = (0..n)
        .map(|i| record(i, if i == bad { "x" } else { "7" }))
        .collect();
    let err = parse_packages(&text, 0, "amd64").unwrap_err().to_string();
    // Each record is 9 lines; the bad one starts on line 9 * bad + 1.
    assert!(
        err.contains(&format!("line {}: package \"p{bad}\": Size", 9 * bad + 1)),
        "{err}"
    );
}
