//! `system df` and `system check`.

use berth_store::Store;
use clap::Args;

use crate::commands::image::image_size;
use crate::output::{Table, human_size};

/// `system check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Remove what is broken (and re-unpack layers from intact blobs).
    #[arg(long)]
    pub repair: bool,
}

pub fn check(store: &Store, a: CheckArgs) -> anyhow::Result<()> {
    let r = store.check(a.repair)?;
    for p in &r.problems {
        let sev = if p.is_error() { "error" } else { "note" };
        println!("{sev}: {p}");
    }
    for rep in &r.repairs {
        println!("repaired: {rep}");
    }
    let errors = r.problems.iter().filter(|p| p.is_error()).count();
    println!(
        "checked {} blobs, {} images, {} layers: {}",
        r.blobs_checked,
        r.images_checked,
        r.layers_checked,
        match (errors, a.repair) {
            (0, _) => "the store is consistent".to_string(),
            (n, true) => format!("{n} problems repaired"),
            (n, false) => format!("{n} problems found (run `berth system check --repair`)"),
        }
    );
    if errors > 0 && !a.repair {
        std::process::exit(1);
    }
    Ok(())
}

/// `system df`.
#[derive(Args, Debug)]
pub struct DfArgs {
    /// Show detailed information on space usage.
    #[arg(short, long)]
    pub verbose: bool,
}

pub fn df(store: &Store, a: DfArgs) -> anyhow::Result<()> {
    let images = store.images()?;
    let in_use = store.images_in_use()?;
    // Layers shared between images count once, as docker's SIZE column does.
    let mut seen = std::collections::BTreeSet::new();
    let (mut total, mut reclaimable) = (0u64, 0u64);
    for img in &images {
        let used = in_use.contains_key(&img.id);
        for c in berth_types::chain_ids(&img.config.rootfs.diff_ids) {
            if seen.insert(c.clone()) {
                let s = store.snapshots.layer(&c)?.map(|m| m.size).unwrap_or(0);
                total += s;
                if !used {
                    reclaimable += s;
                }
            }
        }
    }
    let active = images.iter().filter(|i| in_use.contains_key(&i.id)).count();
    let pct = |r: u64, t: u64| {
        (r * 100)
            .checked_div(t)
            .map(|p| format!(" ({p}%)"))
            .unwrap_or_default()
    };
    let mut t = Table::new(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
    t.row(vec![
        "Images".into(),
        images.len().to_string(),
        active.to_string(),
        human_size(total),
        format!("{}{}", human_size(reclaimable), pct(reclaimable, total)),
    ]);
    for kind in ["Containers", "Local Volumes", "Build Cache"] {
        t.row(vec![
            kind.into(),
            "0".into(),
            "0".into(),
            "0B".into(),
            "0B".into(),
        ]);
    }
    t.print()?;
    if a.verbose {
        println!("\nImages space usage:\n");
        let mut t = Table::new(&["REPOSITORY", "TAG", "IMAGE ID", "SIZE"]);
        for img in &images {
            let size = human_size(image_size(store, img));
            if img.names.is_empty() {
                t.row(vec![
                    "<none>".into(),
                    "<none>".into(),
                    img.id.short().into(),
                    size.clone(),
                ]);
            }
            for n in &img.names {
                t.row(vec![
                    n.familiar_name(),
                    n.tag().unwrap_or("<none>").into(),
                    img.id.short().into(),
                    size.clone(),
                ]);
            }
        }
        t.print()?;
    }
    Ok(())
}
