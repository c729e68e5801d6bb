//! Pipeline files (TOML): the settings of every stage, the models and the prompt.
//!
//! A pipeline is read from a file path or by the name of a built-in one (`default`,
//! `article-demo`, `fast`, compiled in from `pipelines/`). Unknown keys and bad values are
//! errors that name the key and the file. Relative model directories are resolved against
//! the pipeline file's directory.
//!
//! Settings can also be changed on the command line without writing TOML: an [`Override`]
//! (`--set caption.max_tokens=16`, or a named flag such as `--max-tokens 16`) goes through
//! the same deserialisation and validation as the file, so a typo or a bad value is named
//! the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::models::captioner_device;
use crate::models::generation::resolve_dtype;
use crate::search::SearchConfig;
use crate::select::SelectConfig;
use crate::video::SampleRate;

/// The built-in pipelines: name and TOML text.
const BUILT_IN: [(&str, &str); 4] = [
    ("default", include_str!("../../pipelines/default.toml")),
    (
        "article-demo",
        include_str!("../../pipelines/article-demo.toml"),
    ),
    ("fast", include_str!("../../pipelines/fast.toml")),
    ("open", include_str!("../../pipelines/open.toml")),
];

/// A pipeline compiled into the binary from `pipelines/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltInPipeline {
    /// The name `--pipeline` takes.
    pub name: &'static str,
    /// The pipeline file's text.
    pub toml: &'static str,
}

impl BuiltInPipeline {
    /// What the pipeline is for: the file's first comment line.
    pub fn description(&self) -> &'static str {
        self.toml
            .lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix('#'))
            .map(str::trim)
            .unwrap_or_default()
    }
}

/// Every built-in pipeline, `default` first.
pub fn built_in_pipelines() -> impl Iterator<Item = BuiltInPipeline> {
    BUILT_IN
        .iter()
        .map(|&(name, toml)| BuiltInPipeline { name, toml })
}

/// The built-in pipeline called `name`.
pub fn built_in_pipeline(name: &str) -> Result<BuiltInPipeline, ConfigError> {
    built_in_pipelines()
        .find(|pipeline| pipeline.name == name)
        .ok_or_else(|| ConfigError::Unknown {
            name: name.to_string(),
            known: built_in_names(),
        })
}

fn built_in_names() -> Vec<String> {
    built_in_pipelines()
        .map(|pipeline| pipeline.name.to_string())
        .collect()
}

/// One setting changed on the command line instead of in a pipeline file.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// How the user gave it, for messages: `--set caption.max_tokens=16` or
    /// `--max-tokens 16`.
    pub origin: String,
    /// The setting's dotted key, as `section.name`.
    pub key: String,
    /// The new value.
    pub value: OverrideValue,
}

/// The value of an [`Override`].
#[derive(Debug, Clone, PartialEq)]
pub enum OverrideValue {
    /// Text as typed after `--set KEY=`: a TOML value (`16`, `0.3`, `true`, `"text"`) where
    /// the key takes one, else the text itself as a string (`bf16`, `Describe the scene`).
    Typed(String),
    /// Exactly this value (a named flag, already parsed).
    Exact(toml::Value),
}

impl Override {
    /// The override a named flag stands for: `--max-tokens 16` sets `caption.max_tokens`.
    pub fn flag(flag: &str, key: &str, value: toml::Value) -> Override {
        Override {
            origin: format!("{flag} {value}"),
            key: key.to_string(),
            value: OverrideValue::Exact(value),
        }
    }

    /// The values to try in turn: the TOML reading of typed text first, then the text as a
    /// string (so `caption.prompt=42` is the prompt "42").
    fn candidates(&self) -> Vec<toml::Value> {
        match &self.value {
            OverrideValue::Exact(value) => vec![value.clone()],
            OverrideValue::Typed(text) => {
                let mut candidates = Vec::new();
                if let Some(value) = toml_value(text) {
                    candidates.push(value);
                }
                if !matches!(candidates.first(), Some(toml::Value::String(_))) {
                    candidates.push(toml::Value::String(text.clone()));
                }
                candidates
            }
        }
    }
}

