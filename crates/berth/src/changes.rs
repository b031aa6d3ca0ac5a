//! `--change` for import (and later commit): delegates to the builder's
//! metadata dispatch, so a change means exactly what the same Dockerfile line means.

use berth_types::ImageConfig;

/// Applies one `--change` instruction to `config`.
pub fn apply_change(config: &mut ImageConfig, change: &str) -> anyhow::Result<()> {
    berth_build::dispatch::apply_change(config, change)
        .map_err(|e| anyhow::anyhow!("--change {change:?}: {e}"))
}
