//! The caption stage: a vision-language model describes each keyframe with the pipeline's
//! prompt and decoding settings.

use candle_core::Device;
use image::RgbImage;

use crate::models::generation::{resolve_dtype, GenerationSettings};
use crate::models::roles::{Captioner, CaptionerOptions};
use crate::models::ModelError;
use crate::pipeline::CaptionSettings;

/// A captioner with the pipeline's prompt and decoding settings fixed.
pub struct KeyframeCaptioner {
    model: Box<dyn Captioner>,
    name: String,
    instruction: String,
    settings: GenerationSettings,
}

impl KeyframeCaptioner {
    /// Wraps `model` with the caption settings' prompt, token limit and sampling.
    pub fn new(model: Box<dyn Captioner>, settings: &CaptionSettings) -> Self {
        Self {
            name: model.name(),
            model,
            instruction: settings.prompt.clone(),
            settings: generation_settings(settings),
        }
    }

    /// The model's name, for the analysis document.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model (for summaries, which reuse its language model, and `describe`).
    pub fn model(&self) -> &dyn Captioner {
        self.model.as_ref()
    }

    /// Describes a full-resolution keyframe; `on_token` receives the text as it is generated.
    pub fn caption(
        &self,
        frame: &RgbImage,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<String, ModelError> {
        Ok(self
            .model
            .describe(frame, &self.instruction, &self.settings, on_token)?
            .text)
    }
}

/// The decoding settings of a pipeline's `[caption]` table.
pub fn generation_settings(settings: &CaptionSettings) -> GenerationSettings {
    GenerationSettings {
        max_new_tokens: settings.max_tokens,
        temperature: settings.temperature,
        top_p: settings.top_p,
        seed: settings.seed,
    }
}

/// How a pipeline's `[caption]` table asks for the captioner to be loaded on `device`
/// (`dtype = "auto"` resolved for it).
pub fn captioner_options(
    settings: &CaptionSettings,
    device: &Device,
) -> Result<CaptionerOptions, ModelError> {
    let dtype = resolve_dtype(&settings.dtype, device).map_err(|problem| ModelError::Config {
        path: "caption.dtype".into(),
        problem,
    })?;
    Ok(CaptionerOptions {
        dtype,
        image_splitting: settings.image_splitting,
    })
}
