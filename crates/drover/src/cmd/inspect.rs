use std::process::ExitCode;

use drover_core::builder::provenance;
use drover_core::keys::{HOST_PUB, PublicKey};
use drover_core::store::{Descriptor, Store};
use drover_core::{Error, instance};

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// An image (name:tag, name@digest, a digest, or a unique digest prefix)
    /// or an instance (its id, a unique id prefix, or its name).
    reference: String,
    /// Which kind of thing the reference names, when it names both.
    #[arg(long = "type", value_enum)]
    kind: Option<Kind>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    Image,
    Instance,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let r = &a.reference;
    match a.kind {
        Some(Kind::Image) => return image(ctx, &store, &store.resolve(r)?),
        Some(Kind::Instance) => return show_instance(ctx, &instance::find(store.db(), r)?),
        None => {}
    }
    let as_image = store.resolve(r);
    let as_instance = instance::find(store.db(), r);
    match (as_image, as_instance) {
        (Ok(d), Ok(i)) => Err(Error::Usage(format!(
            "{r:?} names both image {} and instance {}: say which with --type image or --type instance",
            d.digest, i.id
        ))
        .into()),
        (Ok(d), Err(Error::NotFound { .. })) => image(ctx, &store, &d),
        // Not an image (or not a valid image reference: `fab9` may be
        // the start of an instance id): an instance, if it is one.
        (Err(Error::NotFound { .. } | Error::Usage(_)), Ok(i)) => show_instance(ctx, &i),
        (Err(e), Err(Error::NotFound { .. })) | (Err(e), Ok(_)) => Err(e.into()),
        (_, Err(e)) => Err(e.into()),
    }
}

/// An instance's record: image, release, state, pid, slot, volumes, launch.
fn show_instance(ctx: &Ctx, i: &instance::Instance) -> anyhow::Result<ExitCode> {
    ctx.emit("Instance", i)?;
    Ok(ExitCode::SUCCESS)
}

fn image(ctx: &Ctx, store: &Store, desc: &Descriptor) -> anyhow::Result<ExitCode> {
    let manifest = store.manifest(&desc.digest)?;
    let config = store.image_config(&manifest)?;
    let tags: Vec<String> = store
        .tags()?
        .into_iter()
        .filter(|t| t.digest == desc.digest)
        .map(|t| t.name)
        .collect();
    let referrers = store.referrers(&desc.digest, None)?;
    // The newest provenance this store's host key signed (the SBOM and
    // every other attachment are among the referrers).
    let host_pub = ctx.store_dir.join(HOST_PUB);
    let provenance = match host_pub.exists() {
        true => provenance::read(store, &desc.digest, &[PublicKey::load(&host_pub)?])?,
        false => None,
    };
    ctx.emit(
        "Image",
        &serde_json::json!({
            "digest": desc.digest,
            "tags": tags,
            "manifest": manifest,
            "config": config,
            "referrers": referrers,
            "provenance": provenance,
        }),
    )?;
    Ok(ExitCode::SUCCESS)
}
