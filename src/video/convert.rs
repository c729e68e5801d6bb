//! Conversion of decoded pictures to RGB at the sizes the models need: swscale for the
//! colour conversion and scaling, then crop or pad, then the display rotation.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ffmpeg_next::format::Pixel;
use ffmpeg_next::software::scaling::{Context as Scaler, Flags};
use ffmpeg_next::util::color;
use ffmpeg_next::util::frame::video::Video as VideoFrame;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::VideoError;
use crate::picture::{self, PictureSizeError};

/// The picture size frames are delivered at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Size {
    /// The displayed size of the video (sample aspect ratio and rotation applied).
    #[default]
    Native,
    /// Exactly this many pixels.
    Exact {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
}

impl FromStr for Size {
    type Err = VideoError;

    /// Parses `native` or `WIDTHxHEIGHT` (e.g. `256x256`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || VideoError::BadSetting {
            problem: format!("bad size `{text}`: expected WIDTHxHEIGHT (e.g. 256x256) or `native`"),
        };
        if text.eq_ignore_ascii_case("native") {
            return Ok(Size::Native);
        }
        let (width, height) = text.split_once(['x', 'X']).ok_or_else(bad)?;
        let width: u32 = width.trim().parse().map_err(|_| bad())?;
        let height: u32 = height.trim().parse().map_err(|_| bad())?;
        if width == 0 || height == 0 || width > 16384 || height > 16384 {
            return Err(bad());
        }
        picture::check_size(width, height).map_err(|error| VideoError::BadSetting {
            problem: format!("bad size `{text}`: {error}"),
        })?;
        Ok(Size::Exact { width, height })
    }
}

impl TryFrom<String> for Size {
    type Error = VideoError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Size> for String {
    fn from(size: Size) -> String {
        size.to_string()
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Size::Native => f.write_str("native"),
            Size::Exact { width, height } => write!(f, "{width}x{height}"),
        }
    }
}

/// How a picture is fitted to a size of another aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Scale both axes independently to fill the size exactly.
    Stretch,
    /// Keep the aspect ratio, fill the size, cut the overhang equally on both sides.
    #[default]
    Crop,
    /// Keep the aspect ratio, fit inside the size, fill the rest with black.
    Pad,
}

impl FromStr for ResizeMode {
    type Err = VideoError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "stretch" => Ok(ResizeMode::Stretch),
            "crop" => Ok(ResizeMode::Crop),
            "pad" => Ok(ResizeMode::Pad),
            other => Err(VideoError::BadSetting {
                problem: format!("bad resize mode `{other}`: expected stretch, crop or pad"),
            }),
        }
    }
}

/// Where the scaled picture goes inside the output, before rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// Size swscale scales the whole decoded picture to.
    scaled: (u32, u32),
    /// Size of the output before rotation.
    output: (u32, u32),
}

impl Layout {
    /// Plans the scaling of a `source` picture whose pixels are `pixel_aspect` wide, shown
    /// rotated by `rotation_deg`, onto `target` (in display orientation) with `mode`.
    fn plan(
        source: (u32, u32),
        pixel_aspect: f64,
        rotation_deg: u32,
        target: (u32, u32),
        mode: ResizeMode,
    ) -> Layout {
        let quarter_turn = rotation_deg % 180 == 90;
        let output = if quarter_turn {
            (target.1, target.0)
        } else {
            target
        };
        let shown_width = f64::from(source.0) * pixel_aspect;
        let shown_height = f64::from(source.1);
        let fit = |scale: f64| {
            (
                ((shown_width * scale).round() as u32).max(1),
                ((shown_height * scale).round() as u32).max(1),
            )
        };
        let horizontal = f64::from(output.0) / shown_width;
        let vertical = f64::from(output.1) / shown_height;
        let scaled = match mode {
            ResizeMode::Stretch => output,
            ResizeMode::Crop => {
                let (width, height) = fit(horizontal.max(vertical));
                (width.max(output.0), height.max(output.1))
            }
            ResizeMode::Pad => {
                let (width, height) = fit(horizontal.min(vertical));
                (width.min(output.0), height.min(output.1))
            }
        };
        Layout { scaled, output }
    }
}

