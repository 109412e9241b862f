//! `verify`: re-hash every blob, find what is missing, and name what
//! references each problem so the user knows which images are affected.

use std::fs;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use super::{Store, gc};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};

#[derive(Debug, Clone, Serialize)]
pub struct BlobProblem {
    pub digest: String,
    pub path: PathBuf,
    /// `corrupt`, `missing`, `unreadable` or `stray`.
    pub problem: String,
    pub detail: String,
    /// Tags and manifests that reference this blob.
    pub referenced_by: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub blobs_checked: usize,
    pub bytes_checked: u64,
    pub problems: Vec<BlobProblem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub(crate) fn run(store: &Store) -> Result<VerifyReport> {
    let mut unreadable = Vec::new();
    let (reachable, parents) = gc::walk(store, |d, e| {
        unreadable.push((*d, e));
        Ok(())
    })?;
    let names: Vec<String> = fs::read_dir(&store.layout.blobs)
        .ctx("list blobs", &store.layout.blobs)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let blobs = &store.layout.blobs;
    let checked: Vec<(String, Result<u64>)> = names
        .into_par_iter()
        .map(|name| {
            let res = match format!("sha256:{name}").parse::<Digest>() {
                Ok(d) => super::blob::check_file(&blobs.join(d.hex()), &d),
                Err(_) => Err(Error::corrupt(
                    format!("blob file {name}"),
                    "file name is not a sha256 digest",
                )),
            };
            (name, res)
        })
        .collect();
    let referenced_by = |d: &Digest| -> Vec<String> {
        parents
            .get(d)
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default()
    };
    let mut problems = Vec::new();
    let mut bytes_checked = 0;
    let mut present = std::collections::BTreeSet::new();
    let blobs_checked = checked.len();
    for (name, res) in checked {
        let path = store.layout.blobs.join(&name);
        let digest = format!("sha256:{name}").parse::<Digest>().ok();
        if let Some(d) = digest {
            present.insert(d);
        }
        match res {
            Ok(n) => bytes_checked += n,
            Err(e) => problems.push(BlobProblem {
                digest: format!("sha256:{name}"),
                path,
                problem: if matches!(e, Error::CorruptBlob { .. }) {
                    "corrupt"
                } else {
                    "unreadable"
                }
                .into(),
                detail: e.to_string(),
                referenced_by: digest.map(|d| referenced_by(&d)).unwrap_or_default(),
            }),
        }
    }
    for d in &reachable {
        if !present.contains(d) {
            problems.push(BlobProblem {
                digest: d.to_string(),
                path: store.blob_path(d),
                problem: "missing".into(),
                detail: "referenced but not in the store".into(),
                referenced_by: referenced_by(d),
            });
        }
    }
    for (d, e) in unreadable {
        // Already reported above when the blob itself is corrupt or missing.
        if problems.iter().any(|p| p.digest == d.to_string()) {
            continue;
        }
        problems.push(BlobProblem {
            digest: d.to_string(),
            path: store.blob_path(&d),
            problem: "unreadable".into(),
            detail: e.to_string(),
            referenced_by: referenced_by(&d),
        });
    }
    problems.sort_by(|a, b| a.digest.cmp(&b.digest));
    Ok(VerifyReport {
        blobs_checked,
        bytes_checked,
        problems,
    })
}
