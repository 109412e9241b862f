//! The dpkg database of a packages layer, written instead of running dpkg:
//! what `dpkg-query --admindir=<root>/var/lib/dpkg`, `dpkg -L`, `dpkg -V`
//! and vulnerability scanners read to learn what an image holds.
//!
//! * `var/lib/dpkg/status`: every package installed by this image's
//!   packages layers so far, one paragraph each (the package's own control
//!   record with `Status: install ok installed` after `Package`), sorted by
//!   name, so a later packages layer rewrites it with the earlier ones in;
//! * `var/lib/dpkg/status.d/<pkg>` (and `<pkg>.md5sums`): one record per
//!   package, the layout distroless images use and scanners also read;
//! * `var/lib/dpkg/info/<pkg>.list`, `.md5sums`, `.conffiles`: the file
//!   lists dpkg keeps, and the maintainer scripts (`<pkg>.postinst`, ...,
//!   with `<pkg>.triggers` and `<pkg>.templates`)
//!   (`<pkg>:<arch>` for `Multi-Arch: same` packages).
//!
//! Pure: records in, entries out; the same records give the same bytes.

use crate::builder::scan::Entry;

/// One installed package, as the database needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub architecture: String,
    /// The `control` file of the .deb (one paragraph).
    pub control: String,
    /// Its `md5sums` member, if it has one.
    pub md5sums: Option<String>,
    /// Its `conffiles` member, if it has one.
    pub conffiles: Option<String>,
    /// Its maintainer scripts (`postinst`, ..., `config`), `triggers` and
    /// debconf `templates`, kept where dpkg keeps them.
    pub scripts: Vec<(String, Vec<u8>)>,
    /// Every path it installs, absolute (`/usr/sbin/nginx`), in archive order.
    pub files: Vec<String>,
}

impl Installed {
    /// The name dpkg files its info under: `pkg`, or `pkg:arch` for
    /// `Multi-Arch: same` packages.
    pub fn info_name(&self) -> String {
        let same = self.control.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case("Multi-Arch") && v.trim().eq_ignore_ascii_case("same")
            })
        });
        if same {
            format!("{}:{}", self.name, self.architecture)
        } else {
            self.name.clone()
        }
    }

    /// The status paragraph: the control record with `Status` after
    /// `Package`, without a trailing blank line.
    pub fn status_record(&self) -> String {
        let mut out = String::with_capacity(self.control.len() + 32);
        let mut placed = false;
        for line in self.control.trim_end().lines() {
            if line.is_empty() {
                continue;
            }
            if line
                .split_once(':')
                .is_some_and(|(k, _)| k.eq_ignore_ascii_case("Status"))
            {
                continue;
            }
            out.push_str(line);
            out.push('\n');
            if !placed
                && line
                    .split_once(':')
                    .is_some_and(|(k, _)| k.eq_ignore_ascii_case("Package"))
            {
                out.push_str("Status: install ok installed\n");
                placed = true;
            }
        }
        if !placed {
            out.insert_str(0, "Status: install ok installed\n");
        }
        out
    }
}

const DPKG: &str = "var/lib/dpkg";

