//! The `berth` command: docker's command names, flags, output and exit codes over
//! berth's libraries. Parsing and printing only; the work happens in the crates.

mod changes;
mod commands;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::container::{
    CommitArgs, ContainersArgs, CreateArgs, ExecArgs, ExportArgs, KillArgs, LogsArgs, OneArgs,
    PsArgs, RenameArgs, RmArgs, RunArgs, StartArgs, StatsArgs, StopArgs, TopArgs, VolumeCmd,
    WaitArgs,
};
use commands::image::{
    HistoryArgs, ImagesArgs, ImportArgs, InspectArgs, LoadArgs, PruneArgs, RmiArgs, SaveArgs,
    TagArgs,
};
use commands::system::{CheckArgs, DfArgs, SystemPruneArgs};

/// berth: build, run and share containers — docker's commands, without a daemon.
#[derive(Parser, Debug)]
#[command(name = "berth", disable_help_subcommand = true, max_term_width = 100)]
struct Cli {
    /// Where berth keeps images and containers [default: /var/lib/berth; for
    /// a user other than root, $XDG_DATA_HOME/berth or ~/.local/share/berth].
    #[arg(long, env = "BERTH_ROOT", global = true)]
    root: Option<PathBuf>,
    /// A berth (or docker) service to send the command to instead of using
    /// the store here: `unix:///path`, `tcp://host:port` or a socket path.
    #[arg(short = 'H', long = "host", env = "BERTH_HOST", value_name = "HOST")]
    host: Option<String>,
    /// Location of client config files (docker's: credentials in config.json).
    #[arg(long, value_name = "DIR")]
    config: Option<PathBuf>,
    /// Print version information and quit.
    #[arg(short = 'v', long)]
    version: bool,
    /// Enable debug mode (errors with their causes).
    #[arg(short = 'D', long, global = true)]
    debug: bool,
    /// Set the logging level ("debug"|"info"|"warn"|"error"|"fatal").
    #[arg(short = 'l', long, value_name = "LEVEL", default_value = "info",
          value_parser = ["debug", "info", "warn", "error", "fatal"])]
    log_level: String,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// `defer`: each subcommand's flags are made only when it is the one run
