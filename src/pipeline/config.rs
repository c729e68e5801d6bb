//! Pipeline files (TOML): the settings of every stage, the models and the prompt.
//!
//! A pipeline is read from a file path or by the name of a built-in one (`default`,
//! `article-demo`, `fast`, compiled in from `pipelines/`). Unknown keys and bad values are
//! errors that name the key and the file. Relative model directories are resolved against
//! the pipeline file's directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::search::SearchConfig;
use crate::select::SelectConfig;
use crate::video::SampleRate;

/// The built-in pipelines, by name.
const BUILT_IN: [(&str, &str); 3] = [
    ("default", include_str!("../../pipelines/default.toml")),
    (
        "article-demo",
        include_str!("../../pipelines/article-demo.toml"),
    ),
    ("fast", include_str!("../../pipelines/fast.toml")),
];

/// Every stage's settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Decoding and sampling.
    pub decode: DecodeSettings,
    /// The embedder.
    pub embed: EmbedSettings,
    /// The captioner.
    pub caption: CaptionSettings,
    /// Keyframe selection.
    pub select: SelectConfig,
    /// Scene search (query time only: not part of an analysis's cache key).
    pub search: SearchConfig,
}

/// How frames are taken from the video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeSettings {
    /// Frames per second sampled by presentation time, or `"all"`.
    pub sample_fps: SampleRate,
    /// Decode key frames only (much faster, coarser scene boundaries).
    pub keyframes_only: bool,
    /// Analyse from this time on (seconds from the start of the file); times stay counted
    /// from the start of the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_s: Option<f64>,
    /// Analyse up to this time (seconds from the start of the file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_s: Option<f64>,
}

impl Default for DecodeSettings {
    fn default() -> Self {
        DecodeSettings {
            sample_fps: SampleRate::PerSecond(2.0),
            keyframes_only: false,
            start_s: None,
            end_s: None,
        }
    }
}

/// Which embedder and how it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedSettings {
    /// A model name from `models/` (see `keyscribe models list`).
    pub model: String,
    /// A local checkpoint directory in the Hub's layout, used instead of the cache.
    pub dir: Option<PathBuf>,
    /// Frames embedded together.
    pub batch_size: usize,
}

impl Default for EmbedSettings {
    fn default() -> Self {
        EmbedSettings {
            model: crate::models::store::DEFAULT_EMBEDDER.to_string(),
            dir: None,
            batch_size: 8,
        }
    }
}

/// Which captioner, its prompt and its decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptionSettings {
    /// Whether keyframes are captioned at all.
    pub enabled: bool,
    /// A model name from `models/`.
    pub model: String,
    /// A local checkpoint directory in the Hub's layout, used instead of the cache.
    pub dir: Option<PathBuf>,
    /// The instruction given with each keyframe.
    pub prompt: String,
    /// At most this many new tokens per caption.
    pub max_tokens: usize,
    /// Sampling temperature; 0 means greedy decoding (deterministic).
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this.
    pub top_p: f64,
    /// Seed of the sampler (used when `temperature` > 0).
    pub seed: u64,
    /// Compute precision: `f32` or `bf16`.
    pub dtype: String,
}

impl Default for CaptionSettings {
    fn default() -> Self {
        CaptionSettings {
            enabled: true,
            model: crate::models::store::DEFAULT_CAPTIONER.to_string(),
            dir: None,
            prompt: "Describe this image in one sentence.".to_string(),
            max_tokens: 64,
            temperature: 0.0,
            top_p: 0.9,
            seed: 299792458,
            dtype: "f32".to_string(),
        }
    }
}

/// What is wrong with a pipeline file.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The pipeline file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The pipeline file.
        path: PathBuf,
        /// The parser's message (names the key and the line).
        message: String,
    },
    /// A value is out of range.
    #[error("{}: `{key}` {problem}", path.display())]
    BadValue {
        /// The pipeline file.
        path: PathBuf,
        /// The key, as `section.name`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// No file and no built-in pipeline of this name.
    #[error("no pipeline file `{name}` (and no built-in pipeline of that name; built-in: {})", known.join(", "))]
    Unknown {
        /// The name or path given.
        name: String,
        /// The built-in names.
        known: Vec<String>,
    },
}

impl PipelineConfig {
    /// Reads a pipeline from a file, or a built-in pipeline by name.
    pub fn load(name_or_path: &str) -> Result<PipelineConfig, ConfigError> {
        let path = Path::new(name_or_path);
        if path.is_file() {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let base = path.parent().unwrap_or(Path::new("."));
            return Self::parse(&text, path, base);
        }
        match BUILT_IN.iter().find(|(name, _)| *name == name_or_path) {
            Some((name, text)) => {
                let label = PathBuf::from(format!("pipelines/{name}.toml"));
                Self::parse(text, &label, Path::new("."))
            }
            None => Err(ConfigError::Unknown {
                name: name_or_path.to_string(),
                known: BUILT_IN.iter().map(|(name, _)| name.to_string()).collect(),
            }),
        }
    }