/// The database entries for `layer` (this layer's packages) given
/// `earlier` (packages of the image's earlier packages layers), all owned
/// by root, files 0644 and directories 0755.
pub fn database(earlier: &[Installed], layer: &[Installed]) -> Vec<Entry> {
    let mut all: Vec<&Installed> = earlier.iter().chain(layer).collect();
    all.sort_by_key(|p| p.info_name());
    all.dedup_by(|a, b| a.info_name() == b.info_name());
    let status: String = all
        .iter()
        .map(|p| p.status_record())
        .collect::<Vec<_>>()
        .join("\n");

    let mut entries = Vec::new();
    for dir in [
        "var",
        "var/lib",
        DPKG,
        &format!("{DPKG}/info"),
        &format!("{DPKG}/status.d"),
    ] {
        entries.push(dir_entry(dir));
    }
    entries.push(file_entry(&format!("{DPKG}/status"), status.into_bytes()));
    for p in layer {
        let info = p.info_name();
        entries.push(file_entry(
            &format!("{DPKG}/status.d/{}", p.name),
            p.status_record().into_bytes(),
        ));
        let list: String = p.files.iter().map(|f| format!("{f}\n")).collect();
        entries.push(file_entry(
            &format!("{DPKG}/info/{info}.list"),
            list.into_bytes(),
        ));
        if let Some(m) = &p.md5sums {
            entries.push(file_entry(
                &format!("{DPKG}/status.d/{}.md5sums", p.name),
                m.clone().into_bytes(),
            ));
            entries.push(file_entry(
                &format!("{DPKG}/info/{info}.md5sums"),
                m.clone().into_bytes(),
            ));
        }
        if let Some(c) = &p.conffiles {
            entries.push(file_entry(
                &format!("{DPKG}/info/{info}.conffiles"),
                c.clone().into_bytes(),
            ));
        }
        for (name, bytes) in &p.scripts {
            let mut e = file_entry(&format!("{DPKG}/info/{info}.{name}"), bytes.clone());
            if !matches!(name.as_str(), "triggers" | "templates") {
                e.mode = 0o755;
            }
            entries.push(e);
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries.dedup_by(|later, earlier| later.path == earlier.path);
    entries
}

fn dir_entry(path: &str) -> Entry {
    Entry::dir(path, 0o755, (0, 0))
}

fn file_entry(path: &str, bytes: Vec<u8>) -> Entry {
    Entry::inline(path, bytes, 0o644, (0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::scan::Source;

    fn pkg(name: &str, extra: &str) -> Installed {
        Installed {
            name: name.into(),
            architecture: "amd64".into(),
            control: format!(
                "Package: {name}\nVersion: 1.0-1\nArchitecture: amd64\n{extra}Description: a test\n two lines\n"
            ),
            md5sums: Some(format!(
                "d41d8cd98f00b204e9800998ecf8427e  usr/bin/{name}\n"
            )),
            conffiles: None,
            scripts: vec![("postinst".into(), b"#!/bin/sh\nexit 0\n".to_vec())],
            files: vec!["/usr".into(), "/usr/bin".into(), format!("/usr/bin/{name}")],
        }
    }

    fn text(entries: &[Entry], path: &str) -> String {
        let e = entries.iter().find(|e| e.path == path).expect(path);
        match &e.source {
            Some(Source::Inline(b)) => String::from_utf8(b.to_vec()).unwrap(),
            _ => panic!("{path} has no inline content"),
        }
    }

    #[test]
    fn status_holds_every_package_so_far_and_parses_back() {
        let earlier = [pkg("libc6", "Multi-Arch: same\n")];
        let layer = [pkg("zlib1g", ""), pkg("nginx-light", "")];
        let entries = database(&earlier, &layer);
        let status = text(&entries, "var/lib/dpkg/status");
        let parsed = crate::builder::sbom::parse_dpkg(&status);
        let names: Vec<&str> = parsed.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["libc6", "nginx-light", "zlib1g"]);
        assert!(status.starts_with("Package: libc6\nStatus: install ok installed\n"));
        assert!(status.contains(" two lines\n"), "continuation lines kept");
        // Only this layer's packages get their own records and lists.
        assert!(
            entries
                .iter()
                .any(|e| e.path == "var/lib/dpkg/status.d/nginx-light")
        );
        assert!(
            !entries
                .iter()
                .any(|e| e.path == "var/lib/dpkg/status.d/libc6")
        );
        assert_eq!(
            text(&entries, "var/lib/dpkg/info/zlib1g.list"),
            "/usr\n/usr/bin\n/usr/bin/zlib1g\n"
        );
        assert!(entries.windows(2).all(|w| w[0].path < w[1].path));
    }

    #[test]
    fn multi_arch_same_packages_are_filed_under_name_and_arch() {
        let entries = database(&[], &[pkg("libc6", "Multi-Arch: same\n")]);
        assert!(
            entries
                .iter()
                .any(|e| e.path == "var/lib/dpkg/info/libc6:amd64.list")
        );
        assert!(
            entries
                .iter()
                .any(|e| e.path == "var/lib/dpkg/status.d/libc6")
        );
    }

    #[test]
    fn the_same_records_give_the_same_bytes() {
        let a = database(&[], &[pkg("b", ""), pkg("a", "")]);
        let b = database(&[], &[pkg("a", ""), pkg("b", "")]);
        let digests = |e: &[Entry]| {
            e.iter()
                .map(|e| (e.path.clone(), e.sha256))
                .collect::<Vec<_>>()
        };
        assert_eq!(digests(&a), digests(&b));
    }
}
