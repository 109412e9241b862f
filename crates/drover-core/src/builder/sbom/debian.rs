//! What an SBOM learns of Debian packages beyond their status records:
//! the distribution (`/usr/lib/os-release`, or what the build says) for
//! the purl's `distro` qualifier, and each package's license from a
//! machine-readable `/usr/share/doc/<pkg>/copyright` (DEP-5), as an SPDX
//! license expression. Pure text in, values out.

/// `debian-12` from an os-release file's `ID` and `VERSION_ID` (major
/// part); `None` when either is missing.
pub fn distro_of_os_release(text: &str) -> Option<String> {
    let get = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches(['"', '\'']).to_string())
        })
    };
    let id = get("ID").filter(|s| !s.is_empty())?;
    let version = get("VERSION_ID").filter(|s| !s.is_empty())?;
    let major = version.split('.').next().unwrap_or(&version).to_string();
    Some(format!("{id}-{major}"))
}

/// The license a DEP-5 copyright file declares for the package as a whole
/// (its `Files: *` paragraph, else its header's `License`), as an SPDX
/// expression; `None` for a copyright file that is not machine-readable.
pub fn license_of_copyright(text: &str) -> Option<String> {
    let mut paragraphs = text.split("\n\n").map(|p| p.trim_matches('\n'));
    let header = paragraphs.next()?;
    let format = field(header, "Format")?;
    if !format.contains("copyright-format") && !format.contains("dep5") {
        return None;
    }
    let whole = paragraphs
        .find(|p| field(p, "Files").is_some_and(|f| f.split_whitespace().any(|g| g == "*")))
        .and_then(|p| field(p, "License"))
        .or_else(|| field(header, "License"))?;
    let first_line = whole.lines().next()?.trim();
    spdx_expression(first_line)
}

/// The first line of `key`'s value in one paragraph.
fn field<'a>(paragraph: &'a str, key: &str) -> Option<&'a str> {
    paragraph.lines().find_map(|l| {
        if l.starts_with([' ', '\t']) {
            return None;
        }
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then_some(v.trim())
            .filter(|v| !v.is_empty())
    })
}

/// A Debian license short name expression (`GPL-2+ or Artistic`,
/// `BSD-3-clause and Expat`) as an SPDX one (`GPL-2.0-or-later OR
/// Artistic-1.0-Perl`). Names without an SPDX id become `LicenseRef-…`.
pub fn spdx_expression(debian: &str) -> Option<String> {
    let mut out = Vec::new();
    for word in debian.split_whitespace() {
        match word.to_ascii_lowercase().as_str() {
            "or" => out.push("OR".to_string()),
            "and" => out.push("AND".to_string()),
            "with" => out.push("WITH".to_string()),
            _ => {
                // An exception after WITH is kept as written, cleaned.
                let after_with = out.last().is_some_and(|w| w == "WITH");
                let w = word.trim_matches([',', '(', ')']);
                if w.is_empty() {
                    continue;
                }
                out.push(if after_with { clean(w) } else { spdx_id(w) });
            }
        }
    }
    // A dangling operator makes no expression.
    while out
        .last()
        .is_some_and(|w| matches!(w.as_str(), "OR" | "AND" | "WITH"))
    {
        out.pop();
    }
    while out
        .first()
        .is_some_and(|w| matches!(w.as_str(), "OR" | "AND" | "WITH"))
    {
        out.remove(0);
    }
    if out.is_empty() {
        return None;
    }
    // An exception must come from SPDX's list, which Debian's names
    // seldom match: the whole expression becomes one reference instead.
    if out.iter().any(|w| w == "WITH") {
        return Some(format!("LicenseRef-{}", clean(debian.trim())));
    }
    Some(out.join(" "))
}

/// The `LicenseRef-…` ids an expression uses (SPDX wants each declared).
pub fn license_refs(expression: &str) -> impl Iterator<Item = &str> {
    expression
        .split_whitespace()
        .filter(|w| w.starts_with("LicenseRef-"))
}

