//! A cache of analyses, keyed by the video's content and the effective pipeline settings,
//! so that `summarize VIDEO` and `search VIDEO` reuse an earlier run instead of decoding
//! the video again.
//!
//! Entries live in `$KEYSCRIBE_CACHE_DIR`, else `$XDG_CACHE_HOME/keyscribe`, else
//! `~/.cache/keyscribe`, as `analyses/<key>/analysis.json` plus the embeddings sidecar.
//! Videos read from stdin are spooled to `spool/` while a command runs. Model weights are not
//! kept here but in the Hugging Face cache.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use thiserror::Error;

/// SHA-256 of a file's bytes, as lowercase hex.
pub fn file_sha256(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A cache file or directory that could not be read, written or removed.
#[derive(Debug, Error)]
#[error("{}: {source}", path.display())]
pub struct CacheError {
    /// The file or directory.
    pub path: PathBuf,
    /// The operating system's error.
    pub source: io::Error,
}

impl CacheError {
    fn at(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
        move |source| CacheError {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The directory holding cached analyses.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisCache {
    root: PathBuf,
}

/// One cached analysis, as `keyscribe cache list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedAnalysis {
    /// The cache key (the entry's directory name).
    pub key: String,
    /// The entry's directory.
    pub dir: PathBuf,
    /// The analysed video's path as the document records it; `None` when the document is
    /// missing or unreadable.
    pub video: Option<String>,
    /// When the document was written; `None` when it is missing.
    pub modified: Option<SystemTime>,
    /// Bytes on disk: the document, its embeddings sidecar and anything else in the entry.
    pub bytes: u64,
}

/// What [`AnalysisCache::clear`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cleared {
    /// Cached analyses removed.
    pub entries: usize,
    /// Bytes freed.
    pub bytes: u64,
}

/// A stream (stdin) copied into the cache directory for a command that needs a file, such
/// as FFmpeg seeking in a video; the file is removed when this is dropped.
#[derive(Debug)]
pub struct SpooledFile {
    path: PathBuf,
}

impl SpooledFile {
    /// Where the copy is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpooledFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl AnalysisCache {
    /// The cache at `root`.
    pub fn at(root: PathBuf) -> Self {
        AnalysisCache { root }
    }

    /// The user's cache: `$KEYSCRIBE_CACHE_DIR`, `$XDG_CACHE_HOME/keyscribe` or
    /// `~/.cache/keyscribe`.
    pub fn from_env() -> Self {
        let root = std::env::var_os("KEYSCRIBE_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|dir| PathBuf::from(dir).join("keyscribe"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/keyscribe"))
            })
            .unwrap_or_else(|| std::env::temp_dir().join("keyscribe-cache"));
        AnalysisCache { root }
    }

    /// The key of a video's analysis under some settings: a hash of the video's content
    /// hash and the settings' canonical JSON.
    pub fn key(video_sha256: &str, settings: &serde_json::Value) -> String {
        let mut hasher = Sha256::new();
        hasher.update(video_sha256.as_bytes());
        hasher.update(b"\n");
        hasher.update(canonical_json(settings).as_bytes());
        hex(&hasher.finalize()[..16])
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Where the analysis with this key is (or would be) stored.
    pub fn analysis_path(&self, key: &str) -> PathBuf {
        self.root.join("analyses").join(key).join("analysis.json")
    }

    /// The stored analysis with this key, if there is one.
    pub fn lookup(&self, key: &str) -> Option<PathBuf> {
        let path = self.analysis_path(key);
        path.is_file().then_some(path)
    }

    /// The cache's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every cached analysis, oldest first (an empty list when nothing was ever cached).
    pub fn entries(&self) -> Result<Vec<CachedAnalysis>, CacheError> {
        let analyses = self.root.join("analyses");
        let listing = match std::fs::read_dir(&analyses) {
            Ok(listing) => listing,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(CacheError::at(&analyses)(error)),
        };
        let mut entries = Vec::new();
        for entry in listing {
            let dir = entry.map_err(CacheError::at(&analyses))?.path();
            if !dir.is_dir() {
                continue;
            }
            let document = dir.join("analysis.json");
            let video = std::fs::read(&document)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                .and_then(|value| value["video"]["path"].as_str().map(str::to_string));
            let modified = std::fs::metadata(&document)
                .and_then(|metadata| metadata.modified())
                .ok();
            entries.push(CachedAnalysis {
                key: dir
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                bytes: bytes_under(&dir)?,
                dir,
                video,
                modified,
            });
        }
        entries.sort_by(|a, b| (a.modified, &a.key).cmp(&(b.modified, &b.key)));
        Ok(entries)
    }

    /// Removes every cached analysis and says how much was freed.
    pub fn clear(&self) -> Result<Cleared, CacheError> {
        let mut cleared = Cleared::default();
        for entry in self.entries()? {
            std::fs::remove_dir_all(&entry.dir).map_err(CacheError::at(&entry.dir))?;
            cleared.entries += 1;
            cleared.bytes += entry.bytes;
        }
        Ok(cleared)
    }

    /// Copies `source` to a new file in the cache's `spool/` directory.
    pub fn spool(&self, source: &mut dyn Read) -> Result<SpooledFile, CacheError> {
        static SPOOLED: AtomicUsize = AtomicUsize::new(0);
        let dir = self.root.join("spool");
        std::fs::create_dir_all(&dir).map_err(CacheError::at(&dir))?;
        let number = SPOOLED.fetch_add(1, Ordering::SeqCst);
        let spooled = SpooledFile {
            path: dir.join(format!("stdin-{}-{number}", std::process::id())),
        };
        let mut file = File::create(&spooled.path).map_err(CacheError::at(&spooled.path))?;
        io::copy(source, &mut file).map_err(CacheError::at(&spooled.path))?;
        Ok(spooled)
    }
}