/// (building all of them took a millisecond of every command).
#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum Cmd {
    /// The monitor of a detached container (started by berth itself).
    #[command(name = "__monitor", hide = true)]
    Monitor {
        /// The container.
        id: String,
        /// The readiness pipe (a first start).
        fd: Option<i32>,
        /// The container exited with this code (the watcher's call).
        #[arg(long)]
        exited: Option<i32>,
        /// The restart backoff in milliseconds (with `--exited`).
        #[arg(long, default_value_t = berth_engine::run::INITIAL_DELAY_MS)]
        delay: u64,
    },
    /// One engine call for `system service` (see berth_api::helper).
    #[command(name = "__api-helper", hide = true)]
    ApiHelper {
        /// The request.
        args: Vec<String>,
    },
    /// Create and run a new container from an image.
    #[command(disable_help_flag = true)]
    Run(RunArgs),
    /// Create a new container.
    #[command(disable_help_flag = true)]
    Create(CreateArgs),
    /// Start one or more stopped containers.
    Start(StartArgs),
    /// List containers.
    #[command(alias = "ls")]
    Ps(PsArgs),
    /// Stop one or more running containers.
    Stop(StopArgs),
    /// Kill one or more running containers.
    Kill(KillArgs),
    /// Restart one or more containers.
    Restart(StopArgs),
    /// Remove one or more containers.
    Rm(RmArgs),
    /// Fetch the logs of a container.
    Logs(LogsArgs),
    /// Execute a command in a running container.
    Exec(ExecArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(WaitArgs),
    /// Display the running processes of a container.
    Top(TopArgs),
    /// Display a live stream of container resource usage statistics.
    Stats(StatsArgs),
    /// Pause all processes within one or more containers.
    Pause(ContainersArgs),
    /// Unpause all processes within one or more containers.
    Unpause(ContainersArgs),
    /// Inspect changes to files or directories on a container's filesystem.
    Diff(OneArgs),
    /// Create a new image from a container's changes.
    Commit(CommitArgs),
    /// Export a container's filesystem as a tar archive.
    Export(ExportArgs),
    /// Rename a container.
    Rename(RenameArgs),
    /// Update configuration of one or more containers.
    Update(commands::container::UpdateArgs),
    /// Attach to a running container's output.
    Attach(commands::container::AttachArgs),
    /// List port mappings of a container.
    Port(commands::container::PortArgs),
    /// Copy files between a container and the local filesystem.
    Cp(commands::container::CpArgs),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Manage networks.
    #[command(subcommand)]
    Network(commands::network::NetworkCmd),
    /// Build an image from a Dockerfile.
    Build(commands::build::BuildArgs),
    /// Manage the build cache.
    #[command(subcommand)]
    Builder(BuilderCmd),
    /// List images.
    Images(ImagesArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Create a tag TARGET that refers to SOURCE.
    Tag(TagArgs),
    /// Remove one or more images.
    Rmi(RmiArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Import a rootfs tarball as an image.
    Import(ImportArgs),
    /// Save images to a tar archive (streamed to stdout by default).
    Save(SaveArgs),
    /// Load images from a tar archive or stdin.
    Load(LoadArgs),
    /// Return low-level information on containers, images, volumes and networks.
    Inspect(ObjectInspectArgs),
    /// Manage berth.
    #[command(subcommand)]
    System(SystemCmd),
    /// Show berth's version (docker's client and server parts).
    Version(commands::system::VersionArgs),
    /// Generate the autocompletion script for the specified shell.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Display system-wide information.
    Info(commands::system::InfoArgs),
    /// Get real time events from the engine.
    Events(commands::system::EventsArgs),
    /// Log in to a registry.
    Login(commands::distribution::LoginArgs),
    /// Search a registry for images.
    Search(commands::distribution::SearchArgs),
    /// Manage manifest lists (images of several platforms under one name).
    #[command(subcommand)]
    Manifest(commands::manifest::ManifestCmd),
    /// Log out from a registry.
    Logout(commands::distribution::LogoutArgs),
    /// Download an image from a registry.
    Pull(commands::distribution::PullArgs),
    /// Upload an image to a registry.
    Push(commands::distribution::PushArgs),
    /// Run and manage a registry server.
    #[command(subcommand)]
    Registry(commands::registry::RegistryCmd),
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum ImageCmd {
    /// List images.
    #[command(visible_alias = "list")]
    Ls(ImagesArgs),
    /// Remove one or more images.
    #[command(visible_alias = "remove")]
    Rm(RmiArgs),
    /// Create a tag TARGET that refers to SOURCE.
    Tag(TagArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Import a rootfs tarball as an image.
    Import(ImportArgs),
    /// Save images to a tar archive.
    Save(SaveArgs),
    /// Load images from a tar archive or stdin.
    Load(LoadArgs),
    /// Display detailed information on images.
    Inspect(InspectArgs),
    /// Remove unused images.
    Prune(PruneArgs),
    /// Download an image from a registry.
    Pull(commands::distribution::PullArgs),
    /// Upload an image to a registry.
    Push(commands::distribution::PushArgs),
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum BuilderCmd {
    /// Remove build cache.
    Prune(commands::build::BuilderPruneArgs),
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum ContainerCmd {
    /// List containers.
    #[command(visible_alias = "list")]
    Ls(PsArgs),
    /// Create and run a new container.
    #[command(disable_help_flag = true)]
    Run(RunArgs),
    /// Create a new container.
    #[command(disable_help_flag = true)]
    Create(CreateArgs),
    /// Start containers.
    Start(StartArgs),
    /// Stop containers.
    Stop(StopArgs),
    /// Kill containers.
    Kill(KillArgs),
    /// Restart containers.
    Restart(StopArgs),
    /// Remove containers.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Fetch logs.
    Logs(LogsArgs),
    /// Execute a command in a running container.
    Exec(ExecArgs),
    /// Wait for containers to stop.
    Wait(WaitArgs),
    /// Display detailed information on containers.
    Inspect(ContainerInspectArgs),
    /// Display running processes.
    Top(TopArgs),
    /// Resource usage statistics.
    Stats(StatsArgs),
    /// Pause containers.
    Pause(ContainersArgs),
    /// Unpause containers.
    Unpause(ContainersArgs),
    /// Filesystem changes.
    Diff(OneArgs),
    /// Create an image from a container.
    Commit(CommitArgs),
    /// Export a container's filesystem.
    Export(ExportArgs),
    /// Rename a container.
    Rename(RenameArgs),
    /// Update limits and restart policy.
    Update(commands::container::UpdateArgs),
    /// Attach to a running container's output.
    Attach(commands::container::AttachArgs),
    /// Port mappings.
    Port(commands::container::PortArgs),
    /// Remove all stopped containers.
    Prune(commands::container::PruneArgs),
    /// Copy files between a container and the local filesystem.
    Cp(commands::container::CpArgs),
}

#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum SystemCmd {
    /// Show disk usage.
    Df(DfArgs),
    /// Verify every blob, image and layer in the store.
    Check(CheckArgs),
    /// Remove unused data.
    Prune(SystemPruneArgs),
    /// Serve docker's Engine API (the docker CLI, docker-py, Compose) on a socket.
    Service(commands::system::ServiceArgs),
    /// Start again the containers a reboot stopped, by their restart policies.
    Restore(commands::system::RestoreArgs),
    /// Remove the store and everything it made on the host (containers, bridges, rules).
    Reset {
        /// Do not prompt for confirmation.
        #[arg(short, long)]
        force: bool,
    },
    /// Display system-wide information.
    Info(commands::system::InfoArgs),
    /// Get real time events from the engine.
    Events(commands::system::EventsArgs),
    /// List, install or remove the emulators that run other machines' images.
    Emulators(commands::system::EmulatorsArgs),
    /// CDI devices: list them, or generate a spec for this host's NVIDIA GPUs.
    #[command(subcommand)]
    Cdi(commands::cdi::CdiCmd),
}

/// Dispatches a parsed command. Long on purpose: one arm per command (and
/// alias), each a call into `commands/`.
fn run(cli: Cli) -> anyhow::Result<()> {
    use commands::{container as ct, image, system};
    let config_dir = cli.config.as_deref();
    if cli.version {
        // docker -v: "Docker version 20.10.24, build 297e128".
        println!("berth version {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    // Servers and monitors outlive their clients: a peer that hangs up
    // mid-answer must cost that connection an EPIPE, never the process its
    // life (the default SIGPIPE above is for commands whose output is piped).
    if matches!(
        cli.cmd,
        Some(
            Cmd::System(SystemCmd::Service(_))
                | Cmd::Registry(commands::registry::RegistryCmd::Serve(_))
                | Cmd::Monitor { .. }
                | Cmd::ApiHelper { .. }
        )
    ) {
        // SAFETY: setting a disposition before any thread starts; the
        // runtime restores the default in every container process.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    }
    let Some(cmd) = cli.cmd else {
        // docker with no command: its usage, exit 0.
        use clap::CommandFactory;
        Cli::command().print_help()?;
        return Ok(());
    };
    let cmd = match cmd {
        // Also a hook inside a starting container: nothing else first.
        Cmd::System(SystemCmd::Cdi(c)) => return commands::cdi::run(c),
        Cmd::Completion { shell } => {
            use clap::CommandFactory;
            let mut c = Cli::command();
            clap_complete::generate(shell, &mut c, "berth", &mut std::io::stdout());
            return Ok(());
        }
        c if cli.host.as_deref().is_some_and(|h| !h.is_empty())
            && !matches!(c, Cmd::Monitor { .. } | Cmd::ApiHelper { .. }) =>
        {
            return commands::remote::run(cli.host.as_deref().unwrap_or_default(), c);
        }
        Cmd::Registry(c) => return commands::registry::run(c),
        Cmd::Login(a) => return commands::distribution::login(config_dir, a),
        Cmd::Search(a) => return commands::distribution::search(config_dir, a),
        Cmd::Manifest(c) => return commands::manifest::run(config_dir, c),
        Cmd::System(SystemCmd::Emulators(a)) => return commands::system::emulators(a),
        Cmd::Logout(a) => return commands::distribution::logout(config_dir, a),
        c => c,
    };
    // A user's berth: into their own namespaces first (rootless mode).
    berth_engine::rootless::enter().map_err(|e| commands::container::exit_err(1, e))?;
    let root = cli.root.clone().unwrap_or_else(|| {
        if berth_engine::rootless::active() {
            berth_engine::rootless::default_root()
        } else {
            PathBuf::from("/var/lib/berth")
        }
    });
    let mut engine = berth_engine::Engine::open(&root)?;
    berth_runtime::trace::mark("cli: store opened");
    engine.monitor_exe = std::env::current_exe().ok();
    engine.watch_exe = engine
        .monitor_exe
        .as_ref()
        .map(|e| e.with_file_name("berth-monitor"))
        .filter(|w| w.is_file());
    if let Cmd::ApiHelper { args } = &cmd {
        std::process::exit(berth_api::helper::main(&engine, args));
    }
    if let Cmd::Monitor {
        id,
        fd,
        exited,
        delay,
    } = &cmd
    {
        let code = match (fd, exited) {
            (_, Some(code)) => engine.resume_monitor(id, *code, *delay),
            (Some(fd), None) => {
                // SAFETY: the descriptor was passed on purpose by the starting berth.
                let ready =
                    unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(*fd) };
                engine.run_monitor(id, ready)
            }
            (None, None) => 2,
        };
        std::process::exit(code);
    }
    let store = &engine.store;
    match cmd {
        Cmd::Run(a) | Cmd::Container(ContainerCmd::Run(a)) => ct::run(&engine, a, config_dir),
        Cmd::Create(a) | Cmd::Container(ContainerCmd::Create(a)) => {
            ct::create(&engine, a, config_dir)
        }
        Cmd::Start(a) | Cmd::Container(ContainerCmd::Start(a)) => ct::start(&engine, a),
        Cmd::Ps(a) | Cmd::Container(ContainerCmd::Ls(a)) => ct::ps(&engine, a),
        Cmd::Stop(a) | Cmd::Container(ContainerCmd::Stop(a)) => ct::stop(&engine, a),
        Cmd::Kill(a) | Cmd::Container(ContainerCmd::Kill(a)) => ct::kill(&engine, a),
        Cmd::Restart(a) | Cmd::Container(ContainerCmd::Restart(a)) => ct::restart(&engine, a),
        Cmd::Rm(a) | Cmd::Container(ContainerCmd::Rm(a)) => ct::rm(&engine, a),
        Cmd::Logs(a) | Cmd::Container(ContainerCmd::Logs(a)) => ct::logs(&engine, a),
        Cmd::Exec(a) | Cmd::Container(ContainerCmd::Exec(a)) => ct::exec(&engine, a),
        Cmd::Wait(a) | Cmd::Container(ContainerCmd::Wait(a)) => ct::wait(&engine, a),
        Cmd::Top(a) | Cmd::Container(ContainerCmd::Top(a)) => ct::top(&engine, a),
        Cmd::Stats(a) | Cmd::Container(ContainerCmd::Stats(a)) => ct::stats(&engine, a),
        Cmd::Pause(a) | Cmd::Container(ContainerCmd::Pause(a)) => ct::pause(&engine, a),
        Cmd::Unpause(a) | Cmd::Container(ContainerCmd::Unpause(a)) => ct::unpause(&engine, a),
        Cmd::Diff(a) | Cmd::Container(ContainerCmd::Diff(a)) => ct::diff(&engine, a),
        Cmd::Commit(a) | Cmd::Container(ContainerCmd::Commit(a)) => ct::commit(&engine, a),
        Cmd::Export(a) | Cmd::Container(ContainerCmd::Export(a)) => ct::export(&engine, a),
        Cmd::Rename(a) | Cmd::Container(ContainerCmd::Rename(a)) => ct::rename(&engine, a),
        Cmd::Port(a) | Cmd::Container(ContainerCmd::Port(a)) => ct::port(&engine, a),
        Cmd::Update(a) | Cmd::Container(ContainerCmd::Update(a)) => ct::update(&engine, a),
        Cmd::Attach(a) | Cmd::Container(ContainerCmd::Attach(a)) => ct::attach(&engine, a),
        Cmd::Container(ContainerCmd::Prune(a)) => ct::prune(&engine, a),
        Cmd::Cp(a) | Cmd::Container(ContainerCmd::Cp(a)) => ct::cp(&engine, a),
        Cmd::Container(ContainerCmd::Inspect(a)) => inspect_containers(&engine, a),
        Cmd::Volume(c) => ct::volume(&engine, c),
        Cmd::Network(c) => commands::network::network(&engine, c),
        Cmd::Monitor { .. } | Cmd::ApiHelper { .. } => unreachable!("handled above"),
        Cmd::Build(a) => commands::build::build(&engine, a, config_dir),
        Cmd::Pull(a) | Cmd::Image(ImageCmd::Pull(a)) => {
            commands::distribution::pull(store, config_dir, a)
        }
        Cmd::Push(a) | Cmd::Image(ImageCmd::Push(a)) => {
            commands::distribution::push(store, config_dir, a)
        }
        Cmd::Builder(BuilderCmd::Prune(a)) => commands::build::prune(&engine, a),
        Cmd::Images(a) | Cmd::Image(ImageCmd::Ls(a)) => image::images(store, a),
        Cmd::Tag(a) | Cmd::Image(ImageCmd::Tag(a)) => image::tag(store, a),
        Cmd::Rmi(a) | Cmd::Image(ImageCmd::Rm(a)) => image::rmi(&engine, a),
        Cmd::History(a) | Cmd::Image(ImageCmd::History(a)) => image::history(store, a),
        Cmd::Import(a) | Cmd::Image(ImageCmd::Import(a)) => image::import(store, a),
        Cmd::Save(a) | Cmd::Image(ImageCmd::Save(a)) => image::save(store, a),
        Cmd::Load(a) | Cmd::Image(ImageCmd::Load(a)) => image::load(store, a),
        Cmd::Image(ImageCmd::Inspect(a)) => image::inspect(store, a),
        Cmd::Inspect(a) => inspect_any(&engine, a),
        Cmd::Registry(_)
        | Cmd::Login(_)
        | Cmd::Logout(_)
        | Cmd::Search(_)
        | Cmd::Manifest(_)
        | Cmd::System(SystemCmd::Emulators(_))
        | Cmd::System(SystemCmd::Cdi(_))
        | Cmd::Completion { .. } => {
            unreachable!("handled before the engine opens")
        }
        Cmd::Image(ImageCmd::Prune(a)) => image::prune(store, a),
        Cmd::System(SystemCmd::Df(a)) => system::df(&engine, a),
        Cmd::System(SystemCmd::Check(a)) => system::check(&engine, a),
        Cmd::System(SystemCmd::Prune(a)) => system::prune(&engine, a),
        Cmd::System(SystemCmd::Service(a)) => system::service(&root, config_dir, a),
        Cmd::System(SystemCmd::Restore(a)) => system::restore(&engine, a),
        Cmd::System(SystemCmd::Reset { force }) => {
            if !force
                && !image::confirm(
                    "WARNING! This will remove every container (running ones too), image, volume,\nnetwork and build cache record of this store, and its bridges and rules on the host.",
                )
            {
                return Ok(());
            }
            engine.reset()?;
            Ok(())
        }
        Cmd::System(SystemCmd::Info(a)) | Cmd::Info(a) => system::info(&engine, a),
        Cmd::System(SystemCmd::Events(a)) | Cmd::Events(a) => system::events(&engine, a),
        Cmd::Version(a) => system::version(a),
    }
}

// `inspect`: containers first, then images, as docker looks them up.
// `inspect`'s options.
#[derive(clap::Args, Debug)]
struct ObjectInspectArgs {
    /// Containers, images, volumes or networks.
    #[arg(required = true)]
    names: Vec<String>,
    /// Go template.
    #[arg(short, long)]
    format: Option<String>,
    /// Display total file sizes if the type is container.
    #[arg(short, long)]
    size: bool,
    /// Return JSON for specified type.
    #[arg(long = "type", value_parser = ["container", "image", "volume", "network"])]
    typ: Option<String>,
}

// `container inspect`'s options.
#[derive(clap::Args, Debug)]
struct ContainerInspectArgs {
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
    /// Go template.
    #[arg(short, long)]
    format: Option<String>,
    /// Display total file sizes.
    #[arg(short, long)]
    size: bool,
}

/// A container's inspect document, with docker's SizeRw/SizeRootFs when asked.
fn container_value(
    engine: &berth_engine::Engine,
    q: &str,
    size: bool,
) -> Option<serde_json::Value> {
    let c = engine.find(q).ok()?;
    let mut v = engine.inspect_json(&c);
    if size {
        let (rw, root) = berth_engine::docs::container_sizes(engine, &c);
        v["SizeRw"] = rw.into();
        v["SizeRootFs"] = root.into();
    }
    Some(v)
}

/// `inspect`: the first kind of object the name finds, in docker's order
/// (container, image, volume, network), or only the `--type` asked.
fn inspect_any(engine: &berth_engine::Engine, a: ObjectInspectArgs) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    let want = |t: &str| a.typ.as_deref().is_none_or(|w| w == t);
    for q in &a.names {
        let found = want("container")
            .then(|| container_value(engine, q, a.size))
            .flatten()
            .or_else(|| {
                want("image")
                    .then(|| engine.store.resolve(q).ok())
                    .flatten()
                    .map(|img| commands::image::inspect_json(&engine.store, &img))
            })
            .or_else(|| {
                want("volume")
                    .then(|| engine.volume_inspect(q).ok())
                    .flatten()
                    .and_then(|v| serde_json::to_value(v).ok())
            })
            .or_else(|| {
                want("network")
                    .then(|| engine.network_find(q).ok())
                    .flatten()
                    .and_then(|n| berth_engine::docs::network_inspect(engine, &n).ok())
            });
        match found {
            Some(v) => out.push(v),
            None => missing.push(q.clone()),
        }
    }
    print_and_fail(
        out,
        missing,
        a.format.as_deref(),
        a.typ.as_deref().unwrap_or("object"),
    )
}

fn inspect_containers(
    engine: &berth_engine::Engine,
    a: ContainerInspectArgs,
) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for q in &a.containers {
        match container_value(engine, q, a.size) {
            Some(v) => out.push(v),
            None => missing.push(q.clone()),
        }
    }
    print_and_fail(out, missing, a.format.as_deref(), "container")
}

fn print_and_fail(
    out: Vec<serde_json::Value>,
    missing: Vec<String>,
    format: Option<&str>,
    what: &str,
) -> anyhow::Result<()> {
    if !out.is_empty() || format.is_none() {
        commands::image::print_inspect(out, format)?;
    }
    if !missing.is_empty() {
        for m in &missing {
            eprintln!("Error: No such {what}: {m}");
        }
        std::process::exit(1);
    }
    Ok(())
}

fn main() -> ExitCode {
    berth_runtime::trace::mark("cli: start");
    // Behave like other Unix tools when stdout is a closed pipe (`berth images | head`).
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse_from(stop_at_command(std::env::args().collect())) {
        Ok(c) => {
            berth_runtime::trace::mark("cli: arguments parsed");
            c
        }
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    ExitCode::from(125)
                }
                // docker: a missing argument ("requires at least 1
                // argument") exits 1; other usage errors are flag errors, 125.
                ErrorKind::MissingRequiredArgument | ErrorKind::TooFewValues => {
                    let _ = e.print();
                    ExitCode::from(1)
                }
                // Usage errors exit 125, as docker's flag errors do.
                _ => {
                    let _ = e.print();
                    ExitCode::from(125)
                }
            };
        }
    };
    let debug = cli.debug;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if debug && e.downcast_ref::<commands::container::ExitError>().is_none() => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            // A rootless store without the ids an image's files need: the
            // error as always, then how to get them.
            let hint = format!("{e:#}")
                .contains(berth_store::archive::apply::UNMAPPED)
                .then(berth_engine::rootless::unmapped_owner_hint)
                .flatten();
            let code = report(&e);
            if let Some(h) = hint {
                eprintln!("{h}");
            }
            code
        }
    }
}

