//! `drover audit`: list the ledger, verify it (in the store, or an export
//! offline), and export it as signed JSON Lines.

use std::fs;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use drover_core::keys::{self, PublicKey};
use drover_core::ledger::{Filter, export};

use super::Ctx;
use crate::output::Table;
use crate::timearg::Time;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    sub: Option<Sub>,
    /// Only entries with this action (`image.build`), or a prefix (`image.*`).
    #[arg(long)]
    action: Option<String>,
    /// Only entries naming this subject (substring of a digest or name).
    #[arg(long)]
    subject: Option<String>,
    /// Only entries by this actor.
    #[arg(long)]
    actor: Option<String>,
    /// Only entries from this time on: a duration back from now (`30m`,
    /// `1h`, `2d`) or a timestamp (`2026-12-01T10:00Z`, RFC 3339); a bare
    /// number is a sequence number (entries from that one on).
    #[arg(long, value_name = "TIME|SEQ", value_parser = since)]
    since: Option<Since>,
    /// Only entries before this time (a duration back from now or a
    /// timestamp, as for --since).
    #[arg(long, value_name = "TIME", value_parser = crate::timearg::parse)]
    until: Option<Time>,
    /// Only the newest N entries.
    #[arg(short = 'n', long)]
    limit: Option<usize>,
}

/// Where `--since` starts: an entry's sequence number or a time.
#[derive(Clone, Copy, Debug)]
pub enum Since {
    Seq(u64),
    Time(Time),
}

fn since(s: &str) -> Result<Since, String> {
    match s.parse() {
        Ok(seq) => Ok(Since::Seq(seq)),
        Err(_) => crate::timearg::parse(s).map(Since::Time),
    }
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Check the hash chain and every entry's signature; name the first entry
    /// that was changed, removed, inserted, reordered or not signed by a
    /// trusted key. Exit 3 when not valid.
    Verify {
        /// A public key to trust (repeatable): when omitted, the store's
        /// host key and those of every host that joined the fleet
        /// (`serve --join`). Required with --export.
        #[arg(long, value_name = "PUB")]
        key: Vec<PathBuf>,
        /// Verify this export (`drover audit export`, `-` for stdin) offline
        /// instead of the store.
        #[arg(long, value_name = "FILE", requires = "key")]
        export: Option<PathBuf>,
    },
    /// Write the ledger as JSON Lines (a signed header, then one entry per
    /// line) that anyone can verify offline with the host's public key; see
    /// docs/ledger-format.md.
    Export {
        /// Write here instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Start at this entry instead of the first.
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
        /// Another public key whose signatures the ledger may carry
        /// (repeatable), e.g. the host key before a rotation.
        #[arg(long, value_name = "PUB")]
        key: Vec<PathBuf>,
    },
    /// Acknowledge that the ledger ends before the head the host key signed
    /// (a database backup was restored, or its tail was lost): records a
    /// signed `ledger.accept_truncation` entry naming the missing range and
    /// the old head, then re-signs the head so drover appends again.
    /// Stopping and removing instances work without this.
    AcceptTruncation {
        /// Why the loss is known and accepted (kept in the ledger).
        #[arg(long)]
        reason: String,
    },
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    match &a.sub {
        Some(Sub::Verify {
            key,
            export: Some(file),
        }) => verify_export(ctx, file, key),
        Some(Sub::Verify { key, export: None }) => verify_store(ctx, key),
        Some(Sub::Export { out, since, key }) => export(ctx, out.as_deref(), *since, key),
        Some(Sub::AcceptTruncation { reason }) => accept_truncation(ctx, reason),
        None => list(ctx, a),
    }
}

