//! Disk usage as docker accounts it (`system df`, `GET /system/df`): images
//! with their shared and unique sizes (a layer two images have counts once
//! in the total and is "shared" in each), the writable layer of each
//! container, each volume with the containers that mount it, and what is
//! reclaimable (what no container uses). The build cache belongs to the
//! builder, which the engine does not know: [`DiskUsage::layers_outside`]
//! sizes the cache's layers that no image holds.

use std::collections::{BTreeMap, BTreeSet};

use berth_store::image::Image;
use berth_types::Digest;

use crate::container::{Container, Status};
use crate::volume::Volume;
use crate::{Engine, Result};

/// One image's share of the store.
#[derive(Debug, Clone)]
pub struct ImageUsage {
    /// The image.
    pub image: Image,
    /// Its layers' size.
    pub size: u64,
    /// The part of it in layers other images have too.
    pub shared: u64,
    /// Containers made from it.
    pub containers: usize,
}

/// One container's writable layer.
#[derive(Debug, Clone)]
pub struct ContainerUsage {
    /// The container.
    pub container: Container,
    /// Its upper directory's size.
    pub size_rw: u64,
    /// Its image's size.
    pub size_root: u64,
}

/// One volume and who mounts it.
#[derive(Debug, Clone)]
pub struct VolumeUsage {
    /// The volume.
    pub volume: Volume,
    /// Its size on disk.
    pub size: u64,
    /// How many containers mount it.
    pub links: usize,
}

/// The store's disk usage.
#[derive(Debug, Clone, Default)]
pub struct DiskUsage {
    /// Images, in the store's order.
    pub images: Vec<ImageUsage>,
    /// Every layer of every image, once.
    pub layers_size: u64,
    /// The part of it no container's image uses.
    pub layers_reclaimable: u64,
    /// Containers.
    pub containers: Vec<ContainerUsage>,
    /// Volumes.
    pub volumes: Vec<VolumeUsage>,
    image_layers: BTreeSet<Digest>,
}

impl DiskUsage {
    /// Images containers use.
    pub fn images_active(&self) -> usize {
        self.images.iter().filter(|i| i.containers > 0).count()
    }

    /// Whether a container counts as active (docker: running or paused).
    pub fn is_active(c: &Container) -> bool {
        matches!(c.state.status, Status::Running | Status::Paused)
    }

    /// The size of the layers among `chains` that no image holds (what a
    /// build cache keeps on its own).
    pub fn layers_outside(&self, engine: &Engine, chains: impl IntoIterator<Item = Digest>) -> u64 {
        chains
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|c| !self.image_layers.contains(c))
            .filter_map(|c| engine.store.snapshots.layer(&c).ok().flatten())
            .map(|m| m.size)
            .sum()
    }
}

impl Engine {
    /// What the store's images, containers and volumes take on disk.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        self.settle_removals();
        let store = &self.store;
        let images = store.images()?;
        let in_use = store.images_in_use()?;
        let layer_size = |c: &Digest| -> u64 {
            store
                .snapshots
                .layer(c)
                .ok()
                .flatten()
                .map_or(0, |m| m.size)
        };
        // How many images have each layer.
        let mut holders: BTreeMap<Digest, usize> = BTreeMap::new();
        for img in &images {
            for c in berth_types::chain_ids(&img.config.rootfs.diff_ids) {
                *holders.entry(c).or_default() += 1;
            }
        }
        let mut du = DiskUsage::default();
        let mut counted = BTreeSet::new();
        let containers = self.containers()?;
        for img in images {
            let used = in_use.contains_key(&img.id);
            let (mut size, mut shared) = (0, 0);
            for c in berth_types::chain_ids(&img.config.rootfs.diff_ids) {
                let s = layer_size(&c);
                size += s;
                if holders.get(&c).copied().unwrap_or(0) > 1 {
                    shared += s;
                }
                if counted.insert(c.clone()) {
                    du.layers_size += s;
                    if !used {
                        du.layers_reclaimable += s;
                    }
                }
            }
            let id = img.id.to_string();
            du.images.push(ImageUsage {
                containers: containers.iter().filter(|c| c.image_id == id).count(),
                image: img,
                size,
                shared,
            });
        }
        du.image_layers = counted;
        for c in containers {
            let size_rw = berth_fs::du(&store.snapshots.upper_dir(&c.id));
            let size_root = du
                .images
                .iter()
                .find(|i| i.image.id.to_string() == c.image_id)
                .map_or(0, |i| i.size);
            du.containers.push(ContainerUsage {
                container: c,
                size_rw,
                size_root,
            });
        }
        let used = self.volumes_in_use()?;
        for v in self.volumes()? {
            let size = berth_fs::du(std::path::Path::new(&v.mountpoint));
            let links = used.iter().filter(|(n, _)| *n == v.name).count();
            du.volumes.push(VolumeUsage {
                volume: v,
                size,
                links,
            });
        }
        Ok(du)
    }
}