/// Converts decoded frames of one stream to RGB pictures of one size.
pub(super) struct Converter {
    /// The video, for errors.
    path: PathBuf,
    target: Option<(u32, u32)>,
    mode: ResizeMode,
    rotation_deg: u32,
    pixel_aspect: f64,
    display_size: (u32, u32),
    scaler: Option<(ScalerKey, Scaler)>,
    rgb: VideoFrame,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScalerKey {
    format: Pixel,
    width: u32,
    height: u32,
}

// SAFETY: the swscale context and frames are owned exclusively by this converter and only
// used from one thread at a time; FFmpeg has no thread affinity for them.
unsafe impl Send for Converter {}

impl Converter {
    /// A converter to `size` with `mode` for the stream of `path` shown at `display_size`,
    /// rotated by `rotation_deg`, with pixels `pixel_aspect` wide.
    pub(super) fn new(
        path: &Path,
        size: Size,
        mode: ResizeMode,
        rotation_deg: u32,
        pixel_aspect: f64,
        display_size: (u32, u32),
    ) -> Self {
        let target = match size {
            Size::Native => None,
            Size::Exact { width, height } => Some((width, height)),
        };
        Converter {
            path: path.to_path_buf(),
            target,
            mode,
            rotation_deg,
            pixel_aspect,
            display_size,
            scaler: None,
            rgb: VideoFrame::empty(),
        }
    }