fn accept_truncation(ctx: &Ctx, reason: &str) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    let e = store.db_mut().accept_ledger_gap(reason)?;
    if ctx.json {
        ctx.emit("LedgerEntry", &e)?;
    } else {
        outln!(
            "accepted: entries {} to {} are gone (the signed head was entry {}); recorded as entry {} and the head re-signed",
            e.details["missing_from"],
            e.details["missing_to"],
            e.details["signed_head_seq"],
            e.seq
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_store(ctx: &Ctx, keys: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let db = store.db();
    // Each entry is signed by the host that made it: this store's host key
    // and those of the hosts that joined the fleet.
    let trusted = if keys.is_empty() {
        let mut trusted = host_public(ctx)?;
        trusted.extend(db.read().host_public_keys()?);
        trusted
    } else {
        load_keys(keys)?
    };
    let report = db.read().verify_ledger(&trusted)?;
    // The tags table against what the (verified) ledger says they are.
    let tags = if report.is_ok() {
        store.verify_tags()?
    } else {
        Vec::new()
    };
    if ctx.json {
        let mut v = serde_json::to_value(&report)?;
        v["tag_problems"] = serde_json::to_value(&tags)?;
        ctx.emit("LedgerVerification", &v)?;
    } else if let Some(p) = &report.problem {
        outln!("ledger NOT valid: {p}");
    } else if !tags.is_empty() {
        for t in &tags {
            outln!("tags NOT as the ledger records them: {t}");
        }
    } else {
        let mut line = format!(
            "ledger valid: {} entries, hash chain intact, {} signed by trusted keys",
            report.entries, report.signed
        );
        if report.unsigned > 0 {
            line += &format!(
                ", {} unsigned (written before ledger signing)",
                report.unsigned
            );
        }
        outln!("{line}");
    }
    let report = report.into_result()?;
    if let Some(t) = tags.first() {
        return Err(drover_core::Error::corrupt(
            format!("tag {}", t.tag),
            format!("{t}; {} tag(s) differ from the ledger", tags.len()),
        )
        .into());
    }
    if let Some((seq, time)) = &report.signed_head
        && !ctx.json
    {
        outln!("signed head: entry {seq}, signed at {time}");
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_export(ctx: &Ctx, file: &Path, keys: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let trusted = load_keys(keys)?;
    let report = if file == Path::new("-") {
        export::verify(io::stdin().lock(), &trusted, file)?
    } else {
        let f = fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        export::verify(BufReader::new(f), &trusted, file)?
    };
    if ctx.json {
        ctx.emit("ExportVerification", &report)?;
    } else if let Some(p) = &report.problem {
        outln!("export NOT valid: {p}");
    } else if let Some(h) = &report.header {
        let mut line = format!(
            "export valid: entries {}–{} of a ledger exported {} by key {}, {} signed by trusted keys",
            h.first_seq,
            h.last_seq,
            h.exported_at,
            &h.keyid[..12.min(h.keyid.len())],
            report.signed
        );
        if report.unsigned > 0 {
            line += &format!(
                ", {} unsigned (written before ledger signing)",
                report.unsigned
            );
        }
        outln!("{line}");
    }
    match &report.problem {
        None => Ok(ExitCode::SUCCESS),
        Some(p) => Err(drover_core::Error::corrupt(
            format!("ledger export {}", file.display()),
            p.to_string(),
        )
        .into()),
    }
}

fn export(
    ctx: &Ctx,
    out: Option<&Path>,
    since: Option<u64>,
    keys: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let db = store.db();
    let key = ctx.signing_key(&store, None)?;
    let mut trusted = vec![key.public()];
    trusted.extend(db.read().host_public_keys()?);
    trusted.extend(load_keys(keys)?);
    let summary = match out {
        None => {
            let mut stdout = io::stdout().lock();
            db.read()
                .export_ledger(&key, &trusted, since, &mut stdout, Path::new("stdout"))?
        }
        Some(path) => {
            // Written beside the target and renamed, so a failed export
            // never leaves a truncated file that looks complete.
            let mut partial = path.as_os_str().to_owned();
            partial.push(".partial");
            let partial = PathBuf::from(partial);
            let result = fs::File::create(&partial)
                .with_context(|| format!("creating {}", partial.display()))
                .and_then(|f| {
                    let mut w = io::BufWriter::new(f);
                    let s = db
                        .read()
                        .export_ledger(&key, &trusted, since, &mut w, path)?;
                    w.into_inner()
                        .map_err(|e| e.into_error())
                        .and_then(|f| f.sync_all())
                        .with_context(|| format!("writing {}", partial.display()))?;
                    fs::rename(&partial, path).with_context(|| {
                        format!("renaming {} to {}", partial.display(), path.display())
                    })?;
                    Ok(s)
                });
            if result.is_err() {
                let _ = fs::remove_file(&partial);
            }
            result?
        }
    };
    let pub_path = ctx.store_dir.join(keys::HOST_PUB);
    let mut msg = format!(
        "exported entries {}–{} ({} lines after the header",
        summary.first_seq, summary.last_seq, summary.entries
    );
    if summary.unsigned > 0 {
        msg += &format!(
            ", {} unsigned: written before ledger signing",
            summary.unsigned
        );
    }
    msg += &format!(
        "), signed by key {}\nverify with: drover audit verify --export {} --key {}",
        summary.keyid,
        out.map_or("FILE".into(), |p| p.display().to_string()),
        pub_path.display()
    );
    if ctx.json && out.is_some() {
        ctx.emit("LedgerExport", &summary)?;
    } else {
        io::stdout().flush()?;
        eprintln!("{msg}");
    }
    Ok(ExitCode::SUCCESS)
}

fn list(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let db = store.db();
    let filter = Filter {
        action: a.action.clone(),
        subject: a.subject.clone(),
        actor: a.actor.clone(),
        since_seq: match a.since {
            Some(Since::Seq(n)) => Some(n),
            _ => None,
        },
        since_time: match a.since {
            Some(Since::Time(t)) => Some(t.rfc3339()),
            _ => None,
        },
        until_time: a.until.map(Time::rfc3339),
        limit: a.limit,
    };
    let entries = db.read().ledger(&filter)?;
    if ctx.json {
        ctx.emit("LedgerEntry", &entries)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&["SEQ", "TIME", "ACTION", "ACTOR", "SUBJECTS", "DETAILS"]).right("SEQ");
    for e in &entries {
        let subjects: Vec<&str> = e
            .subjects
            .iter()
            .map(|s| {
                s.strip_prefix("sha256:")
                    .map_or(s.as_str(), |h| &h[..12.min(h.len())])
            })
            .collect();
        t.row(vec![
            e.seq.to_string(),
            e.time.clone(),
            e.action.clone(),
            e.actor.clone(),
            subjects.join(","),
            e.details.to_string(),
        ]);
    }
    t.print();
    Ok(ExitCode::SUCCESS)
}

/// The store's host public key, read from its public file so verifying
/// needs no access to the private key; created with the key if neither
/// exists yet. Only as trustworthy as the store directory: for tamper
/// evidence against its writers, pass a copy kept elsewhere with --key.
fn host_public(ctx: &Ctx) -> anyhow::Result<Vec<PublicKey>> {
    host_keys(&ctx.store_dir)
}

/// The keys `audit verify` trusts by default: the store's host key.
pub fn host_keys(store_dir: &Path) -> anyhow::Result<Vec<PublicKey>> {
    let pub_path = store_dir.join(keys::HOST_PUB);
    if pub_path.exists() {
        return Ok(vec![PublicKey::load(&pub_path)?]);
    }
    Ok(vec![keys::host_key(store_dir)?.public()])
}

fn load_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    Ok(paths
        .iter()
        .map(|p| PublicKey::load(p))
        .collect::<Result<_, _>>()?)
}
