//! The embed stage: an image embedder turns sampled frames into L2-normalised vectors, which
//! feed keyframe selection and the search index.

use image::RgbImage;

use crate::models::ModelError;

/// An image embedder as the embed stage uses it.
pub trait FrameEmbedder: Send {
    /// The model's name, for the analysis document.
    fn name(&self) -> &str;
    /// The size frames are delivered at; the decoder scales (centre crop) to it.
    fn input_size(&self) -> (u32, u32);
    /// Embeddings of frames already at [`FrameEmbedder::input_size`], one L2-normalised row
    /// per frame, in order.
    fn embed_frames(&mut self, frames: &[RgbImage]) -> Result<Vec<Vec<f32>>, ModelError>;
}

impl FrameEmbedder for crate::models::mobileclip::MobileClip {
    fn name(&self) -> &str {
        crate::models::mobileclip::MobileClip::name(self)
    }

    fn input_size(&self) -> (u32, u32) {
        crate::models::mobileclip::MobileClip::input_size(self)
    }

    fn embed_frames(&mut self, frames: &[RgbImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        Ok(self.embed_images(frames)?.to_vec2::<f32>()?)
    }
}
