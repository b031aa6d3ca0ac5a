//! `network create|ls|inspect|rm|prune`, with docker's columns and messages.

use berth_engine::Engine;
use serde_json::{Value, json};

use crate::commands::container::exit_err;
use crate::output::{Format, Table, print_items};

/// `network` subcommands.
#[derive(clap::Subcommand, Debug)]
#[command(defer = true)]
pub enum NetworkCmd {
    /// Create a network.
    Create {
        /// Driver (only `bridge`).
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR format (`172.30.0.0/16`).
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway for the subnet.
        #[arg(long)]
        gateway: Option<String>,
        /// Restrict external access to the network.
        #[arg(long)]
        internal: bool,
        /// Set metadata on a network.
        #[arg(long)]
        label: Vec<String>,
        /// The name.
        name: String,
    },
    /// List networks.
    #[command(visible_alias = "list")]
    Ls {
        /// Only display network IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Do not truncate the output.
        #[arg(long)]
        no_trunc: bool,
        /// `table`, `json` or a Go template.
        #[arg(long)]
        format: Option<String>,
        /// Filter output (`driver=`, `id=`, `label=`, `name=`, `type=custom`, `dangling=true`).
        #[arg(short, long)]
        filter: Vec<String>,
    },
    /// Display detailed information on one or more networks.
    Inspect {
        /// Networks.
        #[arg(required = true)]
        networks: Vec<String>,
        /// Go template.
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Remove one or more networks.
    #[command(visible_alias = "remove")]
    Rm {
        /// Networks.
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Connect a container to a network.
    Connect {
        /// IPv4 address (e.g., 172.30.100.104).
        #[arg(long)]
        ip: Option<String>,
        /// Add network-scoped alias for the container.
        #[arg(long)]
        alias: Vec<String>,
        /// The network.
        network: String,
        /// The container.
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        /// Force the container to disconnect from a network.
        #[arg(short, long)]
        force: bool,
        /// The network.
        network: String,
        /// The container.
        container: String,
    },
    /// Remove all unused networks.
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

fn inspect_value(engine: &Engine, n: &berth_engine::network::Network) -> anyhow::Result<Value> {
    Ok(berth_engine::docs::network_inspect(engine, n)?)
}

/// `network …`. Long on purpose: one arm per subcommand (create, ls,
/// inspect, rm, prune, connect, disconnect), each parsing and printing.
pub fn network(engine: &Engine, cmd: NetworkCmd) -> anyhow::Result<()> {
    let daemon = |e: berth_engine::EngineError| exit_err(1, e.to_string());
    match cmd {
        NetworkCmd::Create {
            driver,
            subnet,
            gateway,
            internal,
            label,
            name,
        } => {
            if driver != "bridge" {
                return Err(exit_err(
                    1,
                    format!("plugin \"{driver}\" not found (berth has the bridge driver)"),
                ));
            }
            let labels = label
                .iter()
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                    (k.to_string(), v.to_string())
                })
                .collect();
            let n = engine
                .network_create(
                    &name,
                    subnet.as_deref(),
                    gateway.as_deref(),
                    internal,
                    labels,
                )
                .map_err(daemon)?;
            println!("{}", n.id);
        }
        NetworkCmd::Ls {
            quiet,
            no_trunc,
            format,
            filter,
        } => {
            let f = berth_engine::objfilter::ObjFilters::from_flags(
                &filter,
                berth_engine::objfilter::NETWORK_KEYS,
            )
            .map_err(daemon)?;
            let nets = engine.networks_filtered(&f).map_err(daemon)?;
            let id = |s: &str| {
                if no_trunc {
                    s.to_string()
                } else {
                    s[..12].to_string()
                }
            };
            if quiet {
                for n in &nets {
                    println!("{}", id(&n.id));
                }
                return Ok(());
            }
            let items: Vec<Value> = nets
                .iter()
                .map(|n| json!({"ID": id(&n.id), "Name": n.name, "Driver": n.driver, "Scope": "local", "Internal": n.internal.to_string(), "CreatedAt": n.created}))
                .collect();
            print_items(&Format::parse(format.as_deref())?, &items, |items| {
                let mut t = Table::new(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
                for i in items {
                    t.row(
                        ["ID", "Name", "Driver", "Scope"]
                            .iter()
                            .map(|k| i[*k].as_str().unwrap_or_default().to_string())
                            .collect(),
                    );
                }
                t
            })?;
        }
        NetworkCmd::Inspect { networks, format } => {
            let mut out = Vec::new();
            for q in &networks {
                let n = engine
                    .network_find(q)
                    .map_err(|_| exit_err(1, format!("network {q} not found")))?;
                out.push(inspect_value(engine, &n)?);
            }
            crate::commands::image::print_inspect(out, format.as_deref())?;
        }
        NetworkCmd::Rm { networks } => {
            let mut failed = false;
            for q in &networks {
                match engine.network_remove(q) {
                    Ok(_) => println!("{q}"),
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
        NetworkCmd::Connect {
            ip,
            alias,
            network,
            container,
        } => engine
            .network_connect(&container, &network, ip.as_deref(), &alias)
            .map_err(daemon)?,
        NetworkCmd::Disconnect {
            force: _,
            network,
            container,
        } => engine
            .network_disconnect(&container, &network)
            .map_err(daemon)?,
        NetworkCmd::Prune { force } => {
            if !force
                && !crate::commands::image::confirm(
                    "WARNING! This will remove all custom networks not used by at least one container.",
                )
            {
                return Ok(());
            }
            let removed = engine.network_prune().map_err(daemon)?;
            if !removed.is_empty() {
                println!("Deleted Networks:");
                for n in removed {
                    println!("{n}");
                }
            }
        }
    }
    Ok(())
}
