//! `keyscribe models list|fetch|verify`: the known models with their licences, where their
//! weights are, and whether the files are the pinned ones and hold what the architecture
//! expects.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use keyscribe::models::store::{self, HubSettings};
use keyscribe::pipeline::verify_model;

use super::print;

/// Arguments of `keyscribe models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    action: ModelsAction,
}

#[derive(Debug, Subcommand)]
enum ModelsAction {
    /// List the known models and whether their weights are in the local cache.
    List {
        /// Print the list as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Download a model's files into the Hugging Face cache.
    Fetch {
        /// Model names (see `keyscribe models list`).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Check the named models (default: every downloaded model): each file the manifest pins
    /// has its SHA-256, and every tensor is present with the shape the architecture expects,
    /// nothing left over.
    Verify {
        /// Model names (see `keyscribe models list`).
        names: Vec<String>,
        /// Check this embedder checkpoint directory instead of the cache.
        #[arg(long, value_name = "DIR")]
        embedder: Option<PathBuf>,
        /// Check this captioner checkpoint directory instead of the cache.
        #[arg(long, value_name = "DIR")]
        captioner: Option<PathBuf>,
    },
}

/// Runs a `models` action.
pub fn run(args: ModelsArgs) -> anyhow::Result<()> {
    let settings = HubSettings::from_env();
    match args.action {
        ModelsAction::List { json } => list(&settings, json),
        ModelsAction::Fetch { names } => {
            for name in names {
                let manifest = store::manifest(&name)?;
                let located = store::fetch(manifest, &settings)
                    .with_context(|| format!("fetching {}", manifest.name))?;
                print::line(format_args!("{}\t{}", manifest.name, located.dir.display()))?;
            }
            Ok(())
        }
        ModelsAction::Verify {
            names,
            embedder,
            captioner,
        } => verify(&settings, &names, embedder, captioner),
    }
}

/// Verifies local directories and cached models; fails when any check fails or a named
/// model is not on this machine.
fn verify(
    settings: &HubSettings,
    names: &[String],
    embedder: Option<PathBuf>,
    captioner: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut targets: Vec<(String, store::ModelRole, PathBuf, Option<&store::Manifest>)> =
        Vec::new();
    let local = [
        (embedder, store::ModelRole::Embedder),
        (captioner, store::ModelRole::Captioner),
    ];
    for (dir, role) in local {
        if let Some(dir) = dir {
            targets.push((dir.display().to_string(), role, dir, None));
        }
    }
    let explicit = !names.is_empty();
    let manifests: Vec<&store::Manifest> = if explicit {
        names
            .iter()
            .map(|name| store::manifest(name))
            .collect::<Result<_, _>>()?
    } else if targets.is_empty() {
        store::manifests().iter().collect()
    } else {
        Vec::new()
    };
    let mut missing = Vec::new();
    for manifest in manifests {
        match store::find_in_cache(manifest, settings) {
            Some(located) => targets.push((
                manifest.name.clone(),
                manifest.role,
                located.dir,
                Some(manifest),
            )),
            None if explicit => missing.push(manifest.name.clone()),
            None => print::line(format_args!("{:<16} not downloaded", manifest.name))?,
        }
    }
    let mut failures = 0;
    for (label, role, dir, manifest) in targets {
        let pins = match manifest {
            Some(manifest) => manifest
                .check_pinned(&dir, None)
                .map(|checked| pinned_summary(checked, manifest))
                .map_err(anyhow::Error::from),
            None => Ok("no manifest: files not pinned".to_string()),
        };
        match pins.and_then(|pins| Ok((pins, verify_model(role, &dir)?))) {
            Ok((pins, description)) => print::line(format_args!(
                "{label:<16} ok: {description}; {pins} ({})",
                dir.display()
            ))?,
            Err(error) => {
                failures += 1;
                print::line(format_args!("{label:<16} FAILED: {error}"))?;
            }
        }
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "not downloaded: {} (run `keyscribe models fetch {}`)",
            missing.join(", "),
            missing.join(" ")
        );
    }
    if failures > 0 {
        anyhow::bail!("{failures} model(s) failed verification");
    }
    Ok(())
}

/// How many of a manifest's files were checked against a pinned SHA-256.
fn pinned_summary(checked: usize, manifest: &store::Manifest) -> String {
    match (checked, manifest.sha256.len()) {
        (0, 0) => "no file hashes pinned (none published)".to_string(),
        (checked, _) => format!("{checked} pinned SHA-256 match"),
    }
}

fn list(settings: &HubSettings, json: bool) -> anyhow::Result<()> {
    let rows: Vec<serde_json::Value> = store::manifests()
        .iter()
        .map(|manifest| {
            let cached = store::find_in_cache(manifest, settings);
            serde_json::json!({
                "name": manifest.name,
                "role": manifest.role.to_string(),
                "repo": manifest.repo,
                "revision": manifest.revision,
                "licence": manifest.licence,
                "licence_url": manifest.licence_url,
                "research_only": manifest.research_only,
                "download_bytes": manifest.download_bytes,
                "description": manifest.description,
                "cached": cached.map(|located| located.dir.display().to_string()),
            })
        })
        .collect();
    if json {
        print::json_pretty(&rows)?;
        return Ok(());
    }
    for row in &rows {
        let status = match row["cached"].as_str() {
            Some(dir) => format!("cached: {dir}"),
            None => "not downloaded".to_string(),
        };
        let licence = match row["research_only"].as_bool() {
            Some(true) => format!(
                "{} (research only)",
                row["licence"].as_str().unwrap_or_default()
            ),
            _ => row["licence"].as_str().unwrap_or_default().to_string(),
        };
        print::line(format_args!(
            "{:<17} {:<10} {:<28} {:<36} {}",
            row["name"].as_str().unwrap_or_default(),
            row["role"].as_str().unwrap_or_default(),
            licence,
            row["repo"].as_str().unwrap_or_default(),
            status
        ))?;
    }
    Ok(())
}
