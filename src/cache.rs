//! A cache of analyses, keyed by the video's content and the effective pipeline settings,
//! so that `summarize VIDEO` and `search VIDEO` reuse an earlier run instead of decoding
//! the video again.
//!
//! Entries live in `$KEYSCRIBE_CACHE_DIR`, else `$XDG_CACHE_HOME/keyscribe`, else
//! `~/.cache/keyscribe`, as `analyses/<key>/analysis.json` plus the embeddings sidecar.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The directory holding cached analyses.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisCache {
    root: PathBuf,
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
}

/// JSON with object keys sorted at every level, so equal settings hash equally.
fn canonical_json(value: &serde_json::Value) -> String {
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
