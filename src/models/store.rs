//! Where model weights come from: the manifests in `models/` (compiled in), a local
//! directory, the Hugging Face cache, or a download with hf-hub.
//!
//! Resolution order: a directory named on the command line or in the pipeline file; the
//! local Hugging Face cache; a download (unless offline). When the Hub cannot be reached and
//! the weights are absent, the error gives the command that fetches them on a connected
//! machine and the flag that points at a local copy.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use serde::Deserialize;
use thiserror::Error;

/// The manifests shipped in `models/`, compiled into the binary.
const MANIFEST_SOURCES: [(&str, &str); 7] = [
    (
        "mobileclip2-s0.toml",
        include_str!("../../models/mobileclip2-s0.toml"),
    ),
    (
        "mobileclip2-s2.toml",
        include_str!("../../models/mobileclip2-s2.toml"),
    ),
    (
        "mobileclip2-s3.toml",
        include_str!("../../models/mobileclip2-s3.toml"),
    ),
    (
        "mobileclip2-s4.toml",
        include_str!("../../models/mobileclip2-s4.toml"),
    ),
    (
        "fastvlm-0.5b.toml",
        include_str!("../../models/fastvlm-0.5b.toml"),
    ),
    (
        "fastvlm-1.5b.toml",
        include_str!("../../models/fastvlm-1.5b.toml"),
    ),
    (
        "fastvlm-7b.toml",
        include_str!("../../models/fastvlm-7b.toml"),
    ),
];

/// The embedder used when nothing else is named.
pub const DEFAULT_EMBEDDER: &str = "MobileCLIP2-S0";
/// The captioner used when nothing else is named.
pub const DEFAULT_CAPTIONER: &str = "FastVLM-0.5B";

/// What a model is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelRole {
    /// Image and text embeddings (MobileCLIP2).
    Embedder,
    /// Image descriptions (FastVLM).
    Captioner,
}

impl ModelRole {
    /// The command-line flag that points at a local copy of such a model.
    pub fn flag(self) -> &'static str {
        match self {
            ModelRole::Embedder => "--embedder",
            ModelRole::Captioner => "--captioner",
        }
    }
}

impl fmt::Display for ModelRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelRole::Embedder => "embedder",
            ModelRole::Captioner => "captioner",
        })
    }
}

/// A model manifest: which Hub repository and files make up a model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The model's name, e.g. `MobileCLIP2-S0`.
    pub name: String,
    /// What the model is for.
    pub role: ModelRole,
    /// One line for `keyscribe models list`.
    pub description: String,
    /// Hugging Face Hub repository, e.g. `timm/MobileCLIP2-S0-OpenCLIP`.
    pub repo: String,
    /// Branch, tag or commit of the repository.
    pub revision: String,
    /// Files the model needs. A `*.safetensors.index.json` file also brings the shards it
    /// lists.
    pub files: Vec<String>,
    /// Files used when present (e.g. `tokenizer.json` where `vocab.json` + `merges.txt`
    /// also work).
    #[serde(default)]
    pub optional_files: Vec<String>,
}

impl Manifest {
    fn hub_repo(&self) -> Repo {
        Repo::with_revision(self.repo.clone(), RepoType::Model, self.revision.clone())
    }

    /// The command that downloads this model on a machine with network access.
    pub fn fetch_command(&self) -> String {
        format!("keyscribe models fetch {}", self.name)
    }
}

/// Every built-in manifest.
pub fn manifests() -> &'static [Manifest] {
    static MANIFESTS: OnceLock<Vec<Manifest>> = OnceLock::new();
    MANIFESTS.get_or_init(|| {
        MANIFEST_SOURCES
            .iter()
            .map(|(file, text)| {
                toml::from_str(text)
                    .unwrap_or_else(|error| panic!("built-in manifest models/{file}: {error}"))
            })
            .collect()
    })
}

/// The manifest called `name` (case-insensitive).
pub fn manifest(name: &str) -> Result<&'static Manifest, StoreError> {
    manifests()
        .iter()
        .find(|manifest| manifest.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| StoreError::UnknownModel {
            name: name.to_string(),
            known: manifests().iter().map(|m| m.name.clone()).collect(),
        })
}

/// Where downloads go and whether the network may be used.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// The Hugging Face cache directory (the `hub` folder).
    pub cache_dir: PathBuf,
    /// The Hub's address.
    pub endpoint: String,
    /// Never use the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Show download progress bars.
    pub progress: bool,
}

impl HubSettings {
    /// Settings from the environment as the Hugging Face tools read it: `HF_HOME`,
    /// `HF_ENDPOINT`, `HF_HUB_OFFLINE`.
    pub fn from_env() -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|value| matches!(value.as_str(), "1" | "true" | "TRUE" | "yes"))
            .unwrap_or(false);
        HubSettings {
            cache_dir: Cache::from_env().path().clone(),
            endpoint: std::env::var("HF_ENDPOINT")
                .unwrap_or_else(|_| "https://huggingface.co".to_string()),
            offline,
            progress: true,
        }
    }
}

