//! Drift: how what runs differs from the release it was made from.
//!
//! An instance has drifted when any of these differ from its release: the
//! image digest it runs, its runtime configuration, its liveness, or its
//! root filesystem compared with the image's baseline. Drift is never
//! patched: an instance found drifted is replaced by a fresh one of the
//! same release, and a root found tainted is moved aside
//! (`store::unpack::taint`) so that replacement runs on a newly unpacked,
//! verified copy.
//!
//! This module owns the filesystem part ([`scan`]): every path of the
//! shared, read-only root checked for type, mode, owner, size, symlink
//! target, hard-link identity and full content (sha256 of every regular
//! file), plus what was added or removed. Writable areas (the tmpfs on
//! `/tmp` and `/run`, volumes) are out of scope by design: they are meant
//! to change, and nothing in them survives a replacement anyway. The
//! instance, configuration and process checks, and the remediation, live
//! with the instance and deploy code that calls this.
//!
//! Scans are fast enough to run in full every time (all content, no
//! sampling, no trusting mtimes): a [`Budget`] decides how many threads,
//! how many bytes per second and at which priority, so a daemon can scan
//! continuously in the background while the CLI scans flat out.

pub mod instance;
mod scan;
mod sweep;

pub use scan::{Budget, Change, Finding, Kind, Report, scan};
pub use sweep::{InstanceDrift, Remedy, RootScan, Sweep, Target, last, root_identity, sweep};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::store::{Store, baseline, unpack};

/// Scan the unpacked root of `image` against its baseline. The root must
/// already exist (see `unpack::materialize`); this never unpacks one, as a
/// fresh copy would prove nothing.
pub fn scan_image(store: &Store, image: &Digest, budget: &Budget) -> Result<Report> {
    let rootfs = unpack::existing(store.layout(), image).ok_or_else(|| Error::NotFound {
        what: format!("unpacked root of image {image}"),
        hint: Some("an image is unpacked when an instance of it first runs".into()),
    })?;
    let baseline = baseline::of_image(store, image)?;
    scan(&rootfs, &baseline, budget)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::error::ErrorKind;

    /// Build, unpack, scan, tamper, scan, taint, unpack again, scan.
    #[test]
    fn an_image_root_is_scanned_against_its_baseline() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("store")).unwrap();
        let ctx = dir.path().join("ctx");
        let root = ctx.join("rootfs");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("etc/motd"), b"welcome\n").unwrap();
        fs::write(root.join("bin/tool"), vec![7u8; 2 << 20]).unwrap();
        fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(root.join("etc/motd"), root.join("etc/motd.hard")).unwrap();
        std::os::unix::fs::symlink("../etc/motd", root.join("bin/motd-link")).unwrap();
        let def = ctx.join("drover.toml");
        fs::write(
            &def,
            "[image]\nname = \"drift\"\n\n[[layer]]\nkind = \"copy\"\nsrc = \"rootfs\"\ndest = \"/\"\n",
        )
        .unwrap();
        let def = crate::builder::def::load(&def).unwrap();
        let image = crate::builder::build(
            &mut store,
            &def,
            &Default::default(),
            &crate::builder::NoProgress,
        )
        .unwrap()
        .digest;
        let budget = Budget::unlimited();

        let err = scan_image(&store, &image, &budget).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        let r = unpack::materialize(&store, &image).unwrap();
        let report = scan_image(&store, &image, &budget).unwrap();
        assert_eq!(report.findings, []);
        assert_eq!(report.bytes_hashed, (2 << 20) + 8);

        fs::write(r.path.join("etc/motd"), b"WELCOME\n").unwrap();
        let report = scan_image(&store, &image, &budget).unwrap();
        let found: Vec<_> = report.findings.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(found, ["/etc/motd"]);
        assert!(matches!(report.findings[0].change, Change::Content { .. }));

        unpack::taint(store.layout(), &image).unwrap().unwrap();
        assert_eq!(
            scan_image(&store, &image, &budget).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert!(unpack::materialize(&store, &image).unwrap().unpacked);
        assert_eq!(scan_image(&store, &image, &budget).unwrap().findings, []);
    }
}
