//! `system cdi`: the CDI devices this host offers (`list`), a spec for its
//! NVIDIA GPUs written from the driver (`generate`, as `nvidia-ctk cdi
//! generate`), and the hooks such a spec runs in a starting container
//! (`hook create-symlinks`, `hook update-ldcache`; the logic is
//! `berth_cdi::nvidia`'s).

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::Subcommand;

/// `system cdi` commands.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum CdiCmd {
    /// List the CDI devices the spec directories define.
    #[command(alias = "ls")]
    List,
    /// Write a CDI spec for this host's NVIDIA GPUs, read from the driver.
    Generate {
        /// Where to write it (default: stdout); `/etc/cdi/nvidia.yaml` makes
        /// it the host's.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The root the driver is installed under.
        #[arg(long, default_value = "/")]
        driver_root: PathBuf,
    },
    /// A hook a CDI spec runs in a starting container (reads the OCI state on stdin).
    #[command(hide = true, subcommand)]
    Hook(HookCmd),
}

/// The hooks.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum HookCmd {
    /// Make `target::link` symlinks inside the container.
    CreateSymlinks {
        /// `target::link`.
        #[arg(long)]
        link: Vec<String>,
    },
    /// Add folders to the container's loader configuration and refresh its cache.
    UpdateLdcache {
        /// A folder of libraries.
        #[arg(long)]
        folder: Vec<String>,
    },
}

/// Runs a `system cdi` command.
pub fn run(c: CdiCmd) -> anyhow::Result<()> {
    match c {
        CdiCmd::List => {
            let (dirs, names, errors) = berth_engine::devices::discovered();
            for n in &names {
                println!("{n}");
            }
            for e in &errors {
                eprintln!("berth: CDI spec not read: {e}");
            }
            if names.is_empty() {
                eprintln!(
                    "berth: no CDI devices in {}",
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Ok(())
        }
        CdiCmd::Generate {
            output,
            driver_root,
        } => {
            let program = std::env::current_exe().context("the berth binary")?;
            let spec = berth_cdi::nvidia::generate(&driver_root, &program)?;
            let yaml = berth_cdi::spec::to_yaml(&spec);
            match output {
                None => print!("{yaml}"),
                Some(p) => {
                    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::create_dir_all(dir)
                            .with_context(|| format!("create {}", dir.display()))?;
                    }
                    berth_fs::atomic_write(&p, yaml.as_bytes())?;
                    let n = spec.devices.len();
                    eprintln!("Generated CDI spec with {n} devices: {}", p.display());
                }
            }
            Ok(())
        }
        CdiCmd::Hook(h) => {
            let mut state = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut state)?;
            let rootfs = berth_cdi::nvidia::rootfs_from_state(&state).map_err(|e| anyhow!(e))?;
            match h {
                HookCmd::CreateSymlinks { link } => {
                    berth_cdi::nvidia::create_symlinks(&rootfs, &link)
                }
                HookCmd::UpdateLdcache { folder } => {
                    berth_cdi::nvidia::update_ldcache(&rootfs, &folder)
                }
            }
            .map_err(|e| anyhow!(e))
        }
    }
}