/// A model's files found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct LocatedModel {
    /// The model's name (the manifest's, or the directory's name for unnamed directories).
    pub name: String,
    /// The directory holding the model's files in the Hub's layout.
    pub dir: PathBuf,
    /// Where it came from, for the analysis document: a Hub repository or a directory.
    pub source: String,
}

/// What can go wrong finding model weights.
#[derive(Debug, Error)]
pub enum StoreError {
    /// No manifest has this name.
    #[error("unknown model `{name}` (known models: {})", known.join(", "))]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },
    /// A local model directory lacks files of the model's layout.
    #[error("{}: missing {} (expected the files of {repo})", dir.display(), files.join(", "))]
    MissingFiles {
        /// The directory.
        dir: PathBuf,
        /// The missing files.
        files: Vec<String>,
        /// The Hub repository whose layout is expected.
        repo: String,
    },
    /// The weights are not on this machine and cannot be downloaded.
    #[error(
        "{name}: weights not found locally and the Hugging Face Hub cannot be reached ({reason}). \
         On a machine with network access run `{command}` (or `huggingface-cli download {repo}`), \
         copy the files here, and pass `{flag} DIR`"
    )]
    Unreachable {
        /// The model's name.
        name: String,
        /// Its Hub repository.
        repo: String,
        /// Why the Hub could not be used.
        reason: String,
        /// The command that fetches it.
        command: String,
        /// The flag that points at a local copy.
        flag: String,
    },
    /// A download started but failed.
    #[error("{name}: downloading {file} from {repo} failed: {reason}")]
    Download {
        /// The model's name.
        name: String,
        /// The repository.
        repo: String,
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
}

/// Checks that `dir` holds the files `manifest` lists (shards included) and returns it.
pub fn use_directory(manifest: &Manifest, dir: &Path) -> Result<LocatedModel, StoreError> {
    let missing: Vec<String> = required_files(manifest, dir)
        .into_iter()
        .filter(|file| !dir.join(file).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(StoreError::MissingFiles {
            dir: dir.to_path_buf(),
            files: missing,
            repo: manifest.repo.clone(),
        });
    }
    Ok(LocatedModel {
        name: manifest.name.clone(),
        dir: dir.to_path_buf(),
        source: dir.display().to_string(),
    })
}

/// The model's directory in the local Hugging Face cache, if every needed file is there.
pub fn find_in_cache(manifest: &Manifest, settings: &HubSettings) -> Option<LocatedModel> {
    let cache = Cache::new(settings.cache_dir.clone()).repo(manifest.hub_repo());
    let first = cache.get(manifest.files.first()?)?;
    let dir = first.parent()?.to_path_buf();
    let complete = required_files(manifest, &dir)
        .iter()
        .all(|file| cache.get(file).is_some());
    complete.then(|| LocatedModel {
        name: manifest.name.clone(),
        dir,
        source: format!("hf://{}@{}", manifest.repo, manifest.revision),
    })
}

/// Downloads the model's files into the Hugging Face cache (files already there are kept)
/// and returns its directory.
pub fn fetch(manifest: &Manifest, settings: &HubSettings) -> Result<LocatedModel, StoreError> {
    let unreachable = |reason: String| StoreError::Unreachable {
        name: manifest.name.clone(),
        repo: manifest.repo.clone(),
        reason,
        command: manifest.fetch_command(),
        flag: manifest.role.flag().to_string(),
    };
    if settings.offline {
        return Err(unreachable("HF_HUB_OFFLINE is set".into()));
    }
    let api = ApiBuilder::from_cache(Cache::new(settings.cache_dir.clone()))
        .with_endpoint(settings.endpoint.clone())
        .with_progress(settings.progress)
        .with_retries(2)
        .build()
        .map_err(|error| unreachable(error.to_string()))?;
    let repo = api.repo(manifest.hub_repo());
    let download = |file: &str| -> Result<PathBuf, StoreError> {
        repo.get(file).map_err(|error| match error {
            hf_hub::api::sync::ApiError::RequestError(inner) if is_transport(&inner) => {
                unreachable(inner.to_string())
            }
            other => StoreError::Download {
                name: manifest.name.clone(),
                repo: manifest.repo.clone(),
                file: file.to_string(),
                reason: other.to_string(),
            },
        })
    };
    let mut dir = None;
    for file in &manifest.files {
        let path = download(file)?;
        dir.get_or_insert_with(|| path.parent().map(Path::to_path_buf).unwrap_or_default());
        for shard in shards_listed_by(&path) {
            download(&shard)?;
        }
    }
    for file in &manifest.optional_files {
        // Optional files may not exist in every revision; a missing one is not an error.
        let _ = repo.get(file);
    }
    let dir = dir.expect("every manifest lists at least one file");
    Ok(LocatedModel {
        name: manifest.name.clone(),
        dir,
        source: format!("hf://{}@{}", manifest.repo, manifest.revision),
    })
}

