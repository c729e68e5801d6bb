//! Each keyframe as a picture file: decoded again from the video at its native size (sample
//! aspect ratio and rotation applied) by accurate seek, written as JPEG or PNG into a
//! directory with an `index.json` that lists them.
//!
//! Files are named by keyframe number and timecode, so that they sort in time order:
//! `keyframe-001-00-00-01.500.jpg`. Every file, `index.json` last, is written atomically.

use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::analysis::Analysis;
use crate::atomic;
use crate::video::{FrameSeeker, ResizeMode, Size, VideoError};

/// JPEG quality of written keyframes.
const JPEG_QUALITY: u8 = 92;

/// How keyframe pictures are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ImageKind {
    /// JPEG at quality 92: small files.
    #[default]
    Jpeg,
    /// PNG: lossless, larger.
    Png,
}

impl ImageKind {
    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "jpg",
            ImageKind::Png => "png",
        }
    }
}

/// One written keyframe, as listed in `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyframeImage {
    /// The keyframe's `index` in the analysis.
    pub index: usize,
    /// File name inside the output directory.
    pub file: String,
    /// The keyframe's time in seconds, as the analysis records it.
    pub time_s: f64,
    /// The same time as `HH:MM:SS.mmm`.
    pub timecode: String,
    /// When the decoded frame starts, in seconds (the frame on screen at `time_s`).
    pub frame_time_s: f64,
    /// Width of the picture in pixels.
    pub width: u32,
    /// Height of the picture in pixels.
    pub height: u32,
    /// The keyframe's caption, if it has one.
    pub caption: Option<String>,
}

/// The `index.json` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImagesIndex {
    /// The video the pictures were decoded from.
    pub video: PathBuf,
    /// The pictures, in keyframe order.
    pub keyframes: Vec<KeyframeImage>,
}

/// What can go wrong writing keyframe pictures.
#[derive(Debug, Error)]
pub enum ImagesError {
    /// The video could not be opened or a keyframe not decoded.
    #[error(transparent)]
    Video(#[from] VideoError),
    /// A file or the directory could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A picture could not be encoded.
    #[error("{}: cannot encode the picture: {problem}", path.display())]
    Encode {
        /// The file it was meant for.
        path: PathBuf,
        /// The encoder's explanation.
        problem: String,
    },
}

/// The file name of keyframe number `number` (from 1) at `time`.
pub fn image_name(number: usize, timecode_stem: &str, kind: ImageKind) -> String {
    format!("keyframe-{number:03}-{timecode_stem}.{}", kind.extension())
}

/// Decodes every keyframe of `analysis` from `video` and writes it into `out_dir` (created
/// if missing) as `kind`, plus `index.json`.
pub fn write_images(
    video: &Path,
    analysis: &Analysis,
    out_dir: &Path,
    kind: ImageKind,
) -> Result<ImagesIndex, ImagesError> {
    std::fs::create_dir_all(out_dir).map_err(|source| ImagesError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut seeker = FrameSeeker::open(video, Size::Native, ResizeMode::Pad)?;
    let mut keyframes = Vec::with_capacity(analysis.keyframes.len());
    for (position, keyframe) in analysis.keyframes.iter().enumerate() {
        let time = keyframe.time();
        let frame = seeker.frame_at(time)?;
        let file = image_name(position + 1, &time.file_stem(), kind);
        let path = out_dir.join(&file);
        let bytes = encode(&frame.image, kind).map_err(|problem| ImagesError::Encode {
            path: path.clone(),
            problem,
        })?;
        atomic::write(&path, &bytes).map_err(|source| ImagesError::Io {
            path: path.clone(),
            source,
        })?;
        keyframes.push(KeyframeImage {
            index: keyframe.index,
            file,
            time_s: keyframe.time_s,
            timecode: time.timecode(),
            frame_time_s: frame.time.seconds(),
            width: frame.image.width(),
            height: frame.image.height(),
            caption: keyframe.caption.clone(),
        });
    }
    let index = ImagesIndex {
        video: video.to_path_buf(),
        keyframes,
    };
    let index_path = out_dir.join("index.json");
    let mut json = serde_json::to_vec_pretty(&index).expect("the index serialises");
    json.push(b'\n');
    atomic::write(&index_path, &json).map_err(|source| ImagesError::Io {
        path: index_path,
        source,
    })?;
    Ok(index)
}

/// Encodes a picture.
fn encode(picture: &image::RgbImage, kind: ImageKind) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    let written = match kind {
        ImageKind::Jpeg => picture.write_with_encoder(
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY),
        ),
        ImageKind::Png => {
            picture.write_with_encoder(image::codecs::png::PngEncoder::new(&mut bytes))
        }
    };
    written.map_err(|error| error.to_string())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_time_order() {
        assert_eq!(
            image_name(7, "00-01-02.345", ImageKind::Png),
            "keyframe-007-00-01-02.345.png"
        );
        assert_eq!(ImageKind::Jpeg.extension(), "jpg");
    }
}
