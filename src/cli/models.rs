//! `keyscribe models list|fetch`: the known models and where their weights are.

use anyhow::Context;
use clap::{Args, Subcommand};

use keyscribe::models::store::{self, HubSettings};

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
                println!("{}\t{}", manifest.name, located.dir.display());
            }
            Ok(())
        }
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
                "description": manifest.description,
                "cached": cached.map(|located| located.dir.display().to_string()),
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for row in &rows {
        let status = match row["cached"].as_str() {
            Some(dir) => format!("cached: {dir}"),
            None => "not downloaded".to_string(),
        };
        println!(
            "{:<16} {:<10} {:<32} {}",
            row["name"].as_str().unwrap_or_default(),
            row["role"].as_str().unwrap_or_default(),
            row["repo"].as_str().unwrap_or_default(),
            status
        );
    }
    Ok(())
}
