//! `volume` and its subcommands.

use super::*;

/// `volume` subcommands.
#[derive(clap::Subcommand, Debug)]
#[command(defer = true)]
pub enum VolumeCmd {
    /// Create a volume.
    Create {
        /// Set metadata for a volume (`key=value`).
        #[arg(long)]
        label: Vec<String>,
        /// Volume driver name (only `local`).
        #[arg(short, long, default_value = "local")]
        driver: String,
        /// The name (random when omitted).
        name: Option<String>,
    },
    /// List volumes.
    #[command(visible_alias = "list")]
    Ls {
        /// Only display volume names.
        #[arg(short, long)]
        quiet: bool,
        /// `table`, `json` or a Go template.
        #[arg(long)]
        format: Option<String>,
        /// Filter output (`dangling=true`, `driver=`, `label=`, `name=`).
        #[arg(short, long)]
        filter: Vec<String>,
    },
    /// Display detailed information on volumes.
    Inspect {
        /// Volumes.
        #[arg(required = true)]
        volumes: Vec<String>,
        /// Go template.
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Remove volumes.
    #[command(visible_alias = "remove")]
    Rm {
        /// Force the removal.
        #[arg(short, long)]
        force: bool,
        /// Volumes.
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove unused volumes.
    Prune {
        /// Remove all unused volumes, not just anonymous ones.
        #[arg(short, long)]
        all: bool,
        /// Do not prompt for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

/// `volume …`.
pub fn volume(engine: &Engine, cmd: VolumeCmd) -> anyhow::Result<()> {
    match cmd {
        VolumeCmd::Create {
            label,
            driver,
            name,
        } => {
            if driver != "local" {
                return Err(exit_err(
                    1,
                    format!(
                        "create {}: error looking up volume plugin {driver}: plugin \"{driver}\" not found",
                        name.as_deref().unwrap_or("")
                    ),
                ));
            }
            let labels = label
                .iter()
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                    (k.to_string(), v.to_string())
                })
                .collect();
            let n = name.unwrap_or_else(berth_engine::container::new_id);
            println!("{}", engine.volume_create_with(&n, &labels)?.name);
        }
        VolumeCmd::Ls {
            quiet,
            format,
            filter,
        } => {
            let f = berth_engine::objfilter::ObjFilters::from_flags(
                &filter,
                berth_engine::objfilter::VOLUME_KEYS,
            )
            .map_err(|e| exit_err(1, e.to_string()))?;
            let vols = engine.volumes_filtered(&f)?;
            if quiet {
                for v in &vols {
                    println!("{}", v.name);
                }
                return Ok(());
            }
            let items: Vec<Value> = vols.iter().map(|v| json!({"Driver": v.driver, "Name": v.name, "Mountpoint": v.mountpoint, "Scope": v.scope})).collect();
            print_items(&Format::parse(format.as_deref())?, &items, |items| {
                let mut t = Table::new(&["DRIVER", "VOLUME NAME"]);
                for i in items {
                    t.row(vec![
                        i["Driver"].as_str().unwrap_or_default().into(),
                        i["Name"].as_str().unwrap_or_default().into(),
                    ]);
                }
                t
            })?;
        }
        VolumeCmd::Inspect { volumes, format } => {
            let mut out = Vec::new();
            for v in &volumes {
                out.push(serde_json::to_value(engine.volume_inspect(v).map_err(
                    |_| exit_err(1, format!("Error: No such volume: {v}")),
                )?)?);
            }
            crate::commands::image::print_inspect(out, format.as_deref())?;
        }
        VolumeCmd::Rm { force, volumes } => {
            let mut failed = false;
            for v in &volumes {
                match engine.volume_remove(v, force) {
                    Ok(()) => println!("{v}"),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Err(exit_err(1, String::new()));
            }
        }
        VolumeCmd::Prune { all, force } => {
            if !force
                && !crate::commands::image::confirm(
                    "WARNING! This will remove anonymous local volumes not used by at least one container.",
                )
            {
                return Ok(());
            }
            crate::output::print_deleted("Volumes", &engine.volume_prune(all)?);
            println!("Total reclaimed space: 0B");
        }
    }
    Ok(())
}