/// `text` read as one TOML value, if it is one.
fn toml_value(text: &str) -> Option<toml::Value> {
    let mut table: toml::Table = toml::from_str(&format!("value = {text}")).ok()?;
    if table.len() != 1 {
        return None;
    }
    table.remove("value")
}

impl FromStr for Override {
    type Err = ConfigError;

    /// Parses `SECTION.KEY=VALUE`, as `--set` takes it.
    fn from_str(text: &str) -> Result<Override, ConfigError> {
        let malformed = || ConfigError::MalformedOverride {
            text: text.to_string(),
        };
        let (key, value) = text.split_once('=').ok_or_else(malformed)?;
        let key = key.trim();
        let parts: Vec<&str> = key.split('.').collect();
        if parts.len() < 2 || parts.iter().any(|part| part.is_empty()) {
            return Err(malformed());
        }
        Ok(Override {
            origin: format!("--set {text}"),
            key: key.to_string(),
            value: OverrideValue::Typed(value.trim().to_string()),
        })
    }
}

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
    /// Decode the codec's key frames only (I-frames: much faster, coarser scene
    /// boundaries). Not the keyframes the pipeline selects.
    #[serde(alias = "keyframes_only")]
    pub codec_keyframes: bool,
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
            codec_keyframes: false,
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
    /// Compute precision: `auto` (bf16 where the hardware multiplies bf16: a CUDA GPU, a CPU
    /// with AVX-512 BF16; f32 elsewhere), `f32` or `bf16`.
    pub dtype: String,
    /// Whether a captioner that can cut a keyframe into tiles (SmolVLM) does; unset keeps
    /// the checkpoint's own processor setting. Captioners without tiles ignore it.
    pub image_splitting: Option<bool>,
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
            dtype: "auto".to_string(),
            image_splitting: None,
        }
    }
}

/// A value out of range: its dotted key and what is wrong.
struct BadSetting {
    key: String,
    problem: String,
}

