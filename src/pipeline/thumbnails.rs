//! Keyframe thumbnails for reports: each keyframe fetched again from the video by accurate
//! seek, scaled down and JPEG-encoded.

use std::path::Path;

use super::PipelineError;
use crate::analysis::Analysis;
use crate::video::{FrameSeeker, ResizeMode, Size};

/// Width of report thumbnails in pixels; the height follows the video's aspect ratio.
pub const THUMBNAIL_WIDTH: u32 = 320;

/// JPEG quality of thumbnails.
const THUMBNAIL_QUALITY: u8 = 85;

/// One JPEG thumbnail per keyframe of `analysis`, in keyframe order, from `video`.
pub fn keyframe_thumbnails(
    video: &Path,
    analysis: &Analysis,
) -> Result<Vec<Vec<u8>>, PipelineError> {
    let info = crate::video::probe(video)?;
    let height = (f64::from(THUMBNAIL_WIDTH) * f64::from(info.height)
        / f64::from(info.width.max(1)))
    .round()
    .max(1.0) as u32;
    let size = Size::Exact {
        width: THUMBNAIL_WIDTH,
        height: height + height % 2,
    };
    let mut seeker = FrameSeeker::open(video, size, ResizeMode::Pad)?;
    analysis
        .keyframes
        .iter()
        .map(|keyframe| {
            let frame = seeker.frame_at(keyframe.time())?;
            encode_jpeg(&frame.image)
        })
        .collect()
}

/// Encodes a picture as JPEG.
pub fn encode_jpeg(picture: &image::RgbImage) -> Result<Vec<u8>, PipelineError> {
    let mut bytes = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, THUMBNAIL_QUALITY);
    picture
        .write_with_encoder(encoder)
        .map_err(|error| PipelineError::Failed {
            stage: "thumbnails".into(),
            message: format!("JPEG encoding failed: {error}"),
        })?;
    Ok(bytes)
}
