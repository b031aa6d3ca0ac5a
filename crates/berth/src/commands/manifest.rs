//! `manifest create/add/annotate/inspect/push/rm`: docker's commands that
//! assemble a manifest list (an OCI image index) from images already in
//! registries — one per platform, built on different machines — and push it
//! as one name.
//!
//! A list being made is kept as docker keeps it, in the client's config
//! directory (`~/.docker/manifests/<list>.json`, 0600 from the first byte),
//! until `push --purge` or `rm`. The images are never pulled: only their
//! manifests and configs are read, for the descriptors and platforms.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use berth_registry::client::{Options, Registry, scope};
use berth_types::{Digest, Reference};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::distribution::TlsArgs;

/// `manifest …`.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum ManifestCmd {
    /// Create a local manifest list for annotating and pushing to a registry.
    Create(CreateArgs),
    /// Add an image to a local manifest list.
    Add(AddArgs),
    /// Add additional information to a local image manifest.
    Annotate(AnnotateArgs),
    /// Display an image manifest, or manifest list.
    Inspect(InspectArgs),
    /// Push a manifest list to a repository.
    Push(PushArgs),
    /// Delete one or more manifest lists from local storage.
    Rm(RmArgs),
}

// `manifest create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Amend an existing manifest list.
    #[arg(short, long)]
    pub amend: bool,
    /// Allow communication with an insecure registry.
    #[arg(long)]
    pub insecure: bool,
    /// The list's name.
    pub list: String,
    /// Images (in registries) to put in it.
    #[arg(required = true)]
    pub images: Vec<String>,
}

// `manifest add` (podman's; docker amends with `create --amend`).
#[derive(Args, Debug)]
pub struct AddArgs {
    /// Allow communication with an insecure registry.
    #[arg(long)]
    pub insecure: bool,
    /// The list.
    pub list: String,
    /// The image to add.
    pub image: String,
}

// `manifest annotate`.
#[derive(Args, Debug)]
pub struct AnnotateArgs {
    /// Set architecture.
    #[arg(long)]
    pub arch: Option<String>,
    /// Set operating system.
    #[arg(long)]
    pub os: Option<String>,
    /// Set operating system feature.
    #[arg(long = "os-features")]
    pub os_features: Vec<String>,
    /// Set operating system version.
    #[arg(long = "os-version")]
    pub os_version: Option<String>,
    /// Set architecture variant.
    #[arg(long)]
    pub variant: Option<String>,
    /// The list.
    pub list: String,
    /// The image in it.
    pub image: String,
}

// `manifest inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Allow communication with an insecure registry.
    #[arg(long)]
    pub insecure: bool,
    /// Output additional info including layers and platform.
    #[arg(short, long)]
    pub verbose: bool,
    /// A local list, or any image or list in a registry.
    pub name: String,
}

// `manifest push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// Allow push to an insecure registry.
    #[arg(long)]
    pub insecure: bool,
    /// Remove the local manifest list after push.
    #[arg(short, long)]
    pub purge: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// The list.
    pub list: String,
}

// `manifest rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// The lists.
    #[arg(required = true)]
    pub lists: Vec<String>,
}

/// One image of a local list.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// Where it is (`host/repo@digest` as given, with its digest).
    image: String,
    /// Its descriptor in the list (media type, digest, size, platform).
    descriptor: Value,
}

/// A list being made.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct List {
    name: String,
    manifests: Vec<Entry>,
}

fn lists_dir(config_dir: Option<&Path>) -> PathBuf {
    let cfg = berth_registry::client::config::AuthConfig::locate(config_dir);
    cfg.path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join("manifests")
}

/// The reference a list is named by, with `latest` when no tag is given.
fn normal(name: &str) -> anyhow::Result<Reference> {
    Ok(Reference::parse(name)
        .map_err(|e| anyhow!("{name}: {e}"))?
        .with_default_tag())
}

/// What `/v2/<repo>/manifests/` is asked for: the digest, else the tag.
fn manifest_ref(r: &Reference) -> String {
    r.digest()
        .map(|d| d.to_string())
        .or_else(|| r.tag().map(str::to_string))
        .unwrap_or_else(|| "latest".into())
}

fn list_path(config_dir: Option<&Path>, name: &Reference) -> PathBuf {
    // docker's escaping: the reference with '/' and ':' made '_'.
    let file = name.to_string().replace(['/', ':', '@'], "_");
    lists_dir(config_dir).join(format!("{file}.json"))
}

