//! Choosing one image from an image index (a multi-platform image), as
//! docker and skopeo do: the host's platform unless `--platform` names
//! another.

use serde::Deserialize;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// `os/arch[/variant]`, as OCI image indexes spell it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Parse `os/arch[/variant]` (e.g. `linux/arm64`, `linux/arm/v7`).
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let word = |w: &str| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| word(p)) {
            return Err(Error::Usage(format!(
                "{s:?} is not a platform (expected os/arch[/variant] in lowercase, e.g. linux/amd64 or linux/arm/v7)"
            )));
        }
        Ok(Platform {
            os: parts[0].into(),
            architecture: parts[1].into(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// The platform this process runs on, in OCI's (Go's) names.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.into(),
            architecture: architecture.into(),
            variant: match architecture {
                "arm64" => Some("v8".into()),
                "arm" => Some("v7".into()),
                _ => None,
            },
        }
    }

    /// Whether an index entry for `other` runs here. Variants are compared
    /// as containerd normalizes them: arm64 without one is v8, arm without
    /// one is v7; for other architectures a variant asked for must match.
    fn matches(&self, other: &Platform) -> bool {
        let variant = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", None | Some("v8")) => Some("v8".to_string()),
            ("arm", None) => Some("v7".to_string()),
            (_, v) => v.map(str::to_string),
        };
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() && self.architecture != "arm"
                || variant(self) == variant(other))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image index, as far as choosing from it goes.
#[derive(Debug, Deserialize)]
pub(super) struct Index {
    #[serde(default)]
    pub manifests: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Entry {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<EntryPlatform>,
}

#[derive(Debug, Deserialize)]
pub(super) struct EntryPlatform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl EntryPlatform {
    fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone().filter(|v| !v.is_empty()),
        }
    }
}

/// The entry of `index` for `want`: the first image manifest whose platform
/// matches, in the index's order. Entries without a platform (attestations,
/// artifacts) are never chosen. `what` names the index for the error, which
/// lists what it offers.
pub(super) fn choose<'i>(index: &'i Index, want: &Platform, what: &str) -> Result<&'i Entry> {
    let images = || {
        index
            .manifests
            .iter()
            .filter(|e| super::super::oci::is_manifest(&e.media_type))
            .filter_map(|e| Some((e, e.platform.as_ref()?.platform())))
            .filter(|(_, p)| p.os != "unknown")
    };
    if let Some((e, _)) = images().find(|(_, p)| want.matches(p)) {
        return Ok(e);
    }
    let offered: Vec<String> = images().map(|(_, p)| p.to_string()).collect();
    Err(Error::NotFound {
        what: format!("an image for platform {want} in {what}"),
        hint: Some(if offered.is_empty() {
            "the index lists no image manifest with a platform".into()
        } else {
            format!(
                "it offers {}; choose one with --platform",
                offered.join(", ")
            )
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn parses_platforms() {
        assert_eq!(p("linux/arm/v7").variant.as_deref(), Some("v7"));
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        for bad in ["linux", "linux/", "Linux/amd64", "a/b/c/d", "linux/amd64/"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Platform::host().os, "linux");
    }

    #[test]
    fn matches_as_containerd_normalizes() {
        assert!(p("linux/amd64").matches(&p("linux/amd64")));
        assert!(!p("linux/amd64").matches(&p("linux/arm64")));
        assert!(!p("linux/amd64").matches(&p("windows/amd64")));
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/arm/v7").matches(&p("linux/arm")));
        assert!(!p("linux/arm/v7").matches(&p("linux/arm/v6")));
        assert!(!p("linux/arm").matches(&p("linux/arm/v6")));
        assert!(p("linux/amd64").matches(&p("linux/amd64/v3")));
        assert!(!p("linux/amd64/v3").matches(&p("linux/amd64")));
    }

    #[test]
    fn chooses_the_first_match_and_lists_the_offer_otherwise() {
        let d = |s: &str| Digest::of(s.as_bytes());
        let json = serde_json::json!({"manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d("a"), "size": 1,
             "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d("att"), "size": 1,
             "platform": {"os": "unknown", "architecture": "unknown"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d("b"), "size": 1,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d("c"), "size": 1,
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]});
        let index: Index = serde_json::from_value(json).unwrap();
        assert_eq!(
            choose(&index, &p("linux/amd64"), "i").unwrap().digest,
            d("b")
        );
        assert_eq!(
            choose(&index, &p("linux/arm64/v8"), "i").unwrap().digest,
            d("a")
        );
        let e = choose(&index, &p("linux/s390x"), "index x").unwrap_err();
        let s = format!("{e} {:?}", e);
        assert!(
            s.contains("linux/arm64") && s.contains("linux/amd64") && !s.contains("unknown/"),
            "{s}"
        );
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
    }
}