fn spdx_id(debian: &str) -> String {
    let plus = debian.ends_with('+');
    let base = debian.trim_end_matches('+');
    let lower = base.to_ascii_lowercase();
    let gnu = |name: &str, version: &str| {
        let v = if version.contains('.') {
            version.to_string()
        } else {
            format!("{version}.0")
        };
        format!("{name}-{v}-{}", if plus { "or-later" } else { "only" })
    };
    for name in ["GPL", "LGPL", "AGPL", "GFDL"] {
        if let Some(v) = lower.strip_prefix(&format!("{}-", name.to_ascii_lowercase()))
            && !v.is_empty()
            && v.chars().all(|c| c.is_ascii_digit() || c == '.')
        {
            return gnu(name, v);
        }
    }
    let known = match lower.as_str() {
        "expat" | "mit" => "MIT",
        "bsd-2-clause" => "BSD-2-Clause",
        "bsd-3-clause" => "BSD-3-Clause",
        "bsd-4-clause" => "BSD-4-Clause",
        "isc" => "ISC",
        "zlib" => "Zlib",
        "apache-2.0" | "apache-2" => "Apache-2.0",
        "mpl-1.1" => "MPL-1.1",
        "mpl-2.0" => "MPL-2.0",
        "artistic" | "artistic-1.0" => "Artistic-1.0-Perl",
        "artistic-2.0" => "Artistic-2.0",
        "psf-2" | "psf-2.0" | "python" => "PSF-2.0",
        "openssl" => "OpenSSL",
        "curl" => "curl",
        "unicode-dfs-2016" => "Unicode-DFS-2016",
        "cc0-1.0" | "cc0" => "CC0-1.0",
        "x11" => "X11",
        "bsl-1.0" => "BSL-1.0",
        "ftl" => "FTL",
        "sleepycat" => "Sleepycat",
        "lgpl" => "LGPL-2.0-or-later",
        "gpl" => "GPL-1.0-or-later",
        "libpng" => "Libpng",
        "openldap-2.8" => "OLDAP-2.8",
        _ => "",
    };
    if !known.is_empty() {
        // SPDX's `+` ("or later") on an id from the list.
        return if plus {
            format!("{known}+")
        } else {
            known.to_string()
        };
    }
    format!("LicenseRef-{}", clean(debian))
}

/// Letters, digits, `.` and `-` only (what an SPDX id may hold).
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_names_the_distribution() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";
        assert_eq!(distro_of_os_release(text).as_deref(), Some("debian-12"));
        assert_eq!(
            distro_of_os_release("ID=alpine\nVERSION_ID=3.20.1\n").as_deref(),
            Some("alpine-3")
        );
        assert_eq!(distro_of_os_release("ID=debian\n"), None);
    }

    #[test]
    fn debian_license_names_become_spdx_expressions() {
        for (debian, spdx) in [
            ("GPL-2+", "GPL-2.0-or-later"),
            ("GPL-3", "GPL-3.0-only"),
            ("LGPL-2.1+", "LGPL-2.1-or-later"),
            ("Expat", "MIT"),
            ("BSD-2-clause", "BSD-2-Clause"),
            (
                "GPL-2+ or Artistic",
                "GPL-2.0-or-later OR Artistic-1.0-Perl",
            ),
            ("public-domain", "LicenseRef-public-domain"),
            (
                "GPL-3+ with Autoconf-exception",
                "LicenseRef-GPL-3--with-Autoconf-exception",
            ),
            ("MPL-1.1+", "MPL-1.1+"),
        ] {
            assert_eq!(spdx_expression(debian).as_deref(), Some(spdx), "{debian}");
        }
        assert_eq!(spdx_expression("or"), None);
    }

    #[test]
    fn only_machine_readable_copyright_files_declare_a_license() {
        let dep5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
                    Upstream-Name: nginx\n\n\
                    Files: src/contrib/*\nLicense: GPL-2+\n\n\
                    Files: *\nCopyright: 2002-2021 Igor Sysoev\nLicense: BSD-2-clause\n\n\
                    License: BSD-2-clause\n Redistribution and use ...\n";
        assert_eq!(license_of_copyright(dep5).as_deref(), Some("BSD-2-Clause"));
        let header_only = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nLicense: Zlib\n";
        assert_eq!(license_of_copyright(header_only).as_deref(), Some("Zlib"));
        assert_eq!(
            license_of_copyright("This is the Debian package of foo.\n\nCopyright: GPL\n"),
            None
        );
    }
}