fn load(config_dir: Option<&Path>, name: &Reference) -> anyhow::Result<Option<List>> {
    let p = list_path(config_dir, name);
    match std::fs::read(&p) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("{}", p.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}", p.display())),
    }
}

fn save(config_dir: Option<&Path>, list: &List) -> anyhow::Result<()> {
    let name = normal(&list.name)?;
    let p = list_path(config_dir, &name);
    let dir = p.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    berth_fs::atomic_write(&p, &serde_json::to_vec_pretty(list)?)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn registry(config_dir: Option<&Path>, r: &Reference, insecure: bool) -> anyhow::Result<Registry> {
    super::distribution::connect(
        config_dir,
        r.domain(),
        Options {
            tls_verify: !insecure,
            ..Options::default()
        },
    )
}

/// The descriptor an image gets in a list: its manifest's media type,
/// digest and size, and its platform from its config.
fn describe(config_dir: Option<&Path>, image: &str, insecure: bool) -> anyhow::Result<Entry> {
    let r = normal(image)?;
    let reg = registry(config_dir, &r, insecure)?;
    let repo = r.path().to_string();
    let reference = manifest_ref(&r);
    let scopes = [scope(&repo, "pull")];
    let (bytes, media_type, digest) = reg
        .manifest(&repo, &reference, &scopes)
        .map_err(|e| anyhow!("{}: {e}", r.familiar()))?;
    let m: Value = serde_json::from_slice(&bytes)?;
    if m.get("manifests").is_some() {
        bail!(
            "{} is a manifest list: a list is made of images",
            r.familiar()
        );
    }
    let config: Value = match m["config"]["digest"]
        .as_str()
        .and_then(|d| d.parse::<Digest>().ok())
    {
        Some(d) => serde_json::from_slice(
            &reg.blob_bytes(&repo, &d, &scopes, 1 << 20)
                .map_err(|e| anyhow!("{}: config: {e}", r.familiar()))?,
        )?,
        None => json!({}),
    };
    let mut platform = json!({
        "architecture": config["architecture"].as_str().unwrap_or("amd64"),
        "os": config["os"].as_str().unwrap_or("linux"),
    });
    if let Some(v) = config["variant"].as_str() {
        platform["variant"] = json!(v);
    }
    Ok(Entry {
        image: format!("{}@{digest}", r.name()),
        descriptor: json!({
            "mediaType": media_type,
            "digest": digest.to_string(),
            "size": bytes.len(),
            "platform": platform,
        }),
    })
}

/// Runs a `manifest` command.
pub fn run(config_dir: Option<&Path>, cmd: ManifestCmd) -> anyhow::Result<()> {
    match cmd {
        ManifestCmd::Create(a) => {
            let name = normal(&a.list)?;
            let mut list = match load(config_dir, &name)? {
                Some(_) if !a.amend => {
                    bail!("refusing to amend an existing manifest list with no --amend flag")
                }
                Some(l) => l,
                None => List {
                    name: name.to_string(),
                    manifests: Vec::new(),
                },
            };
            for i in &a.images {
                let e = describe(config_dir, i, a.insecure)?;
                list.manifests
                    .retain(|x| x.descriptor["digest"] != e.descriptor["digest"]);
                list.manifests.push(e);
            }
            save(config_dir, &list)?;
            println!("Created manifest list {name}");
            Ok(())
        }
        ManifestCmd::Add(a) => {
            let name = normal(&a.list)?;
            let mut list =
                load(config_dir, &name)?.ok_or_else(|| anyhow!("No such manifest: {name}"))?;
            let e = describe(config_dir, &a.image, a.insecure)?;
            list.manifests
                .retain(|x| x.descriptor["digest"] != e.descriptor["digest"]);
            let digest = e.descriptor["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            list.manifests.push(e);
            save(config_dir, &list)?;
            println!("{digest}");
            Ok(())
        }
        ManifestCmd::Annotate(a) => {
            let name = normal(&a.list)?;
            let mut list =
                load(config_dir, &name)?.ok_or_else(|| anyhow!("No such manifest: {name}"))?;
            let want = normal(&a.image)?;
            let entry = list
                .manifests
                .iter_mut()
                .find(|e| {
                    normal(&e.image).is_ok_and(|r| r.name() == want.name())
                        && (want.digest().is_none()
                            || e.descriptor["digest"].as_str()
                                == want.digest().map(|d| d.to_string()).as_deref())
                })
                .ok_or_else(|| {
                    anyhow!("manifest for image {} does not exist in {name}", a.image)
                })?;
            let p = &mut entry.descriptor["platform"];
            for (k, v) in [
                ("architecture", &a.arch),
                ("os", &a.os),
                ("variant", &a.variant),
                ("os.version", &a.os_version),
            ] {
                if let Some(v) = v {
                    p[k] = json!(v);
                }
            }
            if !a.os_features.is_empty() {
                p["os.features"] = json!(a.os_features);
            }
            save(config_dir, &list)?;
            Ok(())
        }
        ManifestCmd::Inspect(a) => {
            let name = normal(&a.name)?;
            if let Some(list) = load(config_dir, &name)? {
                println!("{}", serde_json::to_string_pretty(&index_of(&list))?);
                return Ok(());
            }
            let reg = registry(config_dir, &name, a.insecure)?;
            let repo = name.path().to_string();
            let reference = manifest_ref(&name);
            let (bytes, _, _) = reg
                .manifest(&repo, &reference, &[scope(&repo, "pull")])
                .map_err(|e| anyhow!("{}: {e}", name.familiar()))?;
            let v: Value = serde_json::from_slice(&bytes)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        ManifestCmd::Push(a) => push(config_dir, a),
        ManifestCmd::Rm(a) => {
            let mut missing = Vec::new();
            for l in &a.lists {
                let name = normal(l)?;
                match std::fs::remove_file(list_path(config_dir, &name)) {
                    Ok(()) => {}
                    Err(_) => missing.push(l.clone()),
                }
            }
            if !missing.is_empty() {
                bail!("No such manifest: {}", missing.join(", "));
            }
            Ok(())
        }
    }
}

/// The OCI index a list is pushed as.
fn index_of(list: &List) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": list.manifests.iter().map(|e| e.descriptor.clone()).collect::<Vec<_>>(),
    })
}