    /// Parses pipeline TOML read from `path`, resolving relative directories against `base`.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<PipelineConfig, ConfigError> {
        let mut config: PipelineConfig =
            toml::from_str(text).map_err(|error: toml::de::Error| {
                let message = error.message().trim().replace('\n', " ");
                let location = error.span().map(|span| {
                    let start = span.start.min(text.len());
                    let number = text[..start].matches('\n').count() + 1;
                    let line = text.lines().nth(number - 1).unwrap_or_default().trim();
                    format!("line {number} (`{line}`)")
                });
                ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: match location {
                        Some(location) => format!("{location}: {message}"),
                        None => message,
                    },
                }
            })?;
        for dir in [&mut config.embed.dir, &mut config.caption.dir]
            .into_iter()
            .flatten()
        {
            if dir.is_relative() {
                *dir = base.join(&*dir);
            }
        }
        config.validate(path)?;
        Ok(config)
    }

    /// Checks value ranges; the error names the key.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: &str| ConfigError::BadValue {
            path: path.to_path_buf(),
            key: key.to_string(),
            problem: problem.to_string(),
        };
        if let Some(start) = self.decode.start_s {
            if !(start.is_finite() && start >= 0.0) {
                return Err(bad(
                    "decode.start_s",
                    "must be a number of seconds, 0 or more",
                ));
            }
        }
        if let Some(end) = self.decode.end_s {
            if !(end.is_finite() && end > self.decode.start_s.unwrap_or(0.0)) {
                return Err(bad(
                    "decode.end_s",
                    "must be a number of seconds after decode.start_s",
                ));
            }
        }
        if !(1..=256).contains(&self.embed.batch_size) {
            return Err(bad("embed.batch_size", "must be between 1 and 256"));
        }
        if !(1..=4096).contains(&self.caption.max_tokens) {
            return Err(bad("caption.max_tokens", "must be between 1 and 4096"));
        }
        if !(0.0..=5.0).contains(&self.caption.temperature) {
            return Err(bad("caption.temperature", "must be between 0 and 5"));
        }
        if !(self.caption.top_p > 0.0 && self.caption.top_p <= 1.0) {
            return Err(bad("caption.top_p", "must be in (0, 1]"));
        }
        if !matches!(self.caption.dtype.as_str(), "f32" | "bf16") {
            return Err(bad("caption.dtype", "must be \"f32\" or \"bf16\""));
        }
        if self.caption.prompt.trim().is_empty() {
            return Err(bad("caption.prompt", "must not be empty"));
        }
        if let Err(error) = self.select.validate() {
            return Err(bad(&format!("select.{}", error.field), &error.reason));
        }
        if let Err(error) = self.search.validate() {
            return Err(bad(&format!("search.{}", error.field), error.reason));
        }
        Ok(())
    }

    /// The settings that shape an analysis, as JSON: recorded in the document and hashed
    /// into the cache key. Search settings apply at query time and are left out.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("pipeline settings serialise");
        if let Some(table) = value.as_object_mut() {
            table.remove("search");
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_pipelines_load() {
        for (name, _) in BUILT_IN {
            PipelineConfig::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let demo = PipelineConfig::load("article-demo").unwrap();
        assert!(demo.caption.prompt.len() > 20);
        assert_eq!(demo.select.max_keyframes, Some(8));
    }

    #[test]
    fn a_typo_names_the_key_and_the_file() {
        let text = "[caption]\nmax_tokns = 12\n";
        let error = PipelineConfig::parse(text, Path::new("my.toml"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("my.toml: line 2 (`max_tokns = 12`): unknown field `max_tokns`"),
            "{error}"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("[caption]\nmax_tokens = 0\n", "caption.max_tokens"),
            ("[caption]\ndtype = \"f16\"\n", "caption.dtype"),
            ("[embed]\nbatch_size = 0\n", "embed.batch_size"),
            ("[decode]\nstart_s = -1.0\n", "decode.start_s"),
            ("[decode]\nstart_s = 5.0\nend_s = 5.0\n", "decode.end_s"),
            ("[decode]\nsample_fps = -1\n", "sample_fps"),
            ("[decode]\nsample_fps = \"fast\"\n", "fast"),
            (
                "[select]\nchange_threshold = 3.0\n",
                "select.change_threshold",
            ),
            ("[select]\nmax_keyframes = 0\n", "select.max_keyframes"),
            ("[search]\ncaption_weight = -1.0\n", "search.caption_weight"),
        ] {
            let error = PipelineConfig::parse(text, Path::new("p.toml"), Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(key) && error.contains("p.toml"),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn relative_model_directories_follow_the_pipeline_file() {
        let text = "[embed]\ndir = \"weights/s0\"\n";
        let config = PipelineConfig::parse(text, Path::new("/p/x.toml"), Path::new("/p")).unwrap();
        assert_eq!(config.embed.dir, Some(PathBuf::from("/p/weights/s0")));
    }

    #[test]
    fn unknown_names_list_the_built_in_ones() {
        let error = PipelineConfig::load("no-such-pipeline")
            .unwrap_err()
            .to_string();
        assert!(error.contains("article-demo"), "{error}");
    }
}
