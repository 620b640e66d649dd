//! An image of layerfs's own store, seen as a source: its layer directories (bottom
//! first) and the config and history its record keeps.

use anyhow::Result;

use super::{Digest, History, Image, ImageConfig, Layer, Limits, Location};
use crate::store::{ImageRecord, Store};

/// The store image `record` as the tools read it; `name` is how the user named it.
pub fn open(store: &Store, record: &ImageRecord, name: &str) -> Result<Image> {
    let diff_ids = record
        .layers
        .iter()
        .map(|l| Digest::parse(&l.diff_id))
        .collect::<Result<Vec<_>>>()?;
    let config = ImageConfig {
        env: record.config.env.clone(),
        cmd: record.config.cmd.clone(),
        entrypoint: record.config.entrypoint.clone(),
        working_dir: record.config.working_dir.clone(),
        user: record.config.user.clone(),
        labels: record.config.labels.clone(),
        exposed_ports: record.config.exposed_ports.clone(),
        history: record
            .history
            .iter()
            .map(|h| History {
                created: h.created.clone(),
                created_by: h.created_by.clone(),
                comment: h.comment.clone(),
                empty_layer: h.empty_layer,
            })
            .collect(),
        diff_ids: diff_ids.clone(),
    };
    let mut layers = Vec::new();
    for (l, diff_id) in record.layers.iter().zip(diff_ids) {
        layers.push(Layer {
            id: l.diff_id.clone(),
            digest: None,
            diff_id: Some(diff_id),
            media_type: None,
            compression: None,
            size: Some(l.size),
            created_by: None,
            comment: None,
            location: Location::Dir(store.whole_layer_dir(&l.diff_id)?),
        });
    }
    super::attach_config(&mut layers, &config);
    Ok(Image {
        name: name.to_string(),
        layers,
        config: Some(config),
        config_digest: Digest::parse(&record.id).ok(),
        manifest_digest: None,
        limits: Limits::default(),
    })
}
