//! The embed stage: an image embedder turns sampled frames into L2-normalised vectors, which
//! feed keyframe selection and the search index.

use crate::models::roles::{Embedder, FrameFit};
use crate::video::{ResizeMode, Size};

/// The size and fit the decoder delivers frames in for `embedder`: its input size, brought
/// there as its own image processor would.
pub fn frame_geometry(embedder: &dyn Embedder) -> (Size, ResizeMode) {
    let (width, height) = embedder.input_size();
    let mode = match embedder.frame_fit() {
        FrameFit::CentreCrop => ResizeMode::Crop,
        FrameFit::Stretch => ResizeMode::Stretch,
    };
    (Size::Exact { width, height }, mode)
}
