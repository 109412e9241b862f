//! Downloading `.deb` files into the package cache: those already cached
//! are checked against their sha256 again (a damaged copy is removed and
//! downloaded anew, never installed) and marked as used; the rest are
//! fetched several at a time, each
//! bounded by the size its signed index declares and checked against its
//! sha256 before it enters the cache. Offline, nothing touches the
//! network: every package must already be cached, or the error lists the
//! ones that are not.

use std::path::PathBuf;

use futures_util::StreamExt as _;
use rayon::prelude::*;

use super::cache::{Cached, PackageCache};
use super::http::{Http, NetError};
use super::repo::Online;
use crate::builder::Progress;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::limits::Limits;

/// Downloads running at once.
pub const PARALLEL: usize = 8;

/// One `.deb` to have in the cache, as the signed index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebRequest {
    /// The package name, for messages ("nginx-light").
    pub name: String,
    /// Where to get it: the repository URL joined with the index's `Filename`.
    pub url: String,
    pub sha256: Digest,
    pub size: u64,
}

/// What [`fetch_debs`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The cached file of each request, in the order given.
    pub paths: Vec<PathBuf>,
    /// How many were downloaded now, and their bytes.
    pub downloaded: usize,
    pub downloaded_bytes: u64,
    /// How many were in the cache already.
    pub cached: usize,
    /// The packages whose cached copy no longer matched its sha256: removed
    /// from the cache and downloaded again (or, offline, missing).
    pub damaged: Vec<String>,
}

/// Have every package of `items` in `cache`; returns where each is.
/// Progress: one phase ("download", packages to fetch, their bytes), then
/// the bytes as they arrive.
pub fn fetch_debs(
    items: &[DebRequest],
    cache: &PackageCache,
    limits: &Limits,
    online: Online,
    progress: &dyn Progress,
) -> Result<Fetched> {
    let mut out = Fetched::default();
    for item in items {
        if item.size > limits.deb_bytes {
            return Err(Limits::exceeded(
                "deb_bytes",
                format!("package {} ({})", item.name, item.url),
                format!(
                    "its index declares {} bytes, more than {}",
                    item.size, limits.deb_bytes
                ),
            ));
        }
    }
    // Regression (issue 17): a cached file was trusted by its name alone,
    // so a damaged or swapped .deb was installed into the image.
    let state: Vec<Cached> = items
        .par_iter()
        .map(|item| cache.verify(&item.sha256, item.size))
        .collect::<Result<_>>()?;
    let mut todo: Vec<&DebRequest> = Vec::new();
    for (item, state) in items.iter().zip(state) {
        if state == Cached::Damaged {
            out.damaged.push(item.name.clone());
        }
        if state == Cached::Good {
            cache.touch(&item.sha256)?;
            out.cached += 1;
        } else if !todo.iter().any(|t| t.sha256 == item.sha256) {
            todo.push(item);
        }
    }
    out.paths = items.iter().map(|i| cache.object_path(&i.sha256)).collect();
    if todo.is_empty() {
        return Ok(out);
    }
    if online == Online::No {
        return Err(missing(&todo, &out.damaged, "offline"));
    }
    let total: u64 = todo.iter().map(|i| i.size).sum();
    progress.phase("download", todo.len() as u64, total);
    let http = Http::new(limits)?;
    let results: Vec<(&DebRequest, std::result::Result<(), NetError>)> = http.block_on(async {
        futures_util::stream::iter(todo.iter().copied())
            .map(|item| {
                let http = &http;
                async move { (item, download(http, item, cache, progress).await) }
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await
    });
    let mut unreachable = Vec::new();
    let mut first_error = None;
    for (item, r) in results {
        match r {
            Ok(()) => {
                out.downloaded += 1;
                out.downloaded_bytes += item.size;
            }
            Err(NetError {
                unreachable: true,
                error,
            }) => unreachable.push((item, error)),
            Err(e) => {
                first_error.get_or_insert(e.error);
            }
        }
    }
    // A package that was refused (its hash, its size) is the more serious news.
    if let Some(e) = first_error {
        return Err(e);
    }
    if !unreachable.is_empty() {
        let why = format!("the repository cannot be reached ({})", unreachable[0].1);
        let items: Vec<&DebRequest> = unreachable.iter().map(|(i, _)| *i).collect();
        return Err(missing(&items, &out.damaged, &why));
    }
    Ok(out)
}

/// Fetch one package into the cache.
async fn download(
    http: &Http,
    item: &DebRequest,
    cache: &PackageCache,
    progress: &dyn Progress,
) -> std::result::Result<(), NetError> {
    let what = format!("package {} ({})", item.name, item.url);
    let mut w = cache.writer(item.sha256, item.size, &what)?;
    let found = http
        .stream(&item.url, item.size, |chunk| {
            w.write(chunk)?;
            progress.advance(chunk.len() as u64);
            Ok(())
        })
        .await?;
    if !found {
        return Err(Error::NotFound {
            what: format!("package {} at {}", item.name, item.url),
            hint: Some("the repository no longer has it: refresh the lock".into()),
        }
        .into());
    }
    w.commit()?;
    Ok(())
}

/// The error for `items` not in the cache; `damaged` names those whose
/// cached copy was removed just now.
fn missing(items: &[&DebRequest], damaged: &[String], why: &str) -> Error {
    let mut names: Vec<String> = items
        .iter()
        .map(|i| {
            let note = if damaged.contains(&i.name) {
                ", its cached copy was damaged and is removed"
            } else {
                ""
            };
            format!("{} ({}{note})", i.name, i.sha256.short())
        })
        .collect();
    names.sort();
    Error::NotFound {
        what: format!(
            "{} package{} in the package cache: {}",
            items.len(),
            if items.len() == 1 { "" } else { "s" },
            names.join(", ")
        ),
        hint: Some(format!(
            "{why}; build once with the network to fill the cache"
        )),
    }
}

#[cfg(test)]
mod tests;
