//! Image preprocessing shared by the models, bit-compatible with the Python references.
//!
//! The references resize PIL images (torchvision's `Resize` on a PIL image calls PIL's
//! `Image.resize`), so [`resize`] reproduces PIL's two-pass separable resampling exactly:
//! the same filter support scaled by the downscale factor (antialiasing), the same 22-bit
//! fixed-point coefficients, rounding and 8-bit intermediate image. Crops follow
//! torchvision's `CenterCrop` (Python's round-half-even offsets, zero padding when the image
//! is smaller), and [`to_tensor`] does `ToTensor` + `Normalize` in f32.

use candle_core::{Device, Tensor};
use image::RgbImage;

use super::ModelError;
use crate::picture::{self, PictureSizeError};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Resampling filter, as PIL names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Triangle filter (support 1).
    Bilinear,
    /// Keys cubic with a = -0.5 (support 2).
    Bicubic,
    /// Lanczos-3, a windowed sinc (support 3).
    Lanczos,
}

impl Interpolation {
    /// The filter PIL's resampling number (`resample` in a `preprocessor_config.json`)
    /// names; `None` for nearest, box and Hamming, which no model here uses.
    pub fn from_pil(resample: u64) -> Option<Self> {
        match resample {
            1 => Some(Self::Lanczos),
            2 => Some(Self::Bilinear),
            3 => Some(Self::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Self::Bilinear => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Self::Lanczos => {
                if x < 3.0 {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
            Self::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Self::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// sin(pi x) / (pi x).
fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

/// Bits of fractional precision of PIL's 8-bit resampling coefficients.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// How the normalised filter weights become integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FixedPoint {
    /// PIL: 22 fractional bits.
    Pil,
    /// PyTorch's antialiased resize of uint8 images (`_upsample_bilinear2d_aa`, what
    /// torchvision's `resize` runs on a uint8 tensor): int16 weights with as many fractional
    /// bits (at most 22) as the axis's largest weight allows.
    Torch,
}

/// The taps of one output position: first input index and fixed-point weights with
/// `precision` fractional bits.
struct Taps {
    first: usize,
    weights: Vec<i32>,
    precision: u32,
}

/// PIL's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis (PyTorch's
/// `_compute_index_ranges_int16_weights` with [`FixedPoint::Torch`]).
fn taps(in_size: usize, out_size: usize, filter: Interpolation, fixed: FixedPoint) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let normalised: Vec<(usize, Vec<f64>)> = (0..out_size)
        .map(|out| {
            let center = (out as f64 + 0.5) * scale;
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let raw: Vec<f64> = (first..end)
                .map(|x| filter.weight((x as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|&w| if total != 0.0 { w / total } else { w })
                .collect();
            (first, weights)
        })
        .collect();
    let precision = match fixed {
        FixedPoint::Pil => PRECISION_BITS,
        FixedPoint::Torch => {
            let largest = normalised
                .iter()
                .flat_map(|(_, weights)| weights.iter().copied())
                .fold(0.0f64, f64::max);
            (0..PRECISION_BITS)
                .find(|&bits| (0.5 + largest * f64::from(1u32 << (bits + 1))) as i64 >= 1 << 15)
                .unwrap_or(PRECISION_BITS)
        }
    };
    let one = f64::from(1u32 << precision);
    normalised
        .into_iter()
        .map(|(first, weights)| Taps {
            first,
            weights: weights
                .iter()
                .map(|&w| {
                    if w < 0.0 {
                        (-0.5 + w * one) as i32
                    } else {
                        (0.5 + w * one) as i32
                    }
                })
                .collect(),
            precision,
        })
        .collect()
}

/// PIL's `clip8`: a fixed-point sum with `precision` fractional bits back to 8 bits.
#[inline]
fn clip8(sum: i32, precision: u32) -> u8 {
    (sum >> precision).clamp(0, 255) as u8
}

/// The rounding offset added to every fixed-point sum with `precision` fractional bits.
#[inline]
fn half(precision: u32) -> i32 {
    1 << (precision - 1)
}

/// Resizes like PIL's `Image.resize((width, height), filter)` on an RGB image, bit for bit.
pub fn resize(image: &RgbImage, width: u32, height: u32, filter: Interpolation) -> RgbImage {
    resize_canvas(
        &Canvas::whole(image),
        width,
        height,
        filter,
        FixedPoint::Pil,
    )
}

/// Resizes like torchvision's `resize(tensor, [height, width], filter, antialias=True)` on a
/// uint8 image tensor, bit for bit: what transformers' default ("fast", torchvision) image
/// processors run (bilinear for SigLIP, Lanczos for SmolVLM). PIL's algorithm with int16
/// weights of fewer fractional bits, so some pixels differ from [`resize`] by a level or more.
pub fn resize_torchvision(
    image: &RgbImage,
    width: u32,
    height: u32,
    filter: Interpolation,
) -> RgbImage {
    resize_canvas(
        &Canvas::whole(image),
        width,
        height,
        filter,
        FixedPoint::Torch,
    )
}

/// Pads an image to a square with `fill`, the original centred (offsets rounded down), as
/// LLaVA's `expand2square` does, and resizes the square to `side` x `side` as PIL does, bit
/// for bit.
///
/// The square is never built: a 1x60000 picture would make it 60000x60000 (10.8 GB).
pub fn pad_to_square_and_resize(
    image: &RgbImage,
    fill: [u8; 3],
    side: u32,
    filter: Interpolation,
) -> RgbImage {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let square = width.max(height);
    let canvas = Canvas {
        picture: image,
        width: square,
        height: square,
        left: (square - width) / 2,
        top: (square - height) / 2,
        fill,
    };
    resize_canvas(&canvas, side, side, filter, FixedPoint::Pil)
}

/// A picture placed on a larger canvas of one colour, `left` and `top` pixels from its
/// corner; resampled as if the canvas had been built.
struct Canvas<'a> {
    picture: &'a RgbImage,
    width: usize,
    height: usize,
    left: usize,
    top: usize,
    fill: [u8; 3],
}

impl<'a> Canvas<'a> {
    /// The picture alone.
    fn whole(picture: &'a RgbImage) -> Self {
        Self {
            picture,
            width: picture.width() as usize,
            height: picture.height() as usize,
            left: 0,
            top: 0,
            fill: [0; 3],
        }
    }
}

/// The taps of one output position over a canvas, split into the positions on the picture
/// and those on the fill colour.
struct CanvasTaps {
    /// The first picture position read (in picture coordinates) when `weights` is not empty.
    first: usize,
    /// The weights of the picture positions `first..`.
    weights: Vec<i32>,
    /// The sum of the weights of the positions on the fill colour.
    fill_weight: i32,
    /// Fractional bits of the weights.
    precision: u32,
}

impl CanvasTaps {
    /// The picture positions read.
    fn span(&self) -> std::ops::Range<usize> {
        self.first..self.first + self.weights.len()
    }
}

/// Splits taps over a canvas axis where the picture covers `offset..offset + length`.
///
/// The fixed-point sums are integers, so summing the fill's share apart gives the same bits.
fn split_taps(taps: Vec<Taps>, offset: usize, length: usize) -> Vec<CanvasTaps> {
    taps.into_iter()
        .map(|taps| {
            let end = taps.first + taps.weights.len();
            let start_on_picture = offset.clamp(taps.first, end);
            let end_on_picture = (offset + length).clamp(start_on_picture, end);
            let on_picture = start_on_picture - taps.first..end_on_picture - taps.first;
            let fill_weight = taps.weights[..on_picture.start].iter().sum::<i32>()
                + taps.weights[on_picture.end..].iter().sum::<i32>();
            CanvasTaps {
                first: start_on_picture.saturating_sub(offset),
                weights: taps.weights[on_picture].to_vec(),
                fill_weight,
                precision: taps.precision,
            }
        })
        .collect()
}

/// PIL's two-pass resampling of a canvas (horizontal pass, then vertical, each only when
/// that side changes), reading the picture where it lies and the fill colour elsewhere.
fn resize_canvas(
    canvas: &Canvas,
    width: u32,
    height: u32,
    filter: Interpolation,
    fixed: FixedPoint,
) -> RgbImage {
    let (out_w, out_h) = (width as usize, height as usize);
    if out_w == 0 || out_h == 0 || canvas.width == 0 || canvas.height == 0 {
        return RgbImage::new(width, height);
    }
    let (picture_w, picture_h) = (
        canvas.picture.width() as usize,
        canvas.picture.height() as usize,
    );
    let fill = canvas.fill;
    let vertical = (canvas.height != out_h).then(|| {
        split_taps(
            taps(canvas.height, out_h, filter, fixed),
            canvas.top,
            picture_h,
        )
    });
    // Only the picture rows some output row reads take part in the horizontal pass.
    let needed_rows = match &vertical {
        Some(vertical) => {
            // The taps move forward with the output row.
            let mut spans = vertical
                .iter()
                .map(CanvasTaps::span)
                .filter(|span| !span.is_empty());
            let first = spans.next().unwrap_or(0..0);
            let last = spans.next_back().unwrap_or_else(|| first.clone());
            first.start..last.end
        }
        None => 0..picture_h,
    };
    let horizontal = (canvas.width != out_w).then(|| {
        split_taps(
            taps(canvas.width, out_w, filter, fixed),
            canvas.left,
            picture_w,
        )
    });
    let row_len = out_w * 3;

    // The horizontal pass of a row of fill colour only.
    let fill_row: Vec<u8> = match &horizontal {
        Some(horizontal) => horizontal
            .iter()
            .flat_map(|taps| {
                let weight = taps.fill_weight + taps.weights.iter().sum::<i32>();
                let precision = taps.precision;
                fill.map(|value| clip8(half(precision) + i32::from(value) * weight, precision))
            })
            .collect(),
        None => fill.repeat(out_w),
    };
    let input = canvas.picture.as_raw();
    let mut rows = vec![0u8; needed_rows.len() * row_len];
    rows.par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(i, out_row)| {
            let in_row = &input[(needed_rows.start + i) * picture_w * 3..][..picture_w * 3];
            match &horizontal {
                Some(horizontal) => {
                    for (out_px, taps) in out_row.chunks_exact_mut(3).zip(horizontal) {
                        let precision = taps.precision;
                        let mut sums =
                            fill.map(|value| half(precision) + i32::from(value) * taps.fill_weight);
                        for (j, &w) in taps.weights.iter().enumerate() {
                            let px = &in_row[(taps.first + j) * 3..][..3];
                            for c in 0..3 {
                                sums[c] += i32::from(px[c]) * w;
                            }
                        }
                        for c in 0..3 {
                            out_px[c] = clip8(sums[c], precision);
                        }
                    }
                }
                None => {
                    out_row.copy_from_slice(&fill_row);
                    out_row[canvas.left * 3..][..picture_w * 3].copy_from_slice(in_row);
                }
            }
        });
    let row = |canvas_row: usize| match canvas_row.checked_sub(canvas.top) {
        Some(picture_row) if picture_row < picture_h => {
            &rows[(picture_row - needed_rows.start) * row_len..][..row_len]
        }
        _ => fill_row.as_slice(),
    };

    let mut out = vec![0u8; out_h * row_len];
    match &vertical {
        Some(vertical) => {
            out.par_chunks_mut(row_len)
                .zip(vertical)
                .for_each(|(out_row, taps)| {
                    let mut sums: Vec<i32> = fill_row
                        .iter()
                        .map(|&value| half(taps.precision) + i32::from(value) * taps.fill_weight)
                        .collect();
                    for (j, &w) in taps.weights.iter().enumerate() {
                        let in_row = row(canvas.top + taps.first + j);
                        for (sum, &v) in sums.iter_mut().zip(in_row) {
                            *sum += i32::from(v) * w;
                        }
                    }
                    for (o, &sum) in out_row.iter_mut().zip(&sums) {
                        *o = clip8(sum, taps.precision);
                    }
                });
        }
        None => {
            for (y, out_row) in out.chunks_exact_mut(row_len).enumerate() {
                out_row.copy_from_slice(row(y));
            }
        }
    }
    RgbImage::from_raw(width, height, out).expect("the buffer has width * height pixels")
}

/// The size torchvision's `Resize(size)` (an int) gives: the shorter side becomes `size`,
/// the longer one `int(size * long / short)`.
pub fn shortest_side_size(width: u32, height: u32, size: u32) -> (u32, u32) {
    if width <= height {
        let long = (f64::from(size) * f64::from(height) / f64::from(width)) as u32;
        (size, long)
    } else {
        let long = (f64::from(size) * f64::from(width) / f64::from(height)) as u32;
        (long, size)
    }
}

/// The size timm's `ResizeKeepRatio` gives for a target: the image scaled by the ratio of
/// its sides to the target's, the larger ratio (`longest`) or the smaller one.
pub fn keep_ratio_size(
    width: u32,
    height: u32,
    target_width: u32,
    target_height: u32,
    longest: bool,
) -> (u32, u32) {
    let ratio_h = f64::from(height) / f64::from(target_height);
    let ratio_w = f64::from(width) / f64::from(target_width);
    let ratio = if longest {
        ratio_h.max(ratio_w)
    } else {
        ratio_h.min(ratio_w)
    };
    let scaled = |side: u32| round_half_even(f64::from(side) / ratio) as u32;
    (scaled(width), scaled(height))
}

/// Python's `round`: to the nearest integer, ties to even.
fn round_half_even(x: f64) -> f64 {
    let rounded = x.round();
    if (x - x.trunc()).abs() == 0.5 && rounded % 2.0 != 0.0 {
        rounded - x.signum()
    } else {
        rounded
    }
}

/// Pads an image with `fill` to at least `width` x `height`, centred as torchvision's
/// `CenterCrop` pads (left/top get the smaller half).
fn pad_to_at_least(image: &RgbImage, width: u32, height: u32, fill: [u8; 3]) -> RgbImage {
    if image.width() >= width && image.height() >= height {
        return image.clone();
    }
    let out_w = image.width().max(width);
    let out_h = image.height().max(height);
    let left = (out_w - image.width()) / 2;
    let top = (out_h - image.height()) / 2;
    let mut out = RgbImage::from_pixel(out_w, out_h, image::Rgb(fill));
    image::imageops::replace(&mut out, image, i64::from(left), i64::from(top));
    out
}

/// torchvision's `CenterCrop((height, width))` (and open_clip's `CenterCropOrPad` with a
/// fill colour): pads with `fill` when the image is smaller, then crops the centre, with
/// offsets `round((size - crop) / 2)` rounded half to even as Python does.
pub fn center_crop(image: &RgbImage, width: u32, height: u32, fill: [u8; 3]) -> RgbImage {
    let image = pad_to_at_least(image, width, height, fill);
    if image.width() == width && image.height() == height {
        return image;
    }
    let left = round_half_even(f64::from(image.width() - width) / 2.0) as u32;
    let top = round_half_even(f64::from(image.height() - height) / 2.0) as u32;
    image::imageops::crop_imm(&image, left, top, width, height).to_image()
}

/// How an image is brought to the model's input size (open_clip's `resize_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Shorter side to the input size, then a centre crop.
    Shortest,
    /// Longer side to the input size, then centre padding with the fill colour.
    Longest,
    /// Both sides to the input size, ignoring the aspect ratio.
    Squash,
}

/// Per-channel normalisation `(x / 255 - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Channel means (RGB), in [0, 1] units.
    pub mean: [f32; 3],
    /// Channel standard deviations (RGB).
    pub std: [f32; 3],
}

/// A complete preprocessing recipe: open_clip's eval transform for one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// Model input width.
    pub width: u32,
    /// Model input height.
    pub height: u32,
    /// How the aspect ratio is handled.
    pub resize_mode: ResizeMode,
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Colour of padding (`fill_color`, the same value for all channels in open_clip).
    pub fill: [u8; 3],
    /// Normalisation after scaling to [0, 1].
    pub normalization: Normalization,
}

impl Preprocess {
    /// The image at the model's input size, as open_clip's eval transform makes it (before
    /// conversion to a tensor).
    ///
    /// Pictures outside the limits of [`crate::picture`] are refused before anything is
    /// allocated: a centre crop first resizes the short side to the input size, which turns a
    /// 1x60000 picture into 256x15360000.
    pub fn resize_and_crop(&self, image: &RgbImage) -> Result<RgbImage, PictureSizeError> {
        let (w, h) = (image.width(), image.height());
        picture::check_size(w, h)?;
        Ok(match self.resize_mode {
            ResizeMode::Squash => resize(image, self.width, self.height, self.interpolation),
            ResizeMode::Shortest if self.width == self.height => {
                let (rw, rh) = shortest_side_size(w, h, self.width);
                let resized = resize(image, rw, rh, self.interpolation);
                center_crop(&resized, self.width, self.height, [0; 3])
            }
            ResizeMode::Shortest => {
                // open_clip builds `ResizeKeepRatio(size)` here, which is always bicubic.
                let (rw, rh) = keep_ratio_size(w, h, self.width, self.height, false);
                let resized = resize(image, rw, rh, Interpolation::Bicubic);
                center_crop(&resized, self.width, self.height, [0; 3])
            }
            ResizeMode::Longest => {
                let (rw, rh) = keep_ratio_size(w, h, self.width, self.height, true);
                let resized = resize(image, rw, rh, self.interpolation);
                center_crop(&resized, self.width, self.height, self.fill)
            }
        })
    }

