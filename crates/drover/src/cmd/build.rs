use std::path::PathBuf;
use std::process::ExitCode;

use drover_core::builder::{self, BuildOptions, CacheUse, Compression};
use drover_core::trust::signature;

use super::Ctx;
use crate::{output, progress};

#[derive(clap::Args)]
pub struct Args {
    /// The image definition; its directory is the build context.
    #[arg(short = 'f', long = "file", default_value = "drover.toml")]
    file: PathBuf,
    /// Layer compression (overrides the definition).
    #[arg(long)]
    compression: Option<Compression>,
    /// Compression level: gzip 1-9 (default 1), zstd 1-19 (default 3).
    #[arg(long, value_name = "N")]
    compression_level: Option<u32>,
    /// Tag to give the image instead of the definition's name:tag.
    #[arg(short, long)]
    tag: Option<String>,
    /// Re-hash every file and rebuild every layer.
    #[arg(long)]
    no_cache: bool,
    /// Compression threads (the image is the same for any number).
    #[arg(long)]
    threads: Option<usize>,
    /// Timestamp of every file and history entry, in seconds since the epoch.
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS")]
    source_date_epoch: Option<u64>,
    /// Refuse to resolve Debian packages: fail if drover.lock is missing
    /// (it is always refused when stale).
    #[arg(long)]
    locked: bool,
    /// Use only the package cache: no network (fails naming what is missing).
    #[arg(long)]
    offline: bool,
    /// Sign the image (with `--key`, else the store's host key).
    #[arg(long)]
    sign: bool,
    /// Private key for `--sign`.
    #[arg(long, value_name = "FILE", requires = "sign")]
    key: Option<PathBuf>,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let def = builder::def::load(&a.file)?;
    let mut store = ctx.store()?;
    // Load the key first: a bad key should fail before a long build.
    let key = a
        .sign
        .then(|| ctx.signing_key(&store, a.key.as_deref()))
        .transpose()?;
    let bar = progress::Bar::new(ctx.json);
    let opts = BuildOptions {
        compression: a.compression,
        compression_level: a.compression_level,
        tag: a.tag.clone(),
        source_date_epoch: a.source_date_epoch,
        no_cache: a.no_cache,
        threads: a.threads,
        sandbox: Some(std::sync::Arc::new(drover_core::instance::BuildSandbox)),
        locked: a.locked,
        offline: a.offline,
    };
    let out = builder::build(&mut store, &def, &opts, &bar);
    bar.finish();
    let out = out?;
    let signed = key
        .map(|k| signature::sign(&mut store, &out.digest.to_string(), &k))
        .transpose()?;
    for w in &out.warnings {
        eprintln!("drover: warning: {w}");
    }
    if ctx.json {
        let mut v = serde_json::to_value(&out)?;
        v["signature"] = serde_json::json!(signed);
        ctx.emit("Build", &v)?;
        return Ok(ExitCode::SUCCESS);
    }
    // The summary goes to stderr (a terminal or a CI log); stdout carries
    // the digest alone, for scripts.
    for l in &out.layers {
        let how = match l.cache {
            None => "base".to_string(),
            Some(CacheUse::Hit) => "cached".to_string(),
            Some(CacheUse::Built { reused, chunks }) if reused > 0 => {
                format!("built, {reused}/{chunks} chunks reused")
            }
            Some(CacheUse::Built { .. }) => "built".to_string(),
        };
        eprintln!(
            "layer {} {:>10}  {} ({how})",
            l.digest.short(),
            output::size(l.size),
            l.source
        );
    }
    eprintln!("built {} in {:.2}s", out.tag, out.seconds);
    if let Some(s) = &signed {
        eprintln!("signed by key {}", &s.keyid[..12]);
    }
    outln!("{}", out.digest);
    Ok(ExitCode::SUCCESS)
}