/// `manifest push`: each image's manifest made present in the list's
/// repository (its blobs mounted from where it is, then the manifest put by
/// digest), then the index under the list's tag.
fn push(config_dir: Option<&Path>, a: PushArgs) -> anyhow::Result<()> {
    let name = normal(&a.list)?;
    let list = load(config_dir, &name)?.ok_or_else(|| anyhow!("No such manifest: {name}"))?;
    let reg = registry(config_dir, &name, a.insecure || !a.tls.tls_verify)?;
    let repo = name.path().to_string();
    for e in &list.manifests {
        let src = normal(&e.image)?;
        if src.domain() != name.domain() {
            bail!(
                "{}: cannot push a list that refers to another registry's image ({})",
                name.familiar(),
                src.familiar()
            );
        }
        let digest: Digest = e.descriptor["digest"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|_| anyhow!("{}: bad digest in the list", e.image))?;
        if src.path() == repo {
            continue;
        }
        let from = src.path().to_string();
        let scopes = [scope(&repo, "pull,push"), scope(&from, "pull")];
        let (bytes, media_type, _) = reg
            .manifest(&from, &digest.to_string(), &scopes)
            .map_err(|e| anyhow!("{}: {e}", src.familiar()))?;
        let m: Value = serde_json::from_slice(&bytes)?;
        let blobs = m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(std::iter::once(&m["config"]))
            .filter_map(|d| d["digest"].as_str()?.parse::<Digest>().ok());
        for b in blobs {
            reg.mount_blob(&repo, &from, &b, &scopes)
                .map_err(|e| anyhow!("mounting {b} from {from}: {e}"))?;
        }
        reg.put_manifest(&repo, &digest.to_string(), &media_type, &bytes, &scopes)
            .map_err(|e| anyhow!("{}: {e}", src.familiar()))?;
    }
    let index = serde_json::to_vec(&index_of(&list))?;
    let tag = name.tag().unwrap_or("latest");
    let digest = reg
        .put_manifest(
            &repo,
            tag,
            "application/vnd.oci.image.index.v1+json",
            &index,
            &[scope(&repo, "pull,push")],
        )
        .map_err(|e| anyhow!("{}: {e}", name.familiar()))?;
    println!("{digest}");
    if a.purge {
        let _ = std::fs::remove_file(list_path(config_dir, &name));
    }
    Ok(())
}
