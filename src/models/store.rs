//! Where model weights come from: the manifests in `models/` (compiled in), a local
//! directory, the Hugging Face cache, or a download with hf-hub.
//!
//! Resolution order: a directory named on the command line or in the pipeline file; the
//! local Hugging Face cache; a download (unless offline). When the Hub cannot be reached and
//! the weights are absent, the error gives the command that fetches them on a connected
//! machine and the flag that points at a local copy.
//!
//! Whatever the origin, a directory is accepted by the one rule of
//! [`CheckpointFiles`](super::checkpoint::CheckpointFiles), from the layout the directory
//! declares; a manifest's file list says only what to download.
//!
//! A model is identified by the SHA-256 of its weights ([`weights_sha256`]), recorded in
//! analysis documents so that embeddings of different models are never compared.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::checkpoint::{self, CheckpointFiles};
use super::ModelError;

/// The manifests shipped in `models/`, compiled into the binary.
const MANIFEST_SOURCES: [(&str, &str); 12] = [
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
        "siglip2-base-224.toml",
        include_str!("../../models/siglip2-base-224.toml"),
    ),
    (
        "siglip2-base-256.toml",
        include_str!("../../models/siglip2-base-256.toml"),
    ),
    (
        "siglip2-base-384.toml",
        include_str!("../../models/siglip2-base-384.toml"),
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
    (
        "smolvlm-256m.toml",
        include_str!("../../models/smolvlm-256m.toml"),
    ),
    (
        "smolvlm-500m.toml",
        include_str!("../../models/smolvlm-500m.toml"),
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
    /// Image and text embeddings (MobileCLIP2, SigLIP2).
    Embedder,
    /// Image descriptions (FastVLM, SmolVLM).
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

    /// The role with its article, for messages: "an embedder", "a captioner".
    pub fn with_article(self) -> &'static str {
        match self {
            ModelRole::Embedder => "an embedder",
            ModelRole::Captioner => "a captioner",
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
    /// The commit of the repository that is downloaded (a branch name only where no commit
    /// could be pinned).
    pub revision: String,
    /// The licence of the weights, e.g. `Apache-2.0` or `apple-amlr`.
    pub licence: String,
    /// Where the licence's text is.
    pub licence_url: String,
    /// Whether the licence allows research use only (no commercial product or service).
    #[serde(default)]
    pub research_only: bool,
    /// The download's size in bytes, when known.
    #[serde(default)]
    pub download_bytes: Option<u64>,
    /// The SHA-256 of downloaded files, by file name: checked after every download and by
    /// `keyscribe models verify`.
    #[serde(default)]
    pub sha256: BTreeMap<String, String>,
    /// An embedder's defaults for keyframe selection on its scale (the `[select]` table, read
    /// by the pipeline; a pipeline's own settings win).
    #[serde(default)]
    pub select: Option<toml::Table>,
    /// Files to download. A `*.safetensors.index.json` file also brings the shards it
    /// lists. (What a directory must hold is decided by its layout, not by this list.)
    pub files: Vec<String>,
    /// Files downloaded when the repository has them (e.g. `tokenizer.json` where
    /// `vocab.json` + `merges.txt` also work).
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

    /// Whether the revision is a commit (40 hex digits) rather than a branch or tag.
    pub fn revision_is_commit(&self) -> bool {
        self.revision.len() == 40 && self.revision.bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// The one line a run prints when it uses a research-only model; `None` for others.
    pub fn research_only_notice(&self) -> Option<String> {
        self.research_only.then(|| {
            format!(
                "{} is licensed for research only ({}, {}); see `keyscribe models list` for \
                 models you may use in a product",
                self.name, self.licence, self.licence_url
            )
        })
    }

    /// Checks the files in `dir` that the manifest pins against their SHA-256 (hashes kept in
    /// `memo_dir` as [`weights_sha256`] keeps them); returns how many were checked.
    pub fn check_pinned(&self, dir: &Path, memo_dir: Option<&Path>) -> Result<usize, StoreError> {
        let mut checked = 0;
        for (file, expected) in &self.sha256 {
            let path = dir.join(file);
            if !path.exists() {
                continue;
            }
            let found = memoized_sha256(&path, memo_dir).map_err(|source| ModelError::Io {
                path: path.clone(),
                source,
            })?;
            if !found.eq_ignore_ascii_case(expected) {
                return Err(StoreError::ChecksumMismatch {
                    name: self.name.clone(),
                    path,
                    expected: expected.clone(),
                    found,
                });
            }
            checked += 1;
        }
        Ok(checked)
    }
}

/// The licence of the weights `located` found, whose SHA-256 is `weights_sha256`: its
/// manifest's for a Hub download; for a local directory, the licence of the manifest that
/// pins exactly these weights, else unknown (`None`).
pub fn licence_of(located: &LocatedModel, weights_sha256: Option<&str>) -> Option<String> {
    if located.source.starts_with("hf://") {
        return manifest(&located.name).ok().map(|m| m.licence.clone());
    }
    let sha256 = weights_sha256?;
    manifests()
        .iter()
        .find(|manifest| {
            manifest
                .sha256
                .iter()
                .any(|(file, pinned)| file.ends_with(".safetensors") && pinned == sha256)
        })
        .map(|manifest| manifest.licence.clone())
}

/// The one line to print when the model `located` found is licensed for research only: a
/// Hub model whose manifest says so, or a local directory in the layout of Apple's
/// research-only families (MobileCLIP2's open_clip files, FastVLM).
pub fn research_only_notice(located: &LocatedModel) -> Option<String> {
    if located.source.starts_with("hf://") {
        return manifest(&located.name).ok()?.research_only_notice();
    }
    let apple = matches!(
        located.files.layout(),
        checkpoint::CheckpointLayout::OpenClip | checkpoint::CheckpointLayout::FastVlm(_)
    );
    apple.then(|| {
        format!(
            "{} holds {}: Apple licenses these weights for research only (apple-amlr); see \
             `keyscribe models list` for models you may use in a product",
            located.dir.display(),
            located.files.layout()
        )
    })
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
    /// The Hub commit of the cache snapshot it was found in; `None` for a directory named
    /// by the user.
    pub revision: Option<String>,
    /// The files its layout needs, found.
    pub files: CheckpointFiles,
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
         On a machine with network access run `{command}` (or `{hub_command}`), copy the files \
         here, and pass `{flag} DIR`"
    )]
    Unreachable {
        /// The model's name.
        name: String,
        /// The Hugging Face CLI's command for the same files.
        hub_command: String,
        /// Why the Hub could not be used.
        reason: String,
        /// The command that fetches it.
        command: String,
        /// The flag that points at a local copy.
        flag: String,
    },
    /// A directory holds another kind of model, or its files cannot be read (boxed: the
    /// other variants are what this error usually is).
    #[error(transparent)]
    Checkpoint(Box<ModelError>),
    /// A file differs from the SHA-256 its manifest pins.
    #[error(
        "{name}: {} has SHA-256 {found}, but the manifest pins {expected}: the download is \
         damaged or is not the pinned revision; delete it and fetch again",
        path.display()
    )]
    ChecksumMismatch {
        /// The model's name.
        name: String,
        /// The file.
        path: PathBuf,
        /// The pinned SHA-256.
        expected: String,
        /// The file's SHA-256.
        found: String,
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

impl From<ModelError> for StoreError {
    fn from(error: ModelError) -> Self {
        StoreError::Checkpoint(Box::new(error))
    }
}

/// Checks that `dir` holds the files its layout needs, for a model of `manifest`'s role,
/// and returns it. A missing file is named with the repository whose files are expected.
pub fn use_directory(manifest: &Manifest, dir: &Path) -> Result<LocatedModel, StoreError> {
    let files = checked_files(manifest, dir).map_err(|error| match error {
        ModelError::MissingFiles { dir, files, .. } => StoreError::MissingFiles {
            dir,
            files,
            repo: manifest.repo.clone(),
        },
        other => other.into(),
    })?;
    // Recorded as an absolute path, so that a later run finds it from any directory.
    let absolute = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    Ok(LocatedModel {
        name: manifest.name.clone(),
        dir: dir.to_path_buf(),
        source: absolute.display().to_string(),
        revision: None,
        files,
    })
}

/// The model's directory in the local Hugging Face cache, if it holds what the model's
/// layout needs.
pub fn find_in_cache(manifest: &Manifest, settings: &HubSettings) -> Option<LocatedModel> {
    if manifest.revision_is_commit() {
        // The pinned commit's snapshot, however it was downloaded (a download by revision
        // leaves no ref to read).
        if let Some(found) = find_snapshot(manifest, &manifest.revision, settings) {
            return Some(found);
        }
    }
    let cache = Cache::new(settings.cache_dir.clone()).repo(manifest.hub_repo());
    let first = cache.get(manifest.files.first()?)?;
    let dir = first.parent()?.to_path_buf();
    let files = checked_files(manifest, &dir).ok()?;
    Some(LocatedModel {
        name: manifest.name.clone(),
        source: hub_source(manifest),
        revision: snapshot_commit(&dir),
        dir,
        files,
    })
}

/// The snapshot of the model's repository at `commit` in the local Hugging Face cache, if
/// it holds what the model's layout needs: the exact files an earlier run read, whatever
/// the manifest's revision points at now.
pub fn find_snapshot(
    manifest: &Manifest,
    commit: &str,
    settings: &HubSettings,
) -> Option<LocatedModel> {
    let dir = settings
        .cache_dir
        .join(Repo::model(manifest.repo.clone()).folder_name())
        .join("snapshots")
        .join(commit);
    let files = checked_files(manifest, &dir).ok()?;
    Some(LocatedModel {
        name: manifest.name.clone(),
        source: hub_source(manifest),
        revision: Some(commit.to_string()),
        dir,
        files,
    })
}

/// How a model from the Hub is recorded as a source: `hf://REPO@REVISION`.
pub fn hub_source(manifest: &Manifest) -> String {
    format!("hf://{}@{}", manifest.repo, manifest.revision)
}

/// The manifest of the Hub model a recorded source (`hf://REPO@REVISION`) names.
pub fn manifest_of_source(source: &str) -> Option<&'static Manifest> {
    let repo = source.strip_prefix("hf://")?.split('@').next()?;
    manifests().iter().find(|manifest| manifest.repo == repo)
}

