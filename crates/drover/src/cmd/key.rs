use std::path::PathBuf;
use std::process::ExitCode;

use drover_core::keys::{self, PublicKey, SigningKey};

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    sub: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Make a new Ed25519 key pair: NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub.
    Generate {
        /// Path prefix of the two files.
        #[arg(default_value = "drover")]
        name: PathBuf,
    },
    /// Print a public key (of a key file, or the host key) and its key id.
    Show {
        /// A public or private key file; the store's host key when omitted.
        file: Option<PathBuf>,
    },
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let (public, path) = match &a.sub {
        Sub::Generate { name } => {
            let key = SigningKey::generate()?;
            let (k, p) = (name.with_extension("key"), name.with_extension("pub"));
            key.write(&k, &p)?;
            eprintln!("private key {} (mode 0600; keep it secret)", k.display());
            (key.public(), p)
        }
        Sub::Show { file: Some(f) } => (PublicKey::load(f)?, f.clone()),
        Sub::Show { file: None } => (
            keys::host_key(&ctx.store_dir)?.public(),
            ctx.store_dir.join(keys::HOST_PUB),
        ),
    };
    if ctx.json {
        ctx.emit(
            "Key",
            &serde_json::json!({
                "keyid": public.keyid(),
                "public_key": public.to_pem(),
                "path": path,
            }),
        )?;
    } else {
        eprintln!("public key {} (key id {})", path.display(), public.keyid());
        out!("{}", public.to_pem());
    }
    Ok(ExitCode::SUCCESS)
}
