//! `layerfs mount IMAGE MNT` and `layerfs run IMAGE -- CMD`: a store image (imported first
//! if a SOURCE is named) becomes the lowers, and for `run` its config applies the way
//! podman applies it: the image's Env under the `-e` flags, Entrypoint before the given
//! command (or before the image's Cmd when none is given), WorkingDir and User unless
//! `--cwd` / `--user` say otherwise.

use anyhow::{bail, Result};

use super::image_source::store_image_with;
use crate::{MountArgs, RunArgs};

/// The `lowerdir=` option for an image's layers (top first).
fn lowerdir(
    store_root: &std::path::Path,
    image: &str,
    lazy_pull: bool,
) -> Result<(String, layerfs_image::store::ImageRecord)> {
    let opts = layerfs_image::registry::Options {
        lazy: lazy_pull,
        ..Default::default()
    };
    let (store, record) = store_image_with(image, store_root, &opts)?;
    let lowers = store.lowers(&record)?;
    if lowers.is_empty() {
        bail!("{image}: the image has no layers");
    }
    let joined: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    Ok((format!("lowerdir={}", joined.join(":")), record))
}

fn has_lowerdir(options: &[String]) -> bool {
    options
        .iter()
        .any(|o| o.split(',').any(|kv| kv.starts_with("lowerdir=")))
}

fn check_no_lowerdir(options: &[String], image: &str) -> Result<()> {
    if has_lowerdir(options) {
        bail!("{image}: an image gives the lowers; -o may only add upperdir= and workdir=");
    }
    Ok(())
}

/// `layerfs mount IMAGE MNT`: without `lowerdir=` the first path names an image, whose
/// layers become the lowers (and whose name the mount shows as its source); with one, it is
/// only the mount's source name, as mount(8) passes it.
pub fn apply_mount(args: &mut MountArgs) -> Result<()> {
    let Some(source) = args.source() else {
        return Ok(());
    };
    if has_lowerdir(&args.options) {
        return Ok(());
    }
    let image = source.to_string_lossy().into_owned();
    let (opt, _) = lowerdir(&args.store.root(), &image, args.lazy_pull)?;
    args.options.push(opt);
    Ok(())
}

pub fn apply_run(args: &mut RunArgs) -> Result<()> {
    let Some(image) = args.image.clone() else {
        return Ok(());
    };
    check_no_lowerdir(&args.options, &image)?;
    let (opt, record) = lowerdir(&args.store.root(), &image, args.lazy_pull)?;
    args.options.push(opt);
    let cfg = &record.config;
    // The image's environment first, the flags after it (later wins).
    let mut env = cfg.env.clone();
    env.append(&mut args.env);
    args.env = env;
    let given = std::mem::take(&mut args.command);
    let mut argv = cfg.entrypoint.clone();
    argv.extend(if given.is_empty() {
        cfg.cmd.clone()
    } else {
        given
    });
    if argv.is_empty() {
        bail!("{image}: the image has no Cmd or Entrypoint; give a command after --");
    }
    args.command = argv;
    if args.cwd.is_none() && !cfg.working_dir.is_empty() {
        args.cwd = Some(cfg.working_dir.clone());
    }
    if args.user.is_none() && !cfg.user.is_empty() {
        args.user = Some(cfg.user.clone());
    }
    Ok(())
}
