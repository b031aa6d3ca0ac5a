//! `berth registry …`: run the registry server and manage its accounts.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use berth_registry::server::auth::AuthStore;
use berth_registry::server::{self, Config};
use clap::{Args, Subcommand};

use crate::output::{Table, human_size};

// Where the registry keeps its data (shared by every `registry` subcommand).
#[derive(Args, Debug, Clone)]
pub struct Where {
    /// Storage: a directory [default: /var/lib/berth-registry], or
    /// s3://BUCKET[/PREFIX] for S3-compatible object storage that several
    /// replicas may share.
    #[arg(long)]
    pub storage: Option<PathBuf>,
    /// TOML config file (keys as the flags: addr, storage, public, tls_cert, …).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory of accounts, tokens and keys [default: the storage
    /// directory; /var/lib/berth-registry with object storage].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// S3 endpoint URL [env: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL; default: AWS].
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// S3 region [env: AWS_REGION, AWS_DEFAULT_REGION; default: us-east-1].
    #[arg(long)]
    pub s3_region: Option<String>,
    /// S3 access key id [env: AWS_ACCESS_KEY_ID].
    #[arg(long)]
    pub s3_access_key_id: Option<String>,
    /// File holding the S3 secret key [default: AWS_SECRET_ACCESS_KEY].
    #[arg(long)]
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// Virtual-host-style bucket addressing (bucket.host) instead of path style.
    #[arg(long)]
    pub s3_virtual_host: bool,
    /// Answer blob downloads with a redirect to a presigned URL of the
    /// object store, so the bytes do not go through the registry (clients
    /// must reach the store's endpoint).
    #[arg(long)]
    pub s3_redirect: bool,
}

impl Where {
    fn config(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(p) => {
                Config::from_file(p).map_err(|e| anyhow!("reading the registry config {e}"))?
            }
            None => Config::default(),
        };
        if let Some(s) = &self.storage {
            c.storage = s.clone();
        }
        if let Some(d) = &self.state_dir {
            c.state_dir = Some(d.clone());
        }
        let o = &mut c.s3;
        o.endpoint = self.s3_endpoint.clone().or(o.endpoint.take());
        o.region = self.s3_region.clone().or(o.region.take());
        o.access_key_id = self.s3_access_key_id.clone().or(o.access_key_id.take());
        o.secret_access_key_file = self
            .s3_secret_access_key_file
            .clone()
            .or(o.secret_access_key_file.take());
        o.virtual_host |= self.s3_virtual_host;
        o.redirect |= self.s3_redirect;
        Ok(c)
    }

    fn auth(&self) -> anyhow::Result<AuthStore> {
        let state = self.config()?.state();
        berth_registry::server::auth::private_dir(&state)
            .with_context(|| format!("creating {}", state.display()))?;
        AuthStore::open(&state).with_context(|| format!("opening {}", state.display()))
    }
}

/// `registry` subcommands.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum RegistryCmd {
    /// Run an OCI distribution registry (a Docker Hub for your team).
    Serve(ServeArgs),
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage access tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Remove blobs no manifest references (mark and sweep).
    Gc(GcArgs),
}

// `registry serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub at: Where,
    /// Address to listen on [default: 127.0.0.1:5000].
    #[arg(long)]
    pub addr: Option<String>,
    /// TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Let anyone pull every repository (accounts still needed to push).
    #[arg(long)]
    pub public: bool,
    /// No accounts at all: anyone may pull, push and delete (a throwaway or
    /// firewalled registry). Without it a registry with no accounts is closed.
    #[arg(long, conflicts_with = "public")]
    pub open: bool,
    /// Who may make an account on the web pages: closed (only
    /// `registry user add` and admins), invite (with a code an admin made),
    /// open (anyone).
    #[arg(long, value_parser = ["closed", "invite", "open"])]
    pub signup: Option<String>,
    /// Do not log requests.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `registry user …`.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum UserCmd {
    /// Add an account (or set its password).
    Add(UserAddArgs),
    /// Remove an account and its tokens.
    Rm(UserRmArgs),
    /// List accounts.
    Ls(Where),
}

// `registry user add`.
#[derive(Args, Debug)]
pub struct UserAddArgs {
    #[command(flatten)]
    pub at: Where,
    /// The account name (it owns the repositories under NAME/).
    pub name: String,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// May push and pull everywhere.
    #[arg(long)]
    pub admin: bool,
}

// `registry user rm`.
#[derive(Args, Debug)]
pub struct UserRmArgs {
    #[command(flatten)]
    pub at: Where,
    /// The account name.
    pub name: String,
}

/// `registry token …`.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum TokenCmd {
    /// Create an access token (printed once).
    Create(TokenCreateArgs),
    /// List access tokens.
    Ls(Where),
    /// Revoke an access token.
    Revoke(TokenRevokeArgs),
}

// `registry token create`.
#[derive(Args, Debug)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub at: Where,
    /// The owner.
    #[arg(long)]
    pub user: String,
    /// What it may do: pull (read), push (read and write) or delete (read,
    /// write and delete), Docker Hub's three scopes.
    #[arg(long, default_value = "push")]
    pub scope: String,
    /// A name to tell it by.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Lifetime, e.g. 30d, 12h, 90m (default: no expiry).
    #[arg(long)]
    pub expires: Option<String>,
}

