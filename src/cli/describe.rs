//! `keyscribe describe IMAGE...`: the captioner on still images, loaded once, one
//! description per image, streamed as it is generated.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use keyscribe::pipeline::{load_captioner, ModelDirs, Override};

use super::args::{CaptionFlags, CaptionerArgs, PipelineArgs};
use super::io::{at_most_one_stdin, is_stdio, read_image, write_stdout};

use super::print;

/// Arguments of `keyscribe describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The images to describe (JPEG, PNG, WebP, BMP); `-` reads one from stdin.
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    caption: CaptionFlags,
    #[command(flatten)]
    captioner: CaptionerArgs,
    /// Greedy decoding (the default pipeline's choice too); overrides --temperature.
    #[arg(long)]
    greedy: bool,
    /// Sample with this temperature instead of decoding greedily (sets
    /// `caption.temperature`).
    #[arg(long)]
    temperature: Option<f64>,
    /// Nucleus sampling threshold (sets `caption.top_p`).
    #[arg(long)]
    top_p: Option<f64>,
    /// Seed of the sampler (sets `caption.seed`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(..=i64::MAX as u64))]
    seed: Option<u64>,
    /// Print one JSON object per image and line: {"image", "caption", "token_ids",
    /// "ttft_ms", "tokens_per_s"}.
    #[arg(long)]
    json: bool,
}

/// One line of `--json` output.
#[derive(Serialize)]
struct DescriptionJson<'a> {
    image: &'a str,
    caption: &'a str,
    token_ids: &'a [u32],
    ttft_ms: f64,
    tokens_per_s: f64,
}

/// Loads the captioner once and describes each image in turn.
pub fn run(args: DescribeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    at_most_one_stdin(&args.images)?;
    for image in args.images.iter().filter(|path| !is_stdio(path)) {
        if !image.is_file() {
            bail!("{}: no such image file", image.display());
        }
    }
    let config = args.pipeline.load(overrides(&args))?;
    // Pictures are read (and their sizes checked) before the model loads, so a bad image
    // fails in a moment.
    let images = args
        .images
        .iter()
        .map(|path| read_image(path))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dirs = ModelDirs {
        embedder: None,
        captioner: args.captioner.captioner.clone(),
    };
    print::note(format_args!(
        "loading the captioner ({})…",
        config.caption.model
    ));
    let (captioner, source) = load_captioner(&config, &dirs).context("loading the captioner")?;
    let model = captioner.model();
    print::note(format_args!(
        "loaded {} from {} in {:.1} s",
        model.name(),
        source.location,
        started.elapsed().as_secs_f64()
    ));
    let caption = &config.caption;
    let settings = keyscribe::caption::generation_settings(caption);
    let several = args.images.len() > 1;
    for (name, image) in images {
        print::note(format_args!("describing {name}…"));
        let stream = !args.json;
        if stream && several {
            write_stdout(format!("{name}: ").as_bytes())?;
        }
        let mut stdout = std::io::stdout();
        let generation = model
            .describe(&image, &caption.prompt, &settings, &mut |text| {
                if stream {
                    // With several images each description keeps to its own line.
                    let text = if several {
                        text.replace('\n', " ")
                    } else {
                        text.to_string()
                    };
                    // A closed stdout ends the output, not the work: the stats still print.
                    let _ = write!(stdout, "{text}").and_then(|()| stdout.flush());
                }
            })
            .with_context(|| format!("describing {name}"))?;
        let ttft_ms = generation.time_to_first_token.as_secs_f64() * 1000.0;
        if args.json {
            let line = DescriptionJson {
                image: &name,
                caption: &generation.text,
                token_ids: &generation.token_ids,
                ttft_ms,
                tokens_per_s: generation.tokens_per_second,
            };
            write_stdout(format!("{}\n", serde_json::to_string(&line)?).as_bytes())?;
        } else {
            write_stdout(b"\n")?;
        }
        print::note(format_args!(
            "{name}: {} prompt positions, vision {:.0} ms, first token after {ttft_ms:.0} ms, {} tokens at {:.1} tokens/s",
            generation.prompt_tokens,
            generation.vision.as_secs_f64() * 1000.0,
            generation.token_ids.len(),
            generation.tokens_per_second
        ));
    }
    print::note(format_args!(
        "described {} image{} in {:.1} s, model loading included",
        args.images.len(),
        if several { "s" } else { "" },
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The flags given, as caption settings.
fn overrides(args: &DescribeArgs) -> Vec<Override> {
    let mut overrides = args.caption.overrides();
    overrides.extend(args.captioner.overrides());
    let temperature = if args.greedy {
        Some(0.0)
    } else {
        args.temperature
    };
    if let Some(temperature) = temperature {
        let flag = if args.greedy {
            "--greedy"
        } else {
            "--temperature"
        };
        overrides.push(Override::flag(
            flag,
            "caption.temperature",
            temperature.into(),
        ));
    }
    if let Some(top_p) = args.top_p {
        overrides.push(Override::flag("--top-p", "caption.top_p", top_p.into()));
    }
    if let Some(seed) = args.seed {
        overrides.push(Override::flag(
            "--seed",
            "caption.seed",
            i64::try_from(seed)
                .expect("the parser keeps seeds within i64")
                .into(),
        ));
    }
    overrides
}