/// Prints a command's error in berth's one style; its exit code.
fn report(e: &anyhow::Error) -> ExitCode {
    match e.downcast_ref::<commands::container::ExitError>() {
        Some(x) => {
            // One style for every error: `Error: …` (berth has no daemon
            // to blame); BuildKit's `ERROR: …` of a build stays as it is.
            if x.msg.starts_with("ERROR") || x.msg.starts_with("Error") {
                eprintln!("{}", x.msg);
            } else if !x.msg.is_empty() {
                eprintln!("Error: {}", x.msg);
            }
            ExitCode::from(x.code)
        }
        None => {
            eprintln!("Error: {}", chain(e));
            ExitCode::FAILURE
        }
    }
}

/// docker stops reading its own flags at the image of `run`/`create` (and the
/// container of `exec`): `berth run img -c x` passes `-c x` to the container.
/// clap would take `-c` as a flag of berth's, so a `--` goes in after that
/// positional, found by walking the flags the subcommand knows.
fn stop_at_command(mut args: Vec<String>) -> Vec<String> {
    use clap::CommandFactory;
    // Find the subcommand path, skipping global flags before it.
    let mut cmd = Cli::command();
    // The global flags (`--root DIR`, `-D`) may come after the subcommand
    // too; clap gives them to every subcommand only as it parses.
    let globals = clap::Command::new("globals").args(
        cmd.get_arguments()
            .filter(|a| a.is_global_set())
            .cloned()
            .collect::<Vec<_>>(),
    );
    let mut i = 1;
    let mut found = false;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            return args;
        }
        if a.starts_with('-') {
            i += if takes_value(&cmd, a) && !a.contains('=') {
                2
            } else {
                1
            };
            continue;
        }
        match cmd.find_subcommand(a).cloned() {
            Some(mut sub) => {
                // Subcommands are built when parsed (`defer`, so a command
                // does not build the other hundred): this one's flags are
                // wanted now.
                sub.build();
                cmd = sub;
                i += 1;
                if matches!(cmd.get_name(), "run" | "create" | "exec") {
                    found = true;
                    break;
                }
            }
            None => return args,
        }
    }
    if !found {
        return args;
    }
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            return args;
        }
        if a.starts_with('-') && a.len() > 1 {
            let own = takes_value(&cmd, a) && !attached_value(&cmd, a);
            let global = takes_value(&globals, a) && !attached_value(&globals, a);
            i += if own || global { 2 } else { 1 };
            continue;
        }
        // The image (or the container): everything after it is the command.
        if i + 1 < args.len() && args[i + 1] != "--" {
            args.insert(i + 1, "--".to_string());
        }
        return args;
    }
    args
}

