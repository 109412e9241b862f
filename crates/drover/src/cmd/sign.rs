use std::path::PathBuf;
use std::process::ExitCode;

use drover_core::trust::signature;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// The image: tag, digest or digest prefix.
    reference: String,
    /// Private key to sign with; the store's host key when omitted.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    let key = ctx.signing_key(&store, a.key.as_deref())?;
    let signed = signature::sign(&mut store, &a.reference, &key)?;
    if ctx.json {
        ctx.emit("Signature", &signed)?;
    } else {
        eprintln!(
            "{} {} by key {} (signature {})",
            if signed.new {
                "signed"
            } else {
                "already signed"
            },
            signed.image,
            &signed.keyid[..12],
            signed.signature.short()
        );
        outln!("{}", signed.signature);
    }
    Ok(ExitCode::SUCCESS)
}
