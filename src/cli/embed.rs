//! `keyscribe embed`: MobileCLIP2 embeddings of images or texts.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::Device;
use clap::Args;
use serde::Serialize;

use keyscribe::models::mobileclip::MobileClip;

/// Arguments of `keyscribe embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Images to embed (JPEG, PNG, WebP, BMP).
    #[arg(
        value_name = "IMAGE",
        required_unless_present = "texts",
        conflicts_with = "texts"
    )]
    images: Vec<PathBuf>,
    /// A text to embed; repeat the option for several texts.
    #[arg(long = "text", value_name = "TEXT")]
    texts: Vec<String>,
    /// The MobileCLIP2 checkpoint directory, as downloaded from the Hub:
    /// open_clip_config.json, open_clip_model.safetensors, tokenizer.json.
    #[arg(long, value_name = "DIR")]
    embedder: PathBuf,
    /// Print one JSON object {"model", "dim", "embeddings"} on stdout, one row per input in
    /// input order.
    #[arg(long)]
    json: bool,
}

/// The `--json` document.
#[derive(Serialize)]
struct EmbeddingsJson<'a> {
    model: &'a str,
    dim: usize,
    embeddings: Vec<Vec<f32>>,
}

/// Loads the embedder, embeds the inputs and prints the L2-normalised vectors.
pub fn run(args: EmbedArgs) -> anyhow::Result<()> {
    let model = MobileClip::load(&args.embedder, &Device::Cpu)
        .with_context(|| format!("loading the embedder from {}", args.embedder.display()))?;
    let (labels, embeddings) = if args.texts.is_empty() {
        let images = args
            .images
            .iter()
            .map(|path| keyscribe::picture::read_image(path))
            .collect::<Result<Vec<_>, _>>()?;
        let embeddings = model
            .embed_images(&images)
            .context("embedding the images")?;
        let labels = args
            .images
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        (labels, embeddings)
    } else {
        let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
        let embeddings = model.embed_texts(&texts).context("embedding the texts")?;
        (args.texts.clone(), embeddings)
    };
    let embeddings = embeddings.to_vec2::<f32>()?;
    if args.json {
        let document = EmbeddingsJson {
            model: model.name(),
            dim: model.dim(),
            embeddings,
        };
        println!("{}", serde_json::to_string(&document)?);
        return Ok(());
    }
    eprintln!(
        "{}: {}-d L2-normalised embeddings",
        model.name(),
        model.dim()
    );
    for (label, row) in labels.iter().zip(&embeddings) {
        let values: Vec<String> = row.iter().map(|v| format!("{v:.6}")).collect();
        println!("{label}\t{}", values.join(" "));
    }
    Ok(())
}