/// The files of the checkpoint in `dir`, refused when it holds a model of another role.
fn checked_files(manifest: &Manifest, dir: &Path) -> Result<CheckpointFiles, ModelError> {
    let files = CheckpointFiles::find(dir, manifest.role)?;
    if files.layout().role() != manifest.role {
        return Err(files.not_a(manifest.role, dir));
    }
    Ok(files)
}

/// The commit of a Hugging Face cache snapshot directory (`.../snapshots/COMMIT`).
fn snapshot_commit(dir: &Path) -> Option<String> {
    let in_snapshots = dir.parent()?.file_name()? == "snapshots";
    let commit = dir.file_name()?.to_str()?;
    in_snapshots.then(|| commit.to_string())
}

/// Downloads the model's files into the Hugging Face cache (files already there are kept)
/// and returns its directory.
pub fn fetch(manifest: &Manifest, settings: &HubSettings) -> Result<LocatedModel, StoreError> {
    let unreachable = |reason: String| StoreError::Unreachable {
        name: manifest.name.clone(),
        hub_command: format!(
            "huggingface-cli download {} --revision {}",
            manifest.repo, manifest.revision
        ),
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
        if file.ends_with(".safetensors.index.json") {
            for shard in checkpoint::shards_listed_by(&path)? {
                download(&shard)?;
            }
        }
    }
    for file in &manifest.optional_files {
        // Optional files may not exist in every revision; a missing one is not an error.
        let _ = repo.get(file);
    }
    let dir = dir.expect("every manifest lists at least one file");
    manifest.check_pinned(&dir, None)?;
    Ok(LocatedModel {
        name: manifest.name.clone(),
        source: hub_source(manifest),
        revision: snapshot_commit(&dir),
        files: checked_files(manifest, &dir)?,
        dir,
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

/// The SHA-256 identity of a model's weights, hex: for one file, its SHA-256 (what
/// `sha256sum` prints, and the name of the Hub's blob); for shards, the SHA-256 of their
/// `NAME SHA256` lines in order.
///
/// Hashing a 1–2 GB file takes seconds, so each file's hash is kept in `memo_dir` (when
/// given and writable), keyed by the file's canonical path, and reused while the file's
/// size, inode, device, modification time and change time are those it was hashed at:
/// any rewrite or replacement of the file changes its change time, so a kept hash is
/// never one of other bytes. As git does with its index, a hash is not reused when the
/// file had changed less than [`RACY_WINDOW_NS`] before it was hashed, since a second
/// change inside one tick of the file system's clock would leave the times as they were.
pub fn weights_sha256(files: &[PathBuf], memo_dir: Option<&Path>) -> Result<String, ModelError> {
    let hashes = files
        .iter()
        .map(|file| {
            memoized_sha256(file, memo_dir).map_err(|source| ModelError::Io {
                path: file.clone(),
                source,
            })
        })
        .collect::<Result<Vec<String>, ModelError>>()?;
    match (files, hashes.as_slice()) {
        ([_], [hash]) => Ok(hash.clone()),
        _ => {
            let mut hasher = Sha256::new();
            for (file, hash) in files.iter().zip(&hashes) {
                let name = file.file_name().unwrap_or_default().to_string_lossy();
                hasher.update(format!("{name} {hash}\n").as_bytes());
            }
            Ok(format!("{:x}", hasher.finalize()))
        }
    }
}

/// How long before its hashing a file must have last changed for the hash to be reused:
/// longer than any file system's timestamp granularity (FAT's is 2 s).
pub const RACY_WINDOW_NS: i128 = 3_000_000_000;

/// A file's state: what changes whenever its bytes do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FileState {
    path: PathBuf,
    len: u64,
    inode: u64,
    device: u64,
    modified_ns: i128,
    changed_ns: i128,
}

/// A file's hash as kept in the memo, with the file's state it was computed at.
#[derive(Debug, Serialize, Deserialize)]
struct KeptHash {
    state: FileState,
    hashed_at_ns: i128,
    sha256: String,
}

/// The SHA-256 of `path`'s bytes, from the memo when it is still valid.
fn memoized_sha256(path: &Path, memo_dir: Option<&Path>) -> std::io::Result<String> {
    let path = std::fs::canonicalize(path)?;
    let metadata = std::fs::metadata(&path)?;
    let nanoseconds =
        |seconds: i64, fraction: i64| i128::from(seconds) * 1_000_000_000 + i128::from(fraction);
    let state = FileState {
        path: path.clone(),
        len: metadata.len(),
        inode: metadata.ino(),
        device: metadata.dev(),
        modified_ns: nanoseconds(metadata.mtime(), metadata.mtime_nsec()),
        changed_ns: nanoseconds(metadata.ctime(), metadata.ctime_nsec()),
    };
    let memo = memo_dir.map(|dir| {
        let key = Sha256::digest(path.as_os_str().as_encoded_bytes());
        dir.join(format!("{key:x}.json"))
    });
    if let Some(kept) = memo
        .as_ref()
        .and_then(|memo| std::fs::read(memo).ok())
        .and_then(|bytes| serde_json::from_slice::<KeptHash>(&bytes).ok())
    {
        if kept.state == state && kept.state.changed_ns + RACY_WINDOW_NS < kept.hashed_at_ns {
            return Ok(kept.sha256);
        }
    }
    let sha256 = crate::cache::file_sha256(&path)?;
    if let Some(memo) = memo {
        let hashed_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos() as i128)
            .unwrap_or_default();
        let kept = KeptHash {
            state,
            hashed_at_ns: hashed_at,
            sha256: sha256.clone(),
        };
        // A memo that cannot be written only costs the next load the hashing again.
        let _ = std::fs::create_dir_all(memo_dir.unwrap_or(Path::new("."))).and_then(|()| {
            let json = serde_json::to_vec(&kept).map_err(std::io::Error::other)?;
            crate::atomic::write(&memo, &json)
        });
    }
    Ok(sha256)
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
    fn every_manifest_carries_a_licence_and_pins_only_files_it_downloads() {
        for manifest in manifests() {
            assert!(!manifest.licence.is_empty(), "{}", manifest.name);
            assert!(
                manifest.licence_url.starts_with("https://"),
                "{}",
                manifest.name
            );
            assert_eq!(
                manifest.research_only,
                manifest.licence == "apple-amlr",
                "{}",
                manifest.name
            );
            for (file, sha256) in &manifest.sha256 {
                assert!(
                    manifest.files.contains(file) || manifest.optional_files.contains(file),
                    "{}: pins {file}, which it does not download",
                    manifest.name
                );
                assert!(
                    sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{}: {file}",
                    manifest.name
                );
            }
        }
        for manifest in manifests() {
            if manifest.select.is_some() {
                assert_eq!(manifest.role, ModelRole::Embedder, "{}", manifest.name);
            }
        }
        let open = ["SigLIP2-base-224", "SmolVLM-256M", "SmolVLM-500M"];
        for name in open {
            let manifest = manifest(name).unwrap();
            assert!(manifest.revision_is_commit(), "{name}");
            assert!(manifest.sha256.contains_key("model.safetensors"), "{name}");
            assert!(manifest.research_only_notice().is_none(), "{name}");
        }
        let notice = manifest("FastVLM-0.5B")
            .unwrap()
            .research_only_notice()
            .unwrap();
        assert!(notice.contains("research only"), "{notice}");
    }

    #[test]
    fn pinned_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = manifest("SmolVLM-256M").unwrap().clone();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        // A file that is not the pinned one is named.
        manifest.sha256.retain(|file, _| file == "config.json");
        let error = manifest
            .check_pinned(dir.path(), None)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("config.json") && error.contains("pins"),
            "{error}"
        );
        // The SHA-256 of `{}`.
        manifest.sha256.insert(
            "config.json".into(),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a".into(),
        );
        assert_eq!(manifest.check_pinned(dir.path(), None).unwrap(), 1);
        // A pinned file not downloaded (an optional one) is not checked.
        manifest
            .sha256
            .insert("tokenizer.json".into(), "00".repeat(32));
        assert_eq!(manifest.check_pinned(dir.path(), None).unwrap(), 1);
    }

    #[test]
    fn the_cache_layout_is_found() {
        // A branch is followed through its ref.
        let cache = tempfile::tempdir().unwrap();
        let manifest = manifest("MobileCLIP2-S3").unwrap();
        assert_eq!(manifest.revision, "main");
        let repo_dir = cache.path().join("models--timm--MobileCLIP2-S3-OpenCLIP");
        let snapshot = repo_dir.join("snapshots/0123abcd");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), "0123abcd").unwrap();
        for file in &manifest.files {
            std::fs::write(snapshot.join(file), "x").unwrap();
        }
        let found = resolve(manifest, None, &settings(cache.path())).unwrap();
        assert_eq!(found.dir, snapshot);
        assert_eq!(found.source, "hf://timm/MobileCLIP2-S3-OpenCLIP@main");
        assert_eq!(found.revision.as_deref(), Some("0123abcd"));

        // A pinned commit is found by its snapshot, whatever the refs say.
        let manifest = super::manifest("MobileCLIP2-S0").unwrap();
        let repo_dir = cache.path().join("models--timm--MobileCLIP2-S0-OpenCLIP");
        let snapshot = repo_dir.join("snapshots").join(&manifest.revision);
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), "0123abcd").unwrap();
        for file in &manifest.files {
            std::fs::write(snapshot.join(file), "x").unwrap();
        }
        let found = resolve(manifest, None, &settings(cache.path())).unwrap();
        assert_eq!(found.dir, snapshot);
        assert_eq!(
            found.source,
            format!("hf://timm/MobileCLIP2-S0-OpenCLIP@{}", manifest.revision)
        );
        assert_eq!(found.revision.as_ref(), Some(&manifest.revision));
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
            checkpoint::shards_listed_by(&index).unwrap(),
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

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn a_transformers_fastvlm_with_only_tokenizer_json_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(fixture("fastvlm-tiny-hf")).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if name != "vocab.json" && name != "merges.txt" {
                std::fs::copy(entry.path(), dir.path().join(name)).unwrap();
            }
        }
        for name in ["FastVLM-0.5B", "FastVLM-7B"] {
            let located = use_directory(manifest(name).unwrap(), dir.path()).unwrap();
            assert_eq!(located.revision, None);
            assert_eq!(
                located.files.weights(),
                [dir.path().join("model.safetensors")]
            );
        }
    }

    #[test]
    fn a_directory_of_another_role_is_refused() {
        let error = use_directory(
            manifest("MobileCLIP2-S0").unwrap(),
            &fixture("fastvlm-tiny-apple"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("Apple's FastVLM checkpoint") && error.contains("not an embedder"),
            "{error}"
        );
    }

    #[test]
    fn weights_hashes_are_kept_while_the_file_is_unchanged() {
        let memo = tempfile::tempdir().unwrap();
        // A file last changed long before it is hashed: its kept hash is reused, as a
        // doctored memo shows.
        let settled = [fixture("mobileclip-s0-tiny").join("open_clip_model.safetensors")];
        let true_hash = crate::cache::file_sha256(&settled[0]).unwrap();
        assert_eq!(
            weights_sha256(&settled, Some(memo.path())).unwrap(),
            true_hash
        );
        let kept = std::fs::read_dir(memo.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = std::fs::read_to_string(&kept).unwrap();
        std::fs::write(&kept, text.replace(&true_hash, &"f".repeat(64))).unwrap();
        assert_eq!(
            weights_sha256(&settled, Some(memo.path())).unwrap(),
            "f".repeat(64)
        );
        assert_eq!(weights_sha256(&settled, None).unwrap(), true_hash);

        // A file changed just now: hashed every time, so a rewrite inside one clock tick
        // is never missed.
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("model.safetensors");
        std::fs::write(&weights, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let files = [weights.clone()];
        assert_eq!(weights_sha256(&files, Some(memo.path())).unwrap(), abc);
        std::fs::write(&weights, b"abd").unwrap();
        let abd = crate::cache::file_sha256(&weights).unwrap();
        assert_ne!(abd, abc);
        assert_eq!(weights_sha256(&files, Some(memo.path())).unwrap(), abd);

        // Shards: the hash of their names and hashes, which changes with either.
        let second = dir.path().join("model-2.safetensors");
        std::fs::write(&second, b"abc").unwrap();
        let both = [weights, second.clone()];
        let sharded = weights_sha256(&both, Some(memo.path())).unwrap();
        assert_eq!(sharded.len(), 64);
        assert_ne!(sharded, abd);
        std::fs::write(&second, b"xyz").unwrap();
        assert_ne!(weights_sha256(&both, Some(memo.path())).unwrap(), sharded);
    }
}