    /// Converts one decoded frame to an RGB picture in display orientation.
    ///
    /// The frame's size (which may change within a stream) and the size it is scaled to
    /// are checked against the limits of [`crate::picture`] before anything is allocated.
    pub(super) fn convert(&mut self, frame: &VideoFrame) -> Result<RgbImage, VideoError> {
        picture::check_size(frame.width(), frame.height()).map_err(|source| {
            VideoError::PictureTooLarge {
                path: self.path.clone(),
                source,
            }
        })?;
        let target = self.target.unwrap_or(self.display_size);
        let layout = Layout::plan(
            (frame.width(), frame.height()),
            self.pixel_aspect,
            self.rotation_deg,
            target,
            self.mode,
        );
        let key = ScalerKey {
            format: frame.format(),
            width: frame.width(),
            height: frame.height(),
        };
        let rebuild = match &self.scaler {
            Some((current, scaler)) => {
                *current != key || (scaler.output().width, scaler.output().height) != layout.scaled
            }
            None => true,
        };
        if rebuild {
            let (width, height) = layout.scaled;
            let cannot = |problem: String| VideoError::Decode {
                path: self.path.clone(),
                problem: format!(
                    "cannot convert the {}x{} picture to RGB {width}x{height}: {problem}",
                    key.width, key.height
                ),
            };
            // Only the memory matters here: rounding can leave a fitted picture a little
            // more lopsided than its source.
            if u64::from(width) * u64::from(height) > picture::MAX_PIXELS {
                let error = PictureSizeError::TooManyPixels { width, height };
                return Err(cannot(error.to_string()));
            }
            let mut scaler = Scaler::get(
                key.format,
                key.width,
                key.height,
                Pixel::RGB24,
                width,
                height,
                Flags::BICUBIC | Flags::ACCURATE_RND | Flags::FULL_CHR_H_INT,
            )
            .map_err(|error| cannot(error.to_string()))?;
            set_colorspace(&mut scaler, frame);
            // Allocated here rather than by the scaler, which does not check that it worked.
            let rgb = VideoFrame::new(Pixel::RGB24, width, height);
            if rgb.planes() == 0 {
                return Err(cannot("out of memory".to_string()));
            }
            self.scaler = Some((key, scaler));
            self.rgb = rgb;
        }
        let (_, scaler) = self.scaler.as_mut().expect("scaler was just built");
        scaler
            .run(frame, &mut self.rgb)
            .map_err(|error| VideoError::Decode {
                path: self.path.clone(),
                problem: format!("colour conversion failed: {error}"),
            })?;
        let scaled = packed_rgb(&self.rgb);
        let placed = place(scaled, layout.output, self.mode);
        Ok(rotate(placed, self.rotation_deg))
    }
}

/// Tells swscale which YUV matrix and range the source uses, so colours match players.
fn set_colorspace(scaler: &mut Scaler, frame: &VideoFrame) {
    let matrix = match frame.color_space() {
        color::Space::BT709 => ffmpeg_next::ffi::SWS_CS_ITU709,
        color::Space::BT2020NCL | color::Space::BT2020CL => ffmpeg_next::ffi::SWS_CS_BT2020,
        color::Space::SMPTE240M => ffmpeg_next::ffi::SWS_CS_SMPTE240M,
        color::Space::FCC => ffmpeg_next::ffi::SWS_CS_FCC,
        color::Space::BT470BG | color::Space::SMPTE170M => ffmpeg_next::ffi::SWS_CS_ITU601,
        // Unlabelled video: players assume BT.709 for HD and BT.601 for SD.
        _ if frame.height() >= 720 => ffmpeg_next::ffi::SWS_CS_ITU709,
        _ => ffmpeg_next::ffi::SWS_CS_ITU601,
    };
    let full_range_source = frame.color_range() == color::Range::JPEG
        || matches!(
            frame.format(),
            Pixel::YUVJ420P | Pixel::YUVJ422P | Pixel::YUVJ444P | Pixel::YUVJ440P
        );
    // SAFETY: the context is valid; the coefficient tables are static data of swscale.
    unsafe {
        let coefficients = ffmpeg_next::ffi::sws_getCoefficients(matrix);
        ffmpeg_next::ffi::sws_setColorspaceDetails(
            scaler.as_mut_ptr(),
            coefficients,
            i32::from(full_range_source),
            coefficients,
            1,
            0,
            1 << 16,
            1 << 16,
        );
    }
}

/// Copies an RGB24 frame into a tightly packed picture: FFmpeg pads each row to its
/// stride, so only `width * 3` bytes of every row are picture.
fn packed_rgb(frame: &VideoFrame) -> RgbImage {
    let (width, height) = (frame.width(), frame.height());
    let stride = frame.stride(0);
    let row_bytes = width as usize * 3;
    let data = frame.data(0);
    let mut pixels = Vec::with_capacity(row_bytes * height as usize);
    for row in 0..height as usize {
        pixels.extend_from_slice(&data[row * stride..row * stride + row_bytes]);
    }
    RgbImage::from_raw(width, height, pixels).expect("buffer holds width*height*3 bytes")
}

/// Crops (centred) or pads (centred, black) a scaled picture to the output size.
fn place(scaled: RgbImage, output: (u32, u32), mode: ResizeMode) -> RgbImage {
    if scaled.dimensions() == output {
        return scaled;
    }
    match mode {
        ResizeMode::Pad => {
            let mut canvas = RgbImage::new(output.0, output.1);
            let left = (output.0 - scaled.width().min(output.0)) / 2;
            let top = (output.1 - scaled.height().min(output.1)) / 2;
            image::imageops::replace(&mut canvas, &scaled, i64::from(left), i64::from(top));
            canvas
        }
        ResizeMode::Crop | ResizeMode::Stretch => {
            let left = (scaled.width().saturating_sub(output.0)) / 2;
            let top = (scaled.height().saturating_sub(output.1)) / 2;
            image::imageops::crop_imm(&scaled, left, top, output.0, output.1).to_image()
        }
    }
}

/// Turns a picture clockwise by the display rotation.
fn rotate(picture: RgbImage, rotation_deg: u32) -> RgbImage {
    match rotation_deg {
        90 => image::imageops::rotate90(&picture),
        180 => image::imageops::rotate180(&picture),
        270 => image::imageops::rotate270(&picture),
        _ => picture,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(
            "256x144".parse::<Size>().unwrap(),
            Size::Exact {
                width: 256,
                height: 144
            }
        );
        assert_eq!("native".parse::<Size>().unwrap(), Size::Native);
        for bad in ["256", "0x10", "axb", "10x", "99999x2"] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
        assert_eq!(
            Size::Exact {
                width: 3,
                height: 4
            }
            .to_string(),
            "3x4"
        );
    }

    #[test]
    fn crop_covers_and_pad_fits() {
        let crop = Layout::plan((1280, 720), 1.0, 0, (256, 256), ResizeMode::Crop);
        assert_eq!(crop.scaled, (455, 256));
        assert_eq!(crop.output, (256, 256));
        let pad = Layout::plan((1280, 720), 1.0, 0, (256, 256), ResizeMode::Pad);
        assert_eq!(pad.scaled, (256, 144));
        let stretch = Layout::plan((1280, 720), 1.0, 0, (256, 256), ResizeMode::Stretch);
        assert_eq!(stretch.scaled, (256, 256));
    }

    #[test]
    fn quarter_turn_plans_in_source_orientation() {
        // A portrait phone video stored as 1280x720 with a 90 degree display rotation,
        // delivered at 180x320 (portrait): swscale must produce 320x180 before turning.
        let layout = Layout::plan((1280, 720), 1.0, 90, (180, 320), ResizeMode::Stretch);
        assert_eq!(layout.output, (320, 180));
        let picture = rotate(RgbImage::new(320, 180), 90);
        assert_eq!(picture.dimensions(), (180, 320));
    }

    #[test]
    fn pad_centres_the_picture_on_black() {
        let scaled = RgbImage::from_pixel(4, 2, image::Rgb([200, 100, 50]));
        let placed = place(scaled, (4, 4), ResizeMode::Pad);
        assert_eq!(placed.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(placed.get_pixel(0, 1).0, [200, 100, 50]);
        assert_eq!(placed.get_pixel(3, 2).0, [200, 100, 50]);
        assert_eq!(placed.get_pixel(3, 3).0, [0, 0, 0]);
    }
}
