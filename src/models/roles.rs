//! The two roles a model plays, one boundary each, and the loaders that pick the model kind
//! from a checkpoint directory's own configuration file.
//!
//! - An [`Embedder`] turns images and texts into unit vectors in one space.
//! - A [`Captioner`] turns an image and a prompt into text, streamed as it is generated.
//!
//! Everything above `models` (the stages, the commands) sees only these traits; which
//! architecture runs is decided by [`CheckpointLayout::detect`] from `config.json` or
//! `open_clip_config.json`, so any supported checkpoint works wherever a model is asked for.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use super::checkpoint::CheckpointLayout;
use super::fastvlm::FastVlm;
use super::generation::{Generation, GenerationSettings};
use super::mobileclip::MobileClip;
use super::siglip::Siglip;
use super::smolvlm::SmolVlm;
use super::store::ModelRole;
use super::ModelError;

/// How a video frame is brought to an embedder's input size before
/// [`Embedder::embed_frames`], as the model's own image processor would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFit {
    /// Scaled to cover the input, then the centre cut out (open_clip's resize + centre crop).
    CentreCrop,
    /// Scaled to the input size, the aspect ratio not kept (SigLIP's processor).
    Stretch,
}

/// A model that maps images and texts into one space of unit vectors.
pub trait Embedder: Send {
    /// The model's name, for documents and messages.
    fn name(&self) -> &str;
    /// The length of an embedding.
    fn dim(&self) -> usize;
    /// The input size (width, height) frames are brought to.
    fn input_size(&self) -> (u32, u32);
    /// How frames are brought to [`Embedder::input_size`].
    fn frame_fit(&self) -> FrameFit;
    /// Embeddings of pictures of any size, preprocessed exactly as the model's reference
    /// does: one L2-normalised row per picture, in order.
    fn embed_images(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>, ModelError>;
    /// Embeddings of frames already at the input size (brought there as
    /// [`Embedder::frame_fit`] says): one L2-normalised row per frame, in order.
    fn embed_frames(&self, frames: &[RgbImage]) -> Result<Vec<Vec<f32>>, ModelError>;
    /// Embeddings of texts: one L2-normalised row per text, in order.
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError>;
}

/// A vision-language model that describes images and answers text-only chat turns.
pub trait Captioner: Send {
    /// The model's name, e.g. `FastVLM-0.5B`.
    fn name(&self) -> String;
    /// Describes `image` following `instruction`; `on_token` receives the text as it grows.
    fn describe(
        &self,
        image: &RgbImage,
        instruction: &str,
        settings: &GenerationSettings,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError>;
    /// Answers a text-only chat turn (for summaries).
    fn generate_text(
        &self,
        system: Option<&str>,
        user: &str,
        settings: &GenerationSettings,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError>;
}

/// How a captioner is loaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptionerOptions {
    /// The dtype its weights and products run in.
    pub dtype: DType,
    /// Whether a model that can cut a picture into tiles (SmolVLM) does; `None` keeps what
    /// the checkpoint's processor configuration says. Models without tiles ignore it.
    pub image_splitting: Option<bool>,
}

impl CaptionerOptions {
    /// f32, the checkpoint's own processor settings.
    pub fn f32() -> Self {
        Self {
            dtype: DType::F32,
            image_splitting: None,
        }
    }
}

/// Loads the embedder in `dir`, of whichever supported kind its configuration declares.
pub fn load_embedder(dir: &Path, device: &Device) -> Result<Box<dyn Embedder>, ModelError> {
    match detect(dir, ModelRole::Embedder)? {
        CheckpointLayout::OpenClip => Ok(Box::new(MobileClip::load(dir, device)?)),
        CheckpointLayout::Siglip => Ok(Box::new(Siglip::load(dir, device)?)),
        other => Err(wrong_role(dir, other, ModelRole::Embedder)),
    }
}

/// Loads the captioner in `dir`, of whichever supported kind its configuration declares.
pub fn load_captioner(
    dir: &Path,
    options: CaptionerOptions,
    device: &Device,
) -> Result<Box<dyn Captioner>, ModelError> {
    match detect(dir, ModelRole::Captioner)? {
        CheckpointLayout::FastVlm(_) => Ok(Box::new(FastVlm::load(dir, options.dtype, device)?)),
        CheckpointLayout::SmolVlm => {
            let mut model = SmolVlm::load(dir, options.dtype, device)?;
            if let Some(splitting) = options.image_splitting {
                model.set_image_splitting(splitting);
            }
            Ok(Box::new(model))
        }
        other => Err(wrong_role(dir, other, ModelRole::Captioner)),
    }
}

/// The layout `dir` declares; a directory without a configuration file is taken to be in
/// `role`'s usual layout, so the loader's error names the files it lacks.
fn detect(dir: &Path, role: ModelRole) -> Result<CheckpointLayout, ModelError> {
    Ok(CheckpointLayout::detect(dir)?.unwrap_or(CheckpointLayout::usual_for(role)))
}

fn wrong_role(dir: &Path, found: CheckpointLayout, wanted: ModelRole) -> ModelError {
    ModelError::WrongModel {
        dir: dir.to_path_buf(),
        found: found.to_string(),
        wanted: wanted.with_article().to_string(),
    }
}

/// The rows of a `[rows, dim]` f32 tensor.
fn rows(tensor: Tensor) -> Result<Vec<Vec<f32>>, ModelError> {
    Ok(tensor.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}

impl Embedder for MobileClip {
    fn name(&self) -> &str {
        MobileClip::name(self)
    }

    fn dim(&self) -> usize {
        MobileClip::dim(self)
    }

    fn input_size(&self) -> (u32, u32) {
        MobileClip::input_size(self)
    }

    fn frame_fit(&self) -> FrameFit {
        FrameFit::CentreCrop
    }

    fn embed_images(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        rows(MobileClip::embed_images(self, images)?)
    }

    fn embed_frames(&self, frames: &[RgbImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        // At the input size, open_clip's resize and crop leave a frame as it is.
        rows(MobileClip::embed_images(self, frames)?)
    }

    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        rows(MobileClip::embed_texts(self, texts)?)
    }
}

impl Embedder for Siglip {
    fn name(&self) -> &str {
        Siglip::name(self)
    }

    fn dim(&self) -> usize {
        Siglip::dim(self)
    }

    fn input_size(&self) -> (u32, u32) {
        Siglip::input_size(self)
    }

    fn frame_fit(&self) -> FrameFit {
        FrameFit::Stretch
    }

    fn embed_images(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        rows(Siglip::embed_images(self, images)?)
    }

    fn embed_frames(&self, frames: &[RgbImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        rows(Siglip::embed_resized(self, frames)?)
    }

    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        rows(Siglip::embed_texts(self, texts)?)
    }
}

impl Captioner for FastVlm {
    fn name(&self) -> String {
        FastVlm::name(self)
    }

    fn describe(
        &self,
        image: &RgbImage,
        instruction: &str,
        settings: &GenerationSettings,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        FastVlm::describe(self, image, instruction, settings, on_token)
    }

    fn generate_text(
        &self,
        system: Option<&str>,
        user: &str,
        settings: &GenerationSettings,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        FastVlm::generate_text(self, system, user, settings, on_token)
    }
}

impl Captioner for SmolVlm {
    fn name(&self) -> String {
        SmolVlm::name(self)
    }

    fn describe(
        &self,
        image: &RgbImage,
        instruction: &str,
        settings: &GenerationSettings,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        SmolVlm::describe(self, image, instruction, settings, on_token)
    }

    fn generate_text(
        &self,
        system: Option<&str>,
        user: &str,
        settings: &GenerationSettings,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        SmolVlm::generate_text(self, system, user, settings, on_token)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn the_kind_comes_from_the_directory() {
        let embedder = load_embedder(&fixture("mobileclip-s0-tiny"), &Device::Cpu).unwrap();
        assert_eq!(embedder.frame_fit(), FrameFit::CentreCrop);
        let texts = embedder.embed_texts(&["a cat", "a dog"]).unwrap();
        assert_eq!(texts.len(), 2);
        assert_eq!(texts[0].len(), embedder.dim());
        let norm: f32 = texts[0].iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");

        let siglip = load_embedder(&fixture("siglip-tiny"), &Device::Cpu).unwrap();
        assert_eq!(siglip.frame_fit(), FrameFit::Stretch);
        assert!(siglip.name().contains("SigLIP"), "{}", siglip.name());
        let frame = RgbImage::from_pixel(
            siglip.input_size().0,
            siglip.input_size().1,
            image::Rgb([200, 30, 90]),
        );
        // A frame already at the input size embeds as the same picture through the processor.
        let fast = siglip.embed_frames(std::slice::from_ref(&frame)).unwrap();
        let full = siglip.embed_images(std::slice::from_ref(&frame)).unwrap();
        let cosine: f32 = fast[0].iter().zip(&full[0]).map(|(a, b)| a * b).sum();
        assert!(cosine > 0.9999, "{cosine}");

        let smolvlm = load_captioner(
            &fixture("smolvlm-tiny"),
            CaptionerOptions {
                dtype: DType::F32,
                image_splitting: Some(false),
            },
            &Device::Cpu,
        )
        .unwrap();
        assert!(smolvlm.name().contains("SmolVLM"), "{}", smolvlm.name());

        let captioner = load_captioner(
            &fixture("fastvlm-tiny-hf"),
            CaptionerOptions::f32(),
            &Device::Cpu,
        )
        .unwrap();
        assert!(captioner.name().contains("FastVLM"), "{}", captioner.name());
    }

    #[test]
    fn a_model_of_the_other_role_is_refused_by_name() {
        let error = load_embedder(&fixture("fastvlm-tiny-hf"), &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("not an embedder"), "{error}");
        let error = load_captioner(
            &fixture("mobileclip-s0-tiny"),
            CaptionerOptions::f32(),
            &Device::Cpu,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("not a captioner"), "{error}");
    }

    #[test]
    fn an_image_placeholder_typed_in_the_instruction_is_text_for_every_captioner() {
        let image = RgbImage::from_pixel(40, 30, image::Rgb([90, 160, 20]));
        let settings = GenerationSettings::greedy(4);
        for fixture_name in ["fastvlm-tiny-hf", "smolvlm-tiny"] {
            let captioner = load_captioner(
                &fixture(fixture_name),
                CaptionerOptions::f32(),
                &Device::Cpu,
            )
            .unwrap();
            let typed = captioner
                .describe(&image, "What is <image>?", &settings, &mut |_| {})
                .unwrap_or_else(|error| panic!("{fixture_name}: {error}"));
            let spelled = captioner
                .describe(&image, "What is <img>?", &settings, &mut |_| {})
                .unwrap();
            assert_eq!(typed.token_ids, spelled.token_ids, "{fixture_name}");
        }
    }

    /// `models` is the bottom layer: no file in it names a stage, the pipeline or the CLI.
    #[test]
    fn models_depend_on_nothing_above_them() {
        let above = [
            "caption", "embed", "pipeline", "select", "search", "output", "video", "cli",
            "analysis",
        ]
        .map(|module| format!("crate::{module}"));
        let mut pending = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src/models")];
        let mut files = 0;
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files += 1;
                    let text = std::fs::read_to_string(&path).unwrap();
                    for layer in &above {
                        assert!(!text.contains(layer), "{} uses {layer}", path.display());
                    }
                }
            }
        }
        assert!(files > 10, "{files}");
    }
}
