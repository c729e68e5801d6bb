//! `keyscribe describe IMAGE`: one FastVLM description of one image, streamed as it is
//! generated.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use keyscribe::models::captioner_device;
use keyscribe::models::fastvlm::{parse_dtype, FastVlm, GenerationSettings};
use keyscribe::pipeline::{locate_captioner, ModelDirs, PipelineConfig};

/// Arguments of `keyscribe describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The image to describe (JPEG, PNG, WebP, BMP).
    image: PathBuf,
    /// A FastVLM checkpoint directory in either published layout (default: FastVLM-0.5B
    /// from the local Hugging Face cache, downloaded if absent).
    #[arg(long, value_name = "DIR")]
    captioner: Option<PathBuf>,
    /// The instruction (default: the default pipeline's caption prompt).
    #[arg(long)]
    prompt: Option<String>,
    /// At most this many new tokens.
    #[arg(long, value_name = "N")]
    max_tokens: Option<usize>,
    /// Greedy decoding (the default pipeline's choice too); overrides --temperature.
    #[arg(long)]
    greedy: bool,
    /// Sample with this temperature instead of decoding greedily.
    #[arg(long)]
    temperature: Option<f64>,
    /// Nucleus sampling threshold.
    #[arg(long)]
    top_p: Option<f64>,
    /// Seed of the sampler.
    #[arg(long)]
    seed: Option<u64>,
    /// Compute precision of the language model: f32 or bf16.
    #[arg(long)]
    dtype: Option<String>,
    /// Print one JSON object {"caption", "token_ids", "ttft_ms", "tokens_per_s"} on stdout.
    #[arg(long)]
    json: bool,
}

/// The `--json` document.
#[derive(Serialize)]
struct DescriptionJson<'a> {
    caption: &'a str,
    token_ids: &'a [u32],
    ttft_ms: f64,
    tokens_per_s: f64,
}

/// Loads the captioner and describes the image.
pub fn run(args: DescribeArgs) -> anyhow::Result<()> {
    let defaults = PipelineConfig::default().caption;
    let image = keyscribe::picture::read_image(&args.image)?;
    let located = locate_captioner(
        &PipelineConfig::default(),
        &ModelDirs {
            embedder: None,
            captioner: args.captioner.clone(),
        },
    )?;
    let dtype_name = args.dtype.unwrap_or(defaults.dtype);
    let dtype =
        parse_dtype(&dtype_name).map_err(|problem| anyhow::anyhow!("--dtype: {problem}"))?;
    let model = FastVlm::load(&located.dir, dtype, &captioner_device())
        .with_context(|| format!("loading the captioner from {}", located.dir.display()))?;
    let settings = GenerationSettings {
        max_new_tokens: args.max_tokens.unwrap_or(defaults.max_tokens),
        temperature: if args.greedy {
            0.0
        } else {
            args.temperature.unwrap_or(defaults.temperature)
        },
        top_p: args.top_p.unwrap_or(defaults.top_p),
        seed: args.seed.unwrap_or(defaults.seed),
    };
    if settings.max_new_tokens == 0 {
        anyhow::bail!("--max-tokens must be at least 1");
    }
    let instruction = args.prompt.unwrap_or(defaults.prompt);
    let stream = !args.json;
    let mut stdout = std::io::stdout();
    let generation = model
        .describe(&image, &instruction, &settings, &mut |text| {
            if stream {
                let _ = write!(stdout, "{text}");
                let _ = stdout.flush();
            }
        })
        .with_context(|| format!("describing {}", args.image.display()))?;
    let ttft_ms = generation.time_to_first_token.as_secs_f64() * 1000.0;
    if args.json {
        let document = DescriptionJson {
            caption: &generation.text,
            token_ids: &generation.token_ids,
            ttft_ms,
            tokens_per_s: generation.tokens_per_second,
        };
        println!("{}", serde_json::to_string(&document)?);
    } else {
        println!();
        eprintln!(
            "{}: {} prompt positions, vision {:.0} ms, first token after {ttft_ms:.0} ms, {} tokens at {:.1} tokens/s",
            model.name(),
            generation.prompt_tokens,
            generation.vision.as_secs_f64() * 1000.0,
            generation.token_ids.len(),
            generation.tokens_per_second
        );
    }
    Ok(())
}
