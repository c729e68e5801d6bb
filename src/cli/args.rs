//! Flags that several commands share, declared once and flattened into each command's
//! arguments (as uv's CLI does): where the models come from, which pipeline and which of its
//! settings to change, and where an analysis goes.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use keyscribe::pipeline::{ModelDirs, Override, PipelineConfig};
use keyscribe::video::SampleRate;

/// Compute precision of the captioner's networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    /// bf16 where the hardware multiplies it (a CPU with AVX-512 BF16, a GPU), else f32.
    Auto,
    /// 32-bit floats: the reference's numbers.
    F32,
    /// bfloat16: half the memory; about twice as fast on CPUs with AVX-512 BF16.
    Bf16,
}

impl Dtype {
    /// The name pipeline files use (`caption.dtype`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Auto => "auto",
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
        }
    }
}

/// Where the embedder comes from.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Models")]
pub struct EmbedderArgs {
    /// A local embedder checkpoint directory in the layout the Hub serves (default: the
    /// pipeline's model: its `dir`, else the Hugging Face cache, else a download).
    #[arg(long, value_name = "DIR")]
    pub embedder: Option<PathBuf>,
}

/// Where the captioner comes from and how it computes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Models")]
pub struct CaptionerArgs {
    /// A local captioner checkpoint directory in the layout the Hub serves (default: the
    /// pipeline's model: its `dir`, else the Hugging Face cache, else a download).
    #[arg(long, value_name = "DIR")]
    pub captioner: Option<PathBuf>,
    /// Compute precision of the captioner (sets `caption.dtype`).
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
}

impl CaptionerArgs {
    /// `--dtype` as a pipeline setting.
    pub fn overrides(&self) -> Vec<Override> {
        self.dtype
            .map(|dtype| Override::flag("--dtype", "caption.dtype", dtype.name().into()))
            .into_iter()
            .collect()
    }
}

/// Both models.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// The embedder.
    #[command(flatten)]
    pub embedder: EmbedderArgs,
    /// The captioner.
    #[command(flatten)]
    pub captioner: CaptionerArgs,
}

impl ModelArgs {
    /// The directories given, which win over the pipeline's.
    pub fn dirs(&self) -> ModelDirs {
        ModelDirs {
            embedder: self.embedder.embedder.clone(),
            captioner: self.captioner.captioner.clone(),
        }
    }
}

/// The pipeline and its settings.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Pipeline")]
pub struct PipelineArgs {
    /// A pipeline file, or the name of a built-in one (see `keyscribe pipelines list`).
    #[arg(long, short, default_value = "default")]
    pub pipeline: String,
    /// Change one of the pipeline's settings, as in its TOML: `--set caption.max_tokens=16`,
    /// `--set decode.sample_fps=all`. Repeatable; applied after the named setting flags.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub settings: Vec<Override>,
}

impl PipelineArgs {
    /// The pipeline with the named flags' `overrides` applied, then every `--set`.
    pub fn load(&self, overrides: Vec<Override>) -> anyhow::Result<PipelineConfig> {
        let config = PipelineConfig::load(&self.pipeline)?;
        let all: Vec<Override> = overrides
            .into_iter()
            .chain(self.settings.iter().cloned())
            .collect();
        Ok(config.with_overrides(&all)?)
    }
}

/// The caption settings a command may change by name.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Pipeline")]
pub struct CaptionFlags {
    /// The instruction given with each image (sets `caption.prompt`).
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// At most this many new tokens per caption (sets `caption.max_tokens`).
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,
}

impl CaptionFlags {
    /// The flags given, as pipeline settings.
    pub fn overrides(&self) -> Vec<Override> {
        let mut overrides = Vec::new();
        if let Some(prompt) = &self.prompt {
            overrides.push(Override::flag(
                "--prompt",
                "caption.prompt",
                prompt.as_str().into(),
            ));
        }
        if let Some(tokens) = self.max_tokens {
            overrides.push(Override::flag(
                "--max-tokens",
                "caption.max_tokens",
                i64::from(tokens).into(),
            ));
        }
        overrides
    }
}

/// The sampling and selection settings a command may change by name.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Pipeline")]
pub struct SelectionFlags {
    /// Frames per second sampled by presentation time, or `all` (sets `decode.sample_fps`).
    #[arg(long, value_name = "FPS")]
    pub sample_fps: Option<SampleRate>,
    /// The least cosine distance from the current scene that counts as a change, a floor
    /// under the footage-relative test (sets `select.change_threshold`).
    #[arg(long, value_name = "DISTANCE")]
    pub threshold: Option<f64>,
}

impl SelectionFlags {
    /// The flags given, as pipeline settings.
    pub fn overrides(&self) -> anyhow::Result<Vec<Override>> {
        let mut overrides = Vec::new();
        if let Some(rate) = self.sample_fps {
            let value = toml::Value::try_from(rate).context("--sample-fps")?;
            overrides.push(Override::flag("--sample-fps", "decode.sample_fps", value));
        }
        if let Some(threshold) = self.threshold {
            overrides.push(Override::flag(
                "--threshold",
                "select.change_threshold",
                threshold.into(),
            ));
        }
        Ok(overrides)
    }
}

/// Where an analysis and its views are written, and what is printed.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Where to write the analysis document (default: VIDEO_NAME.analysis.json in the
    /// current directory; `-` for stdout). Its embeddings go beside it in
    /// NAME.embeddings.safetensors.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write the captions as SRT subtitles (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub srt: Option<PathBuf>,
    /// Also write the captions as WebVTT subtitles (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub vtt: Option<PathBuf>,
    /// Also write the HTML report (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Print the analysis document on stdout instead of a line per caption.
    #[arg(long)]
    pub json: bool,
    /// No progress bars, no lines per keyframe and no closing line (warnings and errors
    /// still show).
    #[arg(long, short)]
    pub quiet: bool,
}