/// Whether flag token `a` (`--name`, `-e`, `-it`) ends in a flag that takes a value.
fn takes_value(cmd: &clap::Command, a: &str) -> bool {
    let arg_takes = |arg: &clap::Arg| arg.get_action().takes_values();
    if let Some(long) = a.strip_prefix("--") {
        let long = long.split('=').next().unwrap_or(long);
        return cmd
            .get_arguments()
            .find(|x| {
                x.get_long() == Some(long)
                    || x.get_all_aliases().is_some_and(|al| al.contains(&long))
            })
            .is_some_and(arg_takes);
    }
    // A cluster of shorts: the first that takes a value swallows the rest.
    for c in a.trim_start_matches('-').chars() {
        if let Some(arg) = cmd.get_arguments().find(|x| x.get_short() == Some(c)) {
            if arg_takes(arg) {
                return true;
            }
        } else {
            return false;
        }
    }
    false
}

/// Whether the value is in the same token (`--name=x`, `-ex`, `-uroot`).
fn attached_value(cmd: &clap::Command, a: &str) -> bool {
    if a.starts_with("--") {
        return a.contains('=');
    }
    let chars: Vec<char> = a.trim_start_matches('-').chars().collect();
    for (k, c) in chars.iter().enumerate() {
        if let Some(arg) = cmd.get_arguments().find(|x| x.get_short() == Some(*c))
            && arg.get_action().takes_values()
        {
            return k + 1 < chars.len();
        }
    }
    false
}