/// Total size of the files under `dir`.
fn bytes_under(dir: &Path) -> Result<u64, CacheError> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(CacheError::at(dir))? {
        let path = entry.map_err(CacheError::at(dir))?.path();
        let metadata = std::fs::symlink_metadata(&path).map_err(CacheError::at(&path))?;
        total += if metadata.is_dir() {
            bytes_under(&path)?
        } else {
            metadata.len()
        };
    }
    Ok(total)
}

/// JSON with object keys sorted at every level, so equal settings hash equally.
pub(crate) fn canonical_json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|key| {
                    format!(
                        "{}:{}",
                        serde_json::Value::String(key.clone()),
                        canonical_json(&map[key])
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sha256_of_a_known_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            file_sha256(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn keys_depend_on_content_and_settings_not_key_order() {
        let a = json!({"decode": {"sample_fps": 2.0, "size": "256x256"}, "caption": {"max_tokens": 64}});
        let b = json!({"caption": {"max_tokens": 64}, "decode": {"size": "256x256", "sample_fps": 2.0}});
        let c = json!({"caption": {"max_tokens": 65}, "decode": {"size": "256x256", "sample_fps": 2.0}});
        assert_eq!(AnalysisCache::key("h1", &a), AnalysisCache::key("h1", &b));
        assert_ne!(AnalysisCache::key("h1", &a), AnalysisCache::key("h1", &c));
        assert_ne!(AnalysisCache::key("h1", &a), AnalysisCache::key("h2", &a));
    }

    #[test]
    fn entries_list_and_clear_removes_the_analyses_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = AnalysisCache::at(dir.path().to_path_buf());
        assert_eq!(cache.entries().unwrap(), Vec::new());
        for (key, video, sidecar) in [("k1", "/videos/a.mp4", 100), ("k2", "/videos/b.mp4", 50)] {
            let path = cache.analysis_path(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let document = json!({"schema": "keyscribe.analysis/1", "video": {"path": video}});
            std::fs::write(&path, document.to_string()).unwrap();
            std::fs::write(
                path.with_file_name("analysis.embeddings.safetensors"),
                vec![0u8; sidecar],
            )
            .unwrap();
        }
        let broken = cache.analysis_path("k3");
        std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
        std::fs::write(&broken, "{").unwrap();
        let other = dir.path().join("models-elsewhere");
        std::fs::write(&other, "weights").unwrap();

        let entries = cache.entries().unwrap();
        let mut seen: Vec<(String, Option<String>)> = entries
            .iter()
            .map(|entry| (entry.key.clone(), entry.video.clone()))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("k1".to_string(), Some("/videos/a.mp4".to_string())),
                ("k2".to_string(), Some("/videos/b.mp4".to_string())),
                ("k3".to_string(), None),
            ]
        );
        let total: u64 = entries.iter().map(|entry| entry.bytes).sum();
        let documents: u64 = ["k1", "k2", "k3"]
            .iter()
            .map(|key| std::fs::metadata(cache.analysis_path(key)).unwrap().len())
            .sum();
        assert_eq!(total, documents + 150);
        assert!(entries.iter().all(|entry| entry.modified.is_some()));

        let cleared = cache.clear().unwrap();
        assert_eq!(
            cleared,
            Cleared {
                entries: 3,
                bytes: total
            }
        );
        assert_eq!(cache.entries().unwrap(), Vec::new());
        assert!(other.is_file(), "only analyses are removed");
    }

    #[test]
    fn spooled_copies_disappear_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = AnalysisCache::at(dir.path().to_path_buf());
        let first = cache.spool(&mut &b"video bytes"[..]).unwrap();
        let second = cache.spool(&mut &b"more"[..]).unwrap();
        assert_ne!(first.path(), second.path());
        assert_eq!(std::fs::read(first.path()).unwrap(), b"video bytes");
        let path = first.path().to_path_buf();
        drop(first);
        assert!(!path.exists());
        assert!(second.path().exists());
    }

    #[test]
    fn lookup_finds_stored_analyses_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = AnalysisCache::at(dir.path().to_path_buf());
        assert_eq!(cache.lookup("k"), None);
        let path = cache.analysis_path("k");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{}").unwrap();
        assert_eq!(cache.lookup("k"), Some(path));
    }
}
