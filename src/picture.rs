//! The size limits of every picture keyscribe decodes or preprocesses (image files, video
//! frames, model inputs), and reading image files within them.
//!
//! A picture's memory follows from its dimensions, which a tiny file can claim to be huge (a
//! 312-byte PNG says 1x60000), and preprocessing multiplies a lopsided picture (a centre crop
//! of a 1x60000 picture first resizes it to 256x15360000). So dimensions are checked before
//! anything is allocated for them, against one pixel budget ([`MAX_PIXELS`]) and one aspect
//! ratio limit ([`MAX_ASPECT_RATIO`]).

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};
use thiserror::Error;

/// The most pixels a picture may have: 100 megapixels, e.g. 12000x8000 (photos up to
/// 100 MP, video up to 8K). Its RGB copy takes 300 MB.
pub const MAX_PIXELS: u64 = 100_000_000;

/// The most one side of a picture may be longer than the other: 32 times (panoramas and
/// ultra-wide video stay well inside). It bounds what preprocessing makes of a picture: a
/// centre crop to a square resizes the short side to the square's side, so the long side
/// becomes at most this many squares long.
pub const MAX_ASPECT_RATIO: u32 = 32;

/// The largest buffer an image decoder may allocate for a picture within [`MAX_PIXELS`]:
/// four channels of 16 bits per pixel.
const MAX_DECODER_BYTES: u64 = MAX_PIXELS * 8;

/// Why a picture's dimensions are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PictureSizeError {
    /// A side is 0 pixels.
    #[error("the picture is empty ({width}x{height} pixels)")]
    Empty {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// More pixels than [`MAX_PIXELS`].
    #[error(
        "the picture is {width}x{height} pixels ({:.0} megapixels); at most {} megapixels are read",
        megapixels(*width, *height),
        MAX_PIXELS / 1_000_000
    )]
    TooManyPixels {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// One side more than [`MAX_ASPECT_RATIO`] times the other.
    #[error(
        "the picture is {width}x{height} pixels, one side more than {MAX_ASPECT_RATIO} times the other"
    )]
    TooLopsided {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
}

fn megapixels(width: u32, height: u32) -> f64 {
    f64::from(width) * f64::from(height) / 1e6
}

/// Checks a picture's dimensions against [`MAX_PIXELS`] and [`MAX_ASPECT_RATIO`].
pub fn check_size(width: u32, height: u32) -> Result<(), PictureSizeError> {
    if width == 0 || height == 0 {
        return Err(PictureSizeError::Empty { width, height });
    }
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(PictureSizeError::TooManyPixels { width, height });
    }
    let (short, long) = (width.min(height), width.max(height));
    if u64::from(long) > u64::from(short) * u64::from(MAX_ASPECT_RATIO) {
        return Err(PictureSizeError::TooLopsided { width, height });
    }
    Ok(())
}

/// What can go wrong reading an image file.
#[derive(Debug, Error)]
pub enum ImageFileError {
    /// The file cannot be opened or read.
    #[error("{}: {source}", path.display())]
    Unreadable {
        /// The image file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not an image in a format keyscribe reads, or it is damaged.
    #[error("{}: not an image keyscribe can read ({reason})", path.display())]
    NotImage {
        /// The image file.
        path: PathBuf,
        /// The decoder's explanation.
        reason: String,
    },
    /// The picture's dimensions are outside the limits.
    #[error("{}: {source}", path.display())]
    TooLarge {
        /// The image file.
        path: PathBuf,
        /// Which limit it exceeds.
        source: PictureSizeError,
    },
}

/// Reads an image file (JPEG, PNG, WebP, BMP; the format is found from the contents) as RGB.
///
/// The dimensions in the file's header are checked with [`check_size`] before the picture
/// is decoded, and the decoder's own allocations are capped as well.
pub fn read_image(path: &Path) -> Result<RgbImage, ImageFileError> {
    let unreadable = |source| ImageFileError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        return Err(unreadable(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "is a directory, not an image file",
        )));
    }
    let reader = ImageReader::open(path)
        .map_err(unreadable)?
        .with_guessed_format()
        .map_err(unreadable)?;
    decode_bounded(reader, path)
}

/// Reads an image held in memory (from stdin, say) as [`read_image`] reads a file; `name`
/// names it in errors.
pub fn read_image_bytes(bytes: &[u8], name: &Path) -> Result<RgbImage, ImageFileError> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|source| ImageFileError::Unreadable {
            path: name.to_path_buf(),
            source,
        })?;
    decode_bounded(reader, name)
}

/// Decodes a picture after checking the dimensions in its header, with the decoder's
/// allocations capped.
fn decode_bounded<R: std::io::BufRead + std::io::Seek>(
    mut reader: ImageReader<R>,
    path: &Path,
) -> Result<RgbImage, ImageFileError> {
    let not_image = |error: image::ImageError| match error {
        image::ImageError::IoError(source) => ImageFileError::Unreadable {
            path: path.to_path_buf(),
            source,
        },
        other => ImageFileError::NotImage {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    };
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODER_BYTES);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(not_image)?;
    let (width, height) = decoder.dimensions();
    check_size(width, height).map_err(|source| ImageFileError::TooLarge {
        path: path.to_path_buf(),
        source,
    })?;
    let picture = DynamicImage::from_decoder(decoder).map_err(not_image)?;
    Ok(match picture {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_inside_the_limits_pass() {
        for (width, height) in [(1, 1), (7680, 4320), (12500, 8000), (32, 1), (1, 32)] {
            assert_eq!(check_size(width, height), Ok(()), "{width}x{height}");
        }
    }

    #[test]
    fn sizes_outside_the_limits_say_which_limit() {
        assert!(matches!(
            check_size(1, 60000),
            Err(PictureSizeError::TooLopsided { .. })
        ));
        assert!(matches!(
            check_size(33, 1),
            Err(PictureSizeError::TooLopsided { .. })
        ));
        assert!(matches!(
            check_size(12000, 9000),
            Err(PictureSizeError::TooManyPixels { .. })
        ));
        assert!(matches!(
            check_size(u32::MAX, u32::MAX),
            Err(PictureSizeError::TooManyPixels { .. })
        ));
        assert!(matches!(
            check_size(0, 10),
            Err(PictureSizeError::Empty { .. })
        ));
        let message = check_size(2, 16384).unwrap_err().to_string();
        assert!(message.contains("2x16384") && message.contains("32 times"));
        let message = check_size(20000, 20000).unwrap_err().to_string();
        assert!(message.contains("400 megapixels") && message.contains("at most 100"));
    }
}