// `registry token revoke`.
#[derive(Args, Debug)]
pub struct TokenRevokeArgs {
    #[command(flatten)]
    pub at: Where,
    /// The token's id (from `token ls`).
    pub id: String,
}

// `registry gc`.
#[derive(Args, Debug)]
pub struct GcArgs {
    #[command(flatten)]
    pub at: Where,
    /// Only report what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep unreferenced blobs younger than this (a push may still be on its way).
    #[arg(long, default_value = "1h")]
    pub grace: String,
}

/// Parses `30d`, `12h`, `90m`, `45s` (or plain seconds).
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("invalid duration {s:?}: use e.g. 30d, 12h, 90m"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => bail!("invalid duration {s:?}: use e.g. 30d, 12h, 90m"),
    };
    Ok(Duration::from_secs(n * mult))
}

fn read_password(stdin: bool) -> anyhow::Result<String> {
    let mut line = String::new();
    if stdin || !std::io::stdin().is_terminal() {
        std::io::stdin().lock().read_line(&mut line)?;
    } else {
        eprint!("Password: ");
        let stdin = std::io::stdin();
        let fd = &stdin;
        let old = rustix::termios::tcgetattr(fd)?;
        let mut t = old.clone();
        t.local_modes.remove(rustix::termios::LocalModes::ECHO);
        rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &t)?;
        let r = std::io::stdin().lock().read_line(&mut line);
        rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &old)?;
        eprintln!();
        r?;
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub fn run(cmd: RegistryCmd) -> anyhow::Result<()> {
    match cmd {
        RegistryCmd::Serve(a) => {
            let mut c = a.at.config()?;
            if let Some(addr) = a.addr {
                c.addr = addr;
            }
            if a.tls_cert.is_some() {
                c.tls_cert = a.tls_cert;
                c.tls_key = a.tls_key;
            }
            c.public |= a.public;
            c.open |= a.open;
            if let Some(s) = a.signup {
                c.signup = s;
            }
            c.log_requests &= !a.quiet;
            server::serve(c).map_err(|e| anyhow!("{e}"))
        }
        RegistryCmd::User(UserCmd::Add(a)) => {
            let auth = a.at.auth()?;
            let pw = read_password(a.password_stdin)?;
            auth.add_user(&a.name, &pw, a.admin)
                .map_err(|e| anyhow!("{e}"))?;
            eprintln!("user {} saved", a.name);
            Ok(())
        }
        RegistryCmd::User(UserCmd::Rm(a)) => {
            a.at.auth()?
                .remove_user(&a.name)
                .map_err(|e| anyhow!("{e}"))?;
            Ok(())
        }
        RegistryCmd::User(UserCmd::Ls(at)) => {
            let mut t = Table::new(&["USER", "ADMIN"]);
            for (n, admin) in at.auth()?.list_users()? {
                t.row(vec![n, admin.to_string()]);
            }
            t.print()?;
            Ok(())
        }
        RegistryCmd::Token(TokenCmd::Create(a)) => {
            let secs = a
                .expires
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .map(|d| d.as_secs() as i64);
            let (id, secret) =
                a.at.auth()?
                    .create_token(&a.user, &a.name, &a.scope, secs)
                    .map_err(|e| anyhow!("{e}"))?;
            eprintln!(
                "token {id} for {} ({}): copy it now, it is not shown again",
                a.user, a.scope
            );
            println!("{secret}");
            Ok(())
        }
        RegistryCmd::Token(TokenCmd::Ls(at)) => {
            let mut t = Table::new(&[
                "ID",
                "USER",
                "NAME",
                "SCOPE",
                "CREATED",
                "EXPIRES",
                "LAST USED",
            ]);
            let or = |s: String, none: &str| if s.is_empty() { none.to_string() } else { s };
            for tok in at.auth()?.list_tokens()? {
                t.row(vec![
                    tok.id,
                    tok.user,
                    tok.name,
                    tok.scope,
                    tok.created,
                    or(tok.expires, "never"),
                    or(tok.last_used, "never"),
                ]);
            }
            t.print()?;
            Ok(())
        }
        RegistryCmd::Token(TokenCmd::Revoke(a)) => {
            a.at.auth()?
                .revoke_token(&a.id)
                .map_err(|e| anyhow!("{e}"))?;
            println!("{}", a.id);
            Ok(())
        }
        RegistryCmd::Gc(a) => {
            let c = a.at.config()?;
            let grace = parse_duration(&a.grace)?;
            let s = c.open_storage().map_err(|e| anyhow!("{e}"))?;
            let r = s.gc(grace, Duration::from_secs(c.upload_expiry), a.dry_run)?;
            println!(
                "{} {} blobs ({}), kept {} in use and {} younger than {}; {} abandoned uploads removed",
                if a.dry_run { "would remove" } else { "removed" },
                r.blobs_removed,
                human_size(r.bytes_freed),
                r.kept_in_use,
                r.kept_young,
                a.grace,
                r.uploads_removed
            );
            Ok(())
        }
    }
}
