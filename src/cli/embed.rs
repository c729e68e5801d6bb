//! `keyscribe embed`: the embedder's vectors for images or texts.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use keyscribe::pipeline::{load_embedder, ModelDirs};

use super::args::{EmbedderArgs, PipelineArgs};
use super::io::{at_most_one_stdin, read_image};

use super::print;

/// Arguments of `keyscribe embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Images to embed (JPEG, PNG, WebP, BMP); `-` reads one from stdin.
    #[arg(
        value_name = "IMAGE",
        required_unless_present = "texts",
        conflicts_with = "texts"
    )]
    images: Vec<PathBuf>,
    /// A text to embed; repeat the option for several texts.
    #[arg(long = "text", value_name = "TEXT")]
    texts: Vec<String>,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    embedder: EmbedderArgs,
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

/// Loads the embedder (the directory given, else the pipeline's model), embeds the inputs
/// and prints the L2-normalised vectors.
pub fn run(args: EmbedArgs) -> anyhow::Result<()> {
    at_most_one_stdin(&args.images)?;
    let config = args.pipeline.load(Vec::new())?;
    let dirs = ModelDirs {
        embedder: args.embedder.embedder.clone(),
        captioner: None,
    };
    // Every picture is read and checked before the model loads, so a bad one fails at once.
    let pictures = if args.texts.is_empty() {
        let (labels, images): (Vec<String>, Vec<_>) = args
            .images
            .iter()
            .map(|path| read_image(path))
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        Some((labels, images))
    } else {
        None
    };
    let (model, _) = load_embedder(&config, &dirs).context("loading the embedder")?;
    let (labels, embeddings) = if let Some((labels, images)) = pictures {
        let embeddings = model
            .embed_images(&images)
            .context("embedding the images")?;
        (labels, embeddings)
    } else {
        let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
        let embeddings = model.embed_texts(&texts).context("embedding the texts")?;
        (args.texts.clone(), embeddings)
    };
    if args.json {
        let document = EmbeddingsJson {
            model: model.name(),
            dim: model.dim(),
            embeddings,
        };
        print::json_line(&document)?;
        return Ok(());
    }
    print::note(format_args!(
        "{}: {}-d L2-normalised embeddings",
        model.name(),
        model.dim()
    ));
    for (label, row) in labels.iter().zip(&embeddings) {
        let values: Vec<String> = row.iter().map(|v| format!("{v:.6}")).collect();
        print::line(format_args!("{label}\t{}", values.join(" ")))?;
    }
    Ok(())
}
