//! The `berth` command: docker's command names, flags, output and exit codes over
//! berth's libraries. Parsing and printing only; the work happens in the crates.

mod changes;
mod commands;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::image::{
    HistoryArgs, ImagesArgs, ImportArgs, InspectArgs, LoadArgs, PruneArgs, RmiArgs, SaveArgs,
    TagArgs,
};
use commands::system::{CheckArgs, DfArgs};

/// berth: build, run and share containers — docker's commands, without a daemon.
#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    disable_help_subcommand = true,
    max_term_width = 100
)]
struct Cli {
    /// Where berth keeps images and containers.
    #[arg(
        long,
        env = "BERTH_ROOT",
        default_value = "/var/lib/berth",
        global = true
    )]
    root: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
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
    /// Return low-level information on images.
    Inspect(InspectArgs),
    /// Manage berth.
    #[command(subcommand)]
    System(SystemCmd),
}

#[derive(Subcommand, Debug)]
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
}

#[derive(Subcommand, Debug)]
enum SystemCmd {
    /// Show disk usage.
    Df(DfArgs),
    /// Verify every blob, image and layer in the store.
    Check(CheckArgs),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    use commands::{image, system};
    let store = berth_store::Store::open(&cli.root)?;
    match cli.cmd {
        Cmd::Images(a) | Cmd::Image(ImageCmd::Ls(a)) => image::images(&store, a),
        Cmd::Tag(a) | Cmd::Image(ImageCmd::Tag(a)) => image::tag(&store, a),
        Cmd::Rmi(a) | Cmd::Image(ImageCmd::Rm(a)) => image::rmi(&store, a),
        Cmd::History(a) | Cmd::Image(ImageCmd::History(a)) => image::history(&store, a),
        Cmd::Import(a) | Cmd::Image(ImageCmd::Import(a)) => image::import(&store, a),
        Cmd::Save(a) | Cmd::Image(ImageCmd::Save(a)) => image::save(&store, a),
        Cmd::Load(a) | Cmd::Image(ImageCmd::Load(a)) => image::load(&store, a),
        Cmd::Inspect(a) | Cmd::Image(ImageCmd::Inspect(a)) => image::inspect(&store, a),
        Cmd::Image(ImageCmd::Prune(a)) => image::prune(&store, a),
        Cmd::System(SystemCmd::Df(a)) => system::df(&store, a),
        Cmd::System(SystemCmd::Check(a)) => system::check(&store, a),
    }
}

fn main() -> ExitCode {
    // Behave like other Unix tools when stdout is a closed pipe (`berth images | head`).
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
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
                // Usage errors exit 125, as docker's flag errors do.
                _ => {
                    let _ = e.print();
                    ExitCode::from(125)
                }
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
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