    /// A batch of images as the model's normalised `[batch, 3, height, width]` f32 input.
    pub fn batch(&self, images: &[RgbImage], device: &Device) -> Result<Tensor, ModelError> {
        let prepared: Vec<RgbImage> = images
            .par_iter()
            .map(|image| self.resize_and_crop(image))
            .collect::<Result<_, _>>()?;
        Ok(to_tensor(&prepared, &self.normalization, device)?)
    }
}

/// Images of one size as a normalised `[batch, 3, height, width]` f32 tensor:
/// `(value / 255 - mean) / std`, computed in f32 as torchvision's `ToTensor` + `Normalize`.
pub fn to_tensor(
    images: &[RgbImage],
    normalization: &Normalization,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let Some(first) = images.first() else {
        candle_core::bail!("no images to convert");
    };
    let (width, height) = (first.width() as usize, first.height() as usize);
    if let Some(other) = images
        .iter()
        .find(|image| (image.width() as usize, image.height() as usize) != (width, height))
    {
        candle_core::bail!(
            "images of different sizes in one batch: {}x{} and {}x{}",
            width,
            height,
            other.width(),
            other.height()
        );
    }
    let plane = width * height;
    let mut data = vec![0f32; images.len() * 3 * plane];
    data.par_chunks_mut(3 * plane)
        .zip(images)
        .for_each(|(out, image)| {
            let (r, rest) = out.split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            for (i, px) in image.as_raw().chunks_exact(3).enumerate() {
                for (c, channel) in [&mut *r, &mut *g, &mut *b].into_iter().enumerate() {
                    let value = f32::from(px[c]) / 255.0;
                    channel[i] = (value - normalization.mean[c]) / normalization.std[c];
                }
            }
        });
    Tensor::from_vec(data, (images.len(), 3, height, width), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([
                (x * 255 / width.max(1)) as u8,
                (y * 255 / height.max(1)) as u8,
                ((x * 7 + y * 13) % 256) as u8,
            ])
        })
    }

    #[test]
    fn torchvision_sizes_and_python_rounding() {
        assert_eq!(shortest_side_size(640, 480, 256), (341, 256));
        assert_eq!(shortest_side_size(480, 640, 256), (256, 341));
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(2.6), 3.0);
        assert_eq!(keep_ratio_size(640, 480, 256, 256, true), (256, 192));
    }

    #[test]
    fn resize_keeps_constant_images_constant() {
        let flat = RgbImage::from_pixel(37, 23, image::Rgb([10, 128, 250]));
        for filter in [Interpolation::Bilinear, Interpolation::Bicubic] {
            for (w, h) in [(16, 16), (80, 50), (37, 9)] {
                let out = resize(&flat, w, h, filter);
                assert_eq!((out.width(), out.height()), (w, h));
                assert!(
                    out.pixels().all(|p| p.0 == [10, 128, 250]),
                    "{filter:?} {w}x{h}"
                );
            }
        }
    }

    #[test]
    fn center_crop_pads_and_rounds_like_torchvision() {
        let image = gradient(5, 4);
        let crop = center_crop(&image, 4, 4, [0; 3]);
        // (5 - 4) / 2 = 0.5 rounds to 0: the crop starts at the left edge.
        assert_eq!(crop.get_pixel(0, 0), image.get_pixel(0, 0));
        let padded = center_crop(&image, 7, 6, [9, 9, 9]);
        assert_eq!(padded.get_pixel(0, 0).0, [9, 9, 9]);
        assert_eq!(padded.get_pixel(1, 1), image.get_pixel(0, 0));
    }

    /// The canvas of `pad_to_square_and_resize`, built.
    fn padded_square(image: &RgbImage, fill: [u8; 3]) -> RgbImage {
        let side = image.width().max(image.height());
        let mut square = RgbImage::from_pixel(side, side, image::Rgb(fill));
        let left = (side - image.width()) / 2;
        let top = (side - image.height()) / 2;
        image::imageops::replace(&mut square, image, i64::from(left), i64::from(top));
        square
    }

    #[test]
    fn padding_without_building_the_square_gives_the_same_bits() {
        let fill = [123, 117, 104];
        for (width, height) in [(6, 3), (3, 6), (40, 17), (17, 40), (5, 5), (1, 32), (64, 2)] {
            let image = gradient(width, height);
            let square = padded_square(&image, fill);
            for side in [1, 4, 6, 16, 33, 64] {
                for filter in [Interpolation::Bilinear, Interpolation::Bicubic] {
                    let expected = resize(&square, side, side, filter);
                    let padded = pad_to_square_and_resize(&image, fill, side, filter);
                    assert_eq!(padded, expected, "{width}x{height} -> {side} {filter:?}");
                }
            }
        }
    }

    #[test]
    fn a_thin_picture_is_padded_with_bounded_memory() {
        // The square of a 1x60000 picture would take 10.8 GB.
        let thin = RgbImage::from_pixel(1, 60000, image::Rgb([250, 250, 250]));
        let resized = pad_to_square_and_resize(&thin, [0, 0, 0], 64, Interpolation::Bicubic);
        assert_eq!(resized.dimensions(), (64, 64));
        assert_eq!(resized.get_pixel(0, 0).0, [0, 0, 0]);
    }

    #[test]
    fn tensor_is_channel_first_and_normalised() {
        let image = RgbImage::from_pixel(2, 1, image::Rgb([0, 255, 51]));
        let normalization = Normalization {
            mean: [0.0, 0.5, 0.0],
            std: [1.0, 0.5, 2.0],
        };
        let tensor = to_tensor(&[image], &normalization, &Device::Cpu).unwrap();
        assert_eq!(tensor.dims(), &[1, 3, 1, 2]);
        let values = tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(values, vec![0.0, 0.0, 1.0, 1.0, 0.1, 0.1]);
    }
}