/// `outer: inner: innermost`, skipping repeats (thiserror's transparent wrappers).
fn chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if parts.last().is_none_or(|p| !p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// docker's rule: berth's flags end at the image (or, for exec, the
    /// container); a `--` goes in after it. Subcommands are built lazily,
    /// so this also checks each one's flags are seen when walked into.
    #[test]
    fn the_command_starts_after_the_image() {
        let split = |line: &str| -> String {
            let args = std::iter::once("berth")
                .chain(line.split(' '))
                .map(String::from)
                .collect();
            super::stop_at_command(args)[1..].join(" ")
        };
        assert_eq!(
            split("run -e A=1 base sh -c ls"),
            "run -e A=1 base -- sh -c ls"
        );
        assert_eq!(
            split("run -it --name x base sh"),
            "run -it --name x base -- sh"
        );
        assert_eq!(
            split("container run -uroot base id -u"),
            "container run -uroot base -- id -u"
        );
        assert_eq!(
            split("--root /r run --rm base true"),
            "--root /r run --rm base -- true"
        );
        // A global flag after the subcommand takes its value there too.
        assert_eq!(
            split("run --root /r -e A=1 base env"),
            "run --root /r -e A=1 base -- env"
        );
        assert_eq!(split("exec -w /tmp c1 ls -l"), "exec -w /tmp c1 -- ls -l");
        assert_eq!(split("run base"), "run base");
        assert_eq!(split("ps -a"), "ps -a");
        assert_eq!(split("run -- base ls"), "run -- base ls");
    }
}
