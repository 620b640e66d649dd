//! `layerfs verify SOURCE | --store`: layers hashed again and compared with their hash
//! lists, digests and manifests (`image::verify`); each file that differs is named, and the
//! exit status is 1 when anything differs.

use anyhow::{Context, Result};
use clap::Args;

use super::image_source::{emit, SourceArgs};
use super::imagecmd::{as_store_owner, print_json};
use layerfs_image::manifest::{Cache, Progress};
use layerfs_image::store::Store;
use layerfs_image::verify::{self, LayerReport, Status};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The image: a store image (NAME or store:NAME), oci:DIR[:REF], oci-archive:FILE[:REF],
    /// docker-archive:FILE[:REF], containers-storage:IMAGE, or lowerdir=TOP:...:BOTTOM (or
    /// use -o). Without one: every layer of the layer store (`--store DIR` for another store
    /// than the default), against the hash list recorded when it was imported.
    #[arg(value_name = "SOURCE")]
    pub args: Vec<String>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print JSON: {"ok": bool, "layers": [{layer, status, files, against, error?,
    /// problems: [{path, problem}]}]}.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: VerifyArgs) -> Result<i32> {
    if args.args.is_empty() && args.source.options.is_empty() {
        // With the ids the store's files carry (rootless: inside the user namespace that
        // owns them); the store is resolved before entering it.
        let root = args.source.common.store.root();
        return as_store_owner(|| report(args.json, &store_layers(&root)?));
    }
    let (named, _) = args.source.spec(&args.args, 0)?;
    let name = args.args.first().map_or("the stack", String::as_str);
    args.source.common.reading(&[&named], || {
        let image = args.source.common.open(&named, name)?;
        let cache = Cache::new(if args.source.common.no_cache {
            None
        } else {
            Cache::default_dir()
        });
        let progress = Progress::new(image.layers.len());
        let reports = verify::image(&image, &cache, &progress);
        progress.finish();
        report(args.json, &reports)
    })
}

/// Prints the reports; the exit status (1 when a layer failed).
fn report(json: bool, reports: &[LayerReport]) -> Result<i32> {
    let ok = reports.iter().all(LayerReport::passed);
    if json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            ok: bool,
            layers: &'a [LayerReport],
        }
        print_json(&Out {
            ok,
            layers: reports,
        })?;
    } else {
        emit(&table(reports))?;
    }
    Ok(if ok { 0 } else { 1 })
}

/// Every layer directory of the store, by diff_id.
fn store_layers(root: &std::path::Path) -> Result<Vec<LayerReport>> {
    let store = Store::open(root)?;
    let dir = store.root().join("layers");
    let mut layers = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        if e.file_type()?.is_dir() {
            layers.push(e.path());
        }
    }
    layers.sort();
    let progress = Progress::new(layers.len());
    let reports = layers
        .iter()
        .map(|p| {
            let id = format!(
                "sha256:{}",
                p.file_name().unwrap_or_default().to_string_lossy()
            );
            verify::dir_layer(&id, p, &progress)
        })
        .collect();
    progress.finish();
    Ok(reports)
}

/// One line a layer, then one line a file that differs.
fn table(reports: &[LayerReport]) -> String {
    let mut out = format!(
        "{:<20} {:<13} {:>7}  {}\n",
        "LAYER", "STATUS", "FILES", "CHECKED AGAINST"
    );
    for r in reports {
        let id = r.layer.trim_start_matches("sha256:");
        let short = if r.layer.starts_with("sha256:") {
            &id[..12.min(id.len())]
        } else {
            id
        };
        let status = match r.status {
            Status::Ok => "ok",
            Status::Differs => "DIFFERS",
            Status::Error => "ERROR",
            Status::Unverifiable => "unverifiable",
        };
        out.push_str(&format!(
            "{short:<20} {status:<13} {:>7}  {}\n",
            r.files, r.against
        ));
        if let Some(e) = &r.error {
            out.push_str(&format!("  {e}\n"));
        }
        for p in &r.problems {
            let what = match p.problem {
                verify::Problem::Modified => "modified",
                verify::Problem::Missing => "missing",
                verify::Problem::Added => "added",
            };
            out.push_str(&format!("  {what:<9} {}\n", p.path));
        }
    }
    let bad = reports.iter().filter(|r| !r.passed()).count();
    out.push_str(&if bad == 0 {
        format!("{} layer(s) verified\n", reports.len())
    } else {
        format!("{bad} of {} layer(s) FAILED\n", reports.len())
    });
    out
}