/// What is wrong with a pipeline file or a command-line override.
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
    #[error("{}: {}`{key}` {problem}", path.display(), line_prefix(*line))]
    BadValue {
        /// The pipeline file.
        path: PathBuf,
        /// The line of the file holding the value, when it comes from the file.
        line: Option<usize>,
        /// The key, as `section.name`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A `--set` argument is not of the form `SECTION.KEY=VALUE`.
    #[error("expected SECTION.KEY=VALUE (e.g. caption.max_tokens=16), got `{text}`")]
    MalformedOverride {
        /// The argument as given.
        text: String,
    },
    /// A command-line override names an unknown key or gives a bad value.
    #[error("{origin}: {problem}")]
    BadOverride {
        /// How the override was given (`--set caption.max_tokens=0`, `--max-tokens 0`).
        origin: String,
        /// What is wrong, in the words used for pipeline files.
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
                known: built_in_names(),
            }),
        }
    }

    /// Parses pipeline TOML read from `path`, resolving relative directories against `base`.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<PipelineConfig, ConfigError> {
        let mut config: PipelineConfig =
            toml::from_str(text).map_err(|error: toml::de::Error| {
                let message = error.message().trim().replace('\n', " ");
                let location = error.span().map(|span| {
                    let number = line_number(text, span.start);
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
        config
            .validate(path)
            .map_err(|error| error.located_in(text))?;
        Ok(config)
    }

    /// Checks value ranges; the error names the key.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.check_values().map_err(|bad| ConfigError::BadValue {
            path: path.to_path_buf(),
            line: None,
            key: bad.key,
            problem: bad.problem,
        })
    }

    /// The settings with `overrides` applied in order, each read and checked as a value in
    /// a pipeline file would be (the error names the override and the problem); then the
    /// embedder's own selection defaults (its manifest's `[select]` table) fill what neither
    /// the pipeline nor an override set.
    pub fn with_overrides(self, overrides: &[Override]) -> Result<PipelineConfig, ConfigError> {
        let mut config = overrides
            .iter()
            .try_fold(self, |config, setting| config.with_override(setting))?;
        if let Some(table) = crate::models::store::manifest(&config.embed.model)
            .ok()
            .and_then(|manifest| manifest.select.as_ref())
        {
            // Built-in manifests only; their tables are checked by a test.
            let defaults: crate::select::SelectDefaults =
                table.clone().try_into().map_err(|error: toml::de::Error| {
                    ConfigError::BadOverride {
                        origin: format!("the {} manifest's [select] table", config.embed.model),
                        problem: error.to_string(),
                    }
                })?;
            config.select = config.select.with_model_defaults(&defaults);
        }
        Ok(config)
    }

    fn with_override(&self, setting: &Override) -> Result<PipelineConfig, ConfigError> {
        let mut first_problem = None;
        for value in setting.candidates() {
            match self.with_value(&setting.key, value) {
                Ok(config) => {
                    return match config.check_values() {
                        Ok(()) => Ok(config),
                        Err(bad) => Err(ConfigError::BadOverride {
                            origin: setting.origin.clone(),
                            problem: format!("`{}` {}", bad.key, bad.problem),
                        }),
                    }
                }
                Err(problem) => {
                    first_problem.get_or_insert(problem);
                }
            }
        }
        Err(ConfigError::BadOverride {
            origin: setting.origin.clone(),
            problem: first_problem.unwrap_or_default(),
        })
    }

    /// These settings with the dotted `key` set to `value`, read back through the same
    /// deserialisation as a pipeline file (unknown keys and wrong types are refused).
    fn with_value(&self, key: &str, value: toml::Value) -> Result<PipelineConfig, String> {
        let mut root = toml::Table::try_from(self).expect("pipeline settings serialise");
        let parts: Vec<&str> = key.split('.').collect();
        let (name, sections) = parts.split_last().expect("a key has at least one part");
        let mut table = &mut root;
        for (depth, section) in sections.iter().enumerate() {
            table = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| {
                    format!(
                        "`{}` is a setting, not a section",
                        parts[..=depth].join(".")
                    )
                })?;
        }
        table.insert(name.to_string(), value);
        root.try_into::<PipelineConfig>()
            .map_err(|error| error.message().trim().replace('\n', " "))
    }

    /// The first value out of range, with its key.
    fn check_values(&self) -> Result<(), BadSetting> {
        let bad = |key: &str, problem: &str| BadSetting {
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
        if !matches!(self.caption.dtype.as_str(), "auto" | "f32" | "bf16") {
            return Err(bad(
                "caption.dtype",
                "must be \"auto\", \"f32\" or \"bf16\"",
            ));
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
    /// into the cache key. Search settings apply at query time and are left out;
    /// `caption.dtype = "auto"` is recorded as the dtype the captioner runs in here.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("pipeline settings serialise");
        if let Some(table) = value.as_object_mut() {
            table.remove("search");
        }
        if let Ok(dtype) = resolve_dtype(&self.caption.dtype, &captioner_device()) {
            // candle names f32 and bf16 as `caption.dtype` does.
            value["caption"]["dtype"] = dtype.as_str().into();
        }
        value
    }
}

impl ConfigError {
    /// This error with the line of `text` (the pipeline file's contents) that holds the bad
    /// value, when the value is written there.
    fn located_in(self, text: &str) -> ConfigError {
        match self {
            ConfigError::BadValue {
                path,
                line: None,
                key,
                problem,
            } => ConfigError::BadValue {
                path,
                line: value_line(text, &key),
                key,
                problem,
            },
            other => other,
        }
    }
}

/// The 1-based number of the line of `text` holding byte `offset`.
fn line_number(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count()
        + 1
}

/// The line of pipeline `text` where the value of `key` (`section.name`) is written.
fn value_line(text: &str, key: &str) -> Option<usize> {
    type Spans = BTreeMap<String, BTreeMap<String, toml::Spanned<toml::Value>>>;
    let (section, name) = key.split_once('.')?;
    let tables: Spans = toml::from_str(text).ok()?;
    let value = tables.get(section)?.get(name)?;
    Some(line_number(text, value.span().start))
}

/// `line N: ` for an error message, or nothing when the line is unknown.
fn line_prefix(line: Option<usize>) -> String {
    line.map(|number| format!("line {number}: "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_pipelines_load() {
        use crate::models::store::{manifest, ModelRole};
        for (name, _) in BUILT_IN {
            let config = PipelineConfig::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                manifest(&config.embed.model).unwrap().role,
                ModelRole::Embedder
            );
            assert_eq!(
                manifest(&config.caption.model).unwrap().role,
                ModelRole::Captioner
            );
        }
        // The open pipeline runs only models a product may use.
        let open = PipelineConfig::load("open").unwrap();
        assert!(!manifest(&open.embed.model).unwrap().research_only);
        assert!(!manifest(&open.caption.model).unwrap().research_only);
        assert_eq!(open.caption.image_splitting, Some(false));
        let demo = PipelineConfig::load("article-demo").unwrap();
        assert!(demo.caption.prompt.len() > 20);
        assert_eq!(demo.select.max_keyframes, Some(8));
    }

    #[test]
    fn the_embedders_manifest_sets_selection_defaults_under_the_pipelines_own() {
        let open = PipelineConfig::load("open")
            .unwrap()
            .with_overrides(&[])
            .unwrap();
        let manifest = crate::models::store::manifest(&open.embed.model).unwrap();
        let table = manifest.select.as_ref().unwrap();
        let expected = table["sensitivity"].as_float().unwrap() as f32;
        assert_eq!(open.select.sensitivity, Some(expected));
        // The document records what ran.
        assert_eq!(
            open.to_json()["select"]["sensitivity"]
                .as_f64()
                .map(|v| v as f32),
            Some(expected)
        );
        // A pipeline's own value wins.
        let set = PipelineConfig::load("open")
            .unwrap()
            .with_overrides(&[set("select.sensitivity=2.5")])
            .unwrap();
        assert_eq!(set.select.sensitivity, Some(2.5));
        // An embedder without a table leaves the setting to the detector's default.
        let default = PipelineConfig::load("default")
            .unwrap()
            .with_overrides(&[])
            .unwrap();
        assert_eq!(default.select.sensitivity, None);
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
    fn bad_values_name_their_line() {
        for (text, line) in [
            ("[caption]\nmax_tokens = 0\n", 2),
            (
                "# mine\n\n[embed]\nmodel = \"MobileCLIP2-S0\"\nbatch_size = 0\n",
                5,
            ),
            (
                "[select]\nmin_scene_s = 1.0\nchange_threshold = 3.0\n[caption]\nmax_tokens = 5\n",
                3,
            ),
            ("select = { max_keyframes = 0 }\n", 1),
            ("[search]\n\ncaption_weight = -1.0\n", 3),
        ] {
            let error = PipelineConfig::parse(text, Path::new("p.toml"), Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with(&format!("p.toml: line {line}: `")),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn settings_record_the_decimals_written() {
        let text = "[select]\nchange_threshold = 0.3\nsensitivity = 2.1\n";
        let config = PipelineConfig::parse(text, Path::new("p.toml"), Path::new(".")).unwrap();
        let json = config.to_json().to_string();
        assert!(json.contains("\"change_threshold\":0.3,"), "{json}");
        assert!(json.contains("\"sensitivity\":2.1"), "{json}");
        assert!(!json.contains("2.09999"), "{json}");
    }

    #[test]
    fn relative_model_directories_follow_the_pipeline_file() {
        let text = "[embed]\ndir = \"weights/s0\"\n";
        let config = PipelineConfig::parse(text, Path::new("/p/x.toml"), Path::new("/p")).unwrap();
        assert_eq!(config.embed.dir, Some(PathBuf::from("/p/weights/s0")));
    }

    #[test]
    fn built_in_pipelines_describe_themselves() {
        let names: Vec<&str> = built_in_pipelines().map(|p| p.name).collect();
        assert_eq!(names[0], "default");
        for pipeline in built_in_pipelines() {
            let description = pipeline.description();
            assert!(
                description.len() > 10 && !description.starts_with('#'),
                "{}: {description:?}",
                pipeline.name
            );
        }
        assert!(built_in_pipeline("fast").unwrap().toml.contains("[decode]"));
        let error = built_in_pipeline("quick").unwrap_err().to_string();
        assert!(error.contains("quick") && error.contains("fast"), "{error}");
    }

    fn set(text: &str) -> Override {
        text.parse().unwrap()
    }

    #[test]
    fn dtype_is_auto_by_default_and_recorded_as_what_runs() {
        use crate::models::generation::auto_dtype;
        assert_eq!(PipelineConfig::default().caption.dtype, "auto");
        for name in ["default", "open", "fast", "article-demo"] {
            assert_eq!(PipelineConfig::load(name).unwrap().caption.dtype, "auto");
        }
        let here = auto_dtype(&captioner_device()).as_str();
        assert!(here == "f32" || here == "bf16", "{here}");
        let recorded = |dtype: &str| {
            let config = PipelineConfig::default()
                .with_overrides(&[set(&format!("caption.dtype={dtype}"))])
                .unwrap();
            assert_eq!(config.caption.dtype, dtype);
            config.to_json()["caption"]["dtype"].clone()
        };
        assert_eq!(recorded("auto"), here);
        assert_eq!(recorded("f32"), "f32");
        assert_eq!(recorded("bf16"), "bf16");
    }

    #[test]
    fn overrides_change_settings_as_the_file_would() {
        let config = PipelineConfig::default()
            .with_overrides(&[
                set("caption.max_tokens=16"),
                set("caption.dtype=bf16"),
                set("caption.prompt=42"),
                set("decode.sample_fps=all"),
                set("decode.codec_keyframes=true"),
                set("select.max_keyframes = 3"),
                set("select.change_threshold=0.35"),
                set("embed.dir=weights/s0"),
                Override::flag("--temperature", "caption.temperature", 0.5.into()),
            ])
            .unwrap();
        assert_eq!(config.caption.max_tokens, 16);
        assert_eq!(config.caption.dtype, "bf16");
        assert_eq!(config.caption.prompt, "42");
        assert_eq!(config.decode.sample_fps, SampleRate::All);
        assert!(config.decode.codec_keyframes);
        assert_eq!(config.select.max_keyframes, Some(3));
        assert_eq!(config.select.change_threshold, Some(0.35));
        assert_eq!(config.embed.dir, Some(PathBuf::from("weights/s0")));
        assert_eq!(config.caption.temperature, 0.5);
        // Everything not overridden is as it was.
        let default = PipelineConfig::default();
        let expected = PipelineConfig {
            decode: config.decode.clone(),
            embed: EmbedSettings {
                dir: config.embed.dir.clone(),
                ..default.embed
            },
            caption: CaptionSettings {
                max_tokens: 16,
                dtype: "bf16".into(),
                prompt: "42".into(),
                temperature: 0.5,
                ..default.caption
            },
            select: SelectConfig {
                max_keyframes: Some(3),
                change_threshold: Some(0.35),
                ..default.select
            },
            search: default.search,
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn override_typos_and_bad_values_are_named() {
        for (setting, expected) in [
            (
                set("caption.max_tokns=16"),
                "--set caption.max_tokns=16: unknown field `max_tokns`",
            ),
            (set("captions.max_tokens=16"), "unknown field `captions`"),
            (
                set("caption.max_tokens=0"),
                "--set caption.max_tokens=0: `caption.max_tokens` must be between 1 and 4096",
            ),
            (set("caption.max_tokens=many"), "many"),
            (set("caption.max_tokens=1.5"), "1.5"),
            (
                set("caption.max_tokens.limit=3"),
                "`caption.max_tokens` is a setting, not a section",
            ),
            (set("decode.sample_fps=fast"), "bad sample rate `fast`"),
            (
                Override::flag("--max-tokens", "caption.max_tokens", 0.into()),
                "--max-tokens 0: `caption.max_tokens` must be between 1 and 4096",
            ),
            (
                Override::flag("--threshold", "select.change_threshold", 2.5.into()),
                "--threshold 2.5: `select.change_threshold`",
            ),
        ] {
            let error = PipelineConfig::default()
                .with_overrides(std::slice::from_ref(&setting))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{setting:?}: {error}");
            assert!(error.starts_with(&setting.origin), "{error}");
        }
    }

    #[test]
    fn malformed_sets_are_refused() {
        for text in [
            "max_tokens=16",
            "caption.=16",
            ".max_tokens=16",
            "caption.max_tokens",
        ] {
            let error = text.parse::<Override>().unwrap_err().to_string();
            assert!(
                error.contains("SECTION.KEY=VALUE") && error.contains(text),
                "{error}"
            );
        }
    }

    #[test]
    fn unknown_names_list_the_built_in_ones() {
        let error = PipelineConfig::load("no-such-pipeline")
            .unwrap_err()
            .to_string();
        assert!(error.contains("article-demo"), "{error}");
    }
}
