//! What the HTML report needs besides the document: keyframe thumbnails, fetched again from
//! the video by accurate seek, and the change-score timeline from the embeddings sidecar.

use std::path::Path;

use super::PipelineError;
use crate::analysis::{Analysis, AnalysisError};
use crate::output::html::{ReportInputs, Timeline};
use crate::video::{FrameSeeker, ResizeMode, Size};

/// Gathers the report's pictures and timeline for the analysis stored at `document`.
///
/// Missing pieces do not fail the report: if the video is gone or changed, or the sidecar is
/// missing, the report is made without them and the returned warnings say why.
pub fn report_inputs(document: &Path, analysis: &Analysis) -> (ReportInputs, Vec<String>) {
    let mut warnings = Vec::new();
    let video = Path::new(&analysis.video.path);
    let same_video = || {
        crate::cache::file_sha256(video)
            .map(|sha256| analysis.video.sha256.is_empty() || sha256 == analysis.video.sha256)
            .unwrap_or(false)
    };
    let thumbnails = if analysis.live.is_some() {
        // A live source cannot be read back (and may be a device that never ends).
        warnings.push(format!(
            "{}: a live stream, so the report has no thumbnails",
            video.display()
        ));
        vec![None; analysis.keyframes.len()]
    } else if !same_video() {
        warnings.push(format!(
            "{}: the analysed video is missing or has changed, so the report has no thumbnails",
            video.display()
        ));
        vec![None; analysis.keyframes.len()]
    } else {
        match keyframe_thumbnails(video, analysis) {
            Ok(pictures) => pictures.into_iter().map(Some).collect(),
            Err(error) => {
                warnings.push(format!("thumbnails left out: {error}"));
                vec![None; analysis.keyframes.len()]
            }
        }
    };
    let timeline = match analysis.load_frames(document) {
        Ok(frames) => Some(Timeline::from_frames(&frames)),
        Err(AnalysisError::NoSidecar { .. }) => None,
        Err(error) => {
            warnings.push(format!("timeline left out: {error}"));
            None
        }
    };
    (
        ReportInputs {
            thumbnails,
            timeline,
        },
        warnings,
    )
}

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