/// Finds a model: `explicit_dir` if given, else the cache, else a download.
pub fn resolve(
    manifest: &Manifest,
    explicit_dir: Option<&Path>,
    settings: &HubSettings,
) -> Result<LocatedModel, StoreError> {
    if let Some(dir) = explicit_dir {
        return use_directory(manifest, dir);
    }
    if let Some(found) = find_in_cache(manifest, settings) {
        return Ok(found);
    }
    fetch(manifest, settings)
}

/// Whether a request failed before reaching the Hub (no network, DNS, refused connection).
fn is_transport(error: &ureq::Error) -> bool {
    matches!(error, ureq::Error::Transport(_))
}

/// The manifest's required files in `dir`, with the shards that an index file lists.
fn required_files(manifest: &Manifest, dir: &Path) -> Vec<String> {
    let mut files = manifest.files.clone();
    for file in &manifest.files {
        files.extend(shards_listed_by(&dir.join(file)));
    }
    files
}

/// The shard files named in a `*.safetensors.index.json` file (empty for other files or
/// when the index cannot be read).
pub fn shards_listed_by(path: &Path) -> Vec<String> {
    if !path.to_string_lossy().ends_with(".safetensors.index.json") {
        return Vec::new();
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(index) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    let mut shards: Vec<String> = index["weight_map"]
        .as_object()
        .map(|map| {
            map.values()
                .filter_map(|file| file.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    shards.sort();
    shards.dedup();
    shards
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(cache_dir: &Path) -> HubSettings {
        HubSettings {
            cache_dir: cache_dir.to_path_buf(),
            // A closed port on this machine: every request fails at once.
            endpoint: "http://127.0.0.1:9".into(),
            offline: false,
            progress: false,
        }
    }

    #[test]
    fn built_in_manifests_parse_and_defaults_exist() {
        assert!(manifests().len() >= 7);
        assert_eq!(
            manifest(DEFAULT_EMBEDDER).unwrap().role,
            ModelRole::Embedder
        );
        assert_eq!(manifest("fastvlm-0.5b").unwrap().repo, "apple/FastVLM-0.5B");
        let error = manifest("GPT-5").unwrap_err().to_string();
        assert!(error.contains("MobileCLIP2-S0"), "{error}");
    }

    #[test]
    fn a_directory_missing_files_names_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("open_clip_config.json"), "{}").unwrap();
        let error = use_directory(manifest("MobileCLIP2-S0").unwrap(), dir.path())
            .unwrap_err()
            .to_string();
        assert!(error.contains("open_clip_model.safetensors"), "{error}");
        assert!(error.contains("tokenizer.json"), "{error}");
        assert!(!error.contains("open_clip_config.json,"), "{error}");
    }

    #[test]
    fn the_cache_layout_is_found() {
        let cache = tempfile::tempdir().unwrap();
        let manifest = manifest("MobileCLIP2-S0").unwrap();
        let repo_dir = cache.path().join("models--timm--MobileCLIP2-S0-OpenCLIP");
        let snapshot = repo_dir.join("snapshots/0123abcd");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), "0123abcd").unwrap();
        for file in &manifest.files {
            std::fs::write(snapshot.join(file), "x").unwrap();
        }
        let found = resolve(manifest, None, &settings(cache.path())).unwrap();
        assert_eq!(found.dir, snapshot);
        assert_eq!(found.source, "hf://timm/MobileCLIP2-S0-OpenCLIP@main");
    }

    #[test]
    fn unreachable_hub_says_how_to_get_the_weights() {
        let cache = tempfile::tempdir().unwrap();
        let manifest = manifest("FastVLM-0.5B").unwrap();
        let error = resolve(manifest, None, &settings(cache.path()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("keyscribe models fetch FastVLM-0.5B"),
            "{error}"
        );
        assert!(error.contains("--captioner DIR"), "{error}");
        assert!(error.contains("cannot be reached"), "{error}");
        let mut offline = settings(cache.path());
        offline.offline = true;
        let error = resolve(manifest, None, &offline).unwrap_err().to_string();
        assert!(error.contains("HF_HUB_OFFLINE"), "{error}");
    }

    #[test]
    fn index_files_bring_their_shards() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("model.safetensors.index.json");
        std::fs::write(
            &index,
            r#"{"metadata": {}, "weight_map": {"a": "model-00002-of-00002.safetensors",
                "b": "model-00001-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(
            shards_listed_by(&index),
            vec![
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
        let manifest = manifest("FastVLM-7B").unwrap();
        let error = use_directory(manifest, dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("model-00002-of-00002.safetensors"),
            "{error}"
        );
    }
}
