//! The caption stage: a vision-language model describes each keyframe.

use image::RgbImage;

use crate::models::ModelError;

/// A captioner as the caption stage uses it: its prompt and decoding settings are fixed when
/// it is made.
pub trait FrameCaptioner: Send {
    /// The model's name, for the analysis document.
    fn name(&self) -> &str;
    /// Describes a full-resolution keyframe; `on_token` receives the text as it is generated.
    fn caption(
        &mut self,
        frame: &RgbImage,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<String, ModelError>;
}
