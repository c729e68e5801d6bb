//! SmolVLM's input processing as transformers 5's `AutoProcessor` applies it from a
//! checkpoint's files: the image processor, the image's place in the prompt, the chat template.
//!
//! `AutoProcessor` gives an `Idefics3ImageProcessor` on the torchvision backend (the PIL one,
//! `Idefics3ImageProcessorPil`, only with `backend="pil"`). It keeps pictures as 8-bit tensors
//! and resizes them with `torch.nn.functional.interpolate(..., antialias=True)`, whose 8-bit
//! path differs from PIL: its fixed-point weights are 16-bit with a precision chosen per
//! resize from the largest weight, not PIL's fixed 22 bits. For SmolVLM's LANCZOS that moves
//! pixels by up to a few levels, so [`resize_torchvision`] reproduces torch's path, not PIL's.
//!
//! An image is resized so its longest edge is `size.longest_edge` (2048 for SmolVLM), then
//! either split into `max_image_size` tiles (512) read row by row plus the whole image resized
//! to one tile, or, without splitting, resized to one square tile. In the prompt each tile is
//! `<fake_token_around_image><row_R_col_C>` then `image_seq_len` `<image>` tokens, each row
//! ends with a newline, and the whole image comes last as
//! `\n<fake_token_around_image><global-img>` + `<image>`s + `<fake_token_around_image>`.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;
use rayon::prelude::*;
use serde_json::Value;

use super::super::preprocess::{resize_torchvision, Interpolation};
use super::super::{read_json, ModelError};

/// The placeholder a user's turn holds for the image, and the image feature token.
pub const IMAGE_TOKEN: &str = "<image>";
/// Wraps each tile's tokens.
pub const FAKE_IMAGE_TOKEN: &str = "<fake_token_around_image>";
/// Marks the whole (global) image after its tiles.
pub const GLOBAL_IMAGE_TOKEN: &str = "<global-img>";
/// Ends a turn; generation stops here.
pub const END_OF_UTTERANCE: &str = "<end_of_utterance>";
/// Starts the conversation.
pub const BEGIN: &str = "<|im_start|>";
/// transformers' cap on either side after the first resize (`MAX_IMAGE_SIZE`).
const MAX_IMAGE_SIZE: u32 = 4096;

/// The image processor's settings, from `preprocessor_config.json` (or the `image_processor`
/// of `processor_config.json`) and `processor_config.json`'s `image_seq_len`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    /// Whether the image is first resized (`do_resize`).
    pub resize: bool,
    /// The longest edge after the first resize (`size.longest_edge`).
    pub longest_edge: u32,
    /// Side of a tile and of the global image (`max_image_size.longest_edge`).
    pub tile: u32,
    /// Whether images are split into tiles (`do_image_splitting`).
    pub splitting: bool,
    /// The resampling filter (`resample`).
    pub filter: Interpolation,
    /// Per-channel mean (`image_mean`, on the 0-1 scale).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (`image_std`, on the 0-1 scale).
    pub std: [f32; 3],
    /// The factor from 8-bit values to the 0-1 scale (`rescale_factor`).
    pub rescale_factor: f64,
    /// `<image>` tokens per tile (`image_seq_len`).
    pub image_seq_len: usize,
}

impl ImageProcessorConfig {
    /// Reads the settings from a checkpoint directory; `image_seq_len` defaults to
    /// `default_seq_len` (the vision tower's patches per tile over the pixel shuffle).
    pub fn from_dir(dir: &Path, default_seq_len: usize) -> Result<Self, ModelError> {
        let processor_path = dir.join("processor_config.json");
        let processor = read_json(&processor_path)?;
        let preprocessor_path = dir.join("preprocessor_config.json");
        let (path, config) = match read_json(&preprocessor_path)? {
            Some(config) => (preprocessor_path, config),
            None => match processor
                .as_ref()
                .and_then(|processor| processor.get("image_processor"))
            {
                Some(config) => (processor_path.clone(), config.clone()),
                None => {
                    return Err(ModelError::MissingFiles {
                        dir: dir.to_path_buf(),
                        files: vec!["preprocessor_config.json".into()],
                        layout: "a SmolVLM (Idefics3) checkpoint".into(),
                    })
                }
            },
        };
        let bad = |problem: String| ModelError::Config {
            path: path.clone(),
            problem,
        };
        let flag = |key: &str, default: bool| -> bool {
            config.get(key).and_then(Value::as_bool).unwrap_or(default)
        };
        let edge = |key: &str, default: u64| -> Result<u32, ModelError> {
            match config.get(key) {
                None | Some(Value::Null) => Ok(default as u32),
                Some(value) => value
                    .get("longest_edge")
                    .and_then(Value::as_u64)
                    .filter(|&edge| edge > 0 && edge <= u64::from(MAX_IMAGE_SIZE))
                    .map(|edge| edge as u32)
                    .ok_or_else(|| bad(format!("`{key}` has no usable `longest_edge`"))),
            }
        };
        let triple = |key: &str| -> Result<[f32; 3], ModelError> {
            match config.get(key) {
                None | Some(Value::Null) => Ok([0.5; 3]),
                Some(value) => {
                    let values: Vec<f32> = value
                        .as_array()
                        .map(|items| {
                            items
                                .iter()
                                .filter_map(Value::as_f64)
                                .map(|v| v as f32)
                                .collect()
                        })
                        .unwrap_or_default();
                    values
                        .try_into()
                        .map_err(|_| bad(format!("`{key}` is not a list of three numbers")))
                }
            }
        };
        let resample = config.get("resample").and_then(Value::as_u64).unwrap_or(1);
        let filter = Interpolation::from_pil(resample).ok_or_else(|| {
            bad(format!(
                "`resample` {resample} is not one keyscribe reproduces (1 LANCZOS, 2 BILINEAR, 3 BICUBIC)"
            ))
        })?;
        let (mean, std) = if flag("do_normalize", true) {
            (triple("image_mean")?, triple("image_std")?)
        } else {
            ([0.0; 3], [1.0; 3])
        };
        if std.contains(&0.0) {
            return Err(bad("`image_std` must not hold a zero".into()));
        }
        let rescale_factor = if flag("do_rescale", true) {
            config
                .get("rescale_factor")
                .and_then(Value::as_f64)
                .unwrap_or(1.0 / 255.0)
        } else {
            1.0
        };
        let image_seq_len = processor
            .as_ref()
            .and_then(|processor| processor.get("image_seq_len"))
            .and_then(Value::as_u64)
            .map_or(default_seq_len, |len| len as usize);
        Ok(Self {
            resize: flag("do_resize", true),
            longest_edge: edge("size", 4 * 364)?,
            tile: edge("max_image_size", 364)?,
            splitting: flag("do_image_splitting", true),
            filter,
            mean,
            std,
            rescale_factor,
            image_seq_len,
        })
    }

    /// The file the settings came from, for messages.
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("preprocessor_config.json")
    }
}

/// How an image was split: rows and columns of tiles, both 0 for a single image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileGrid {
    /// Rows of tiles.
    pub rows: usize,
    /// Columns of tiles.
    pub cols: usize,
}

impl TileGrid {
    /// Images the vision tower sees: the tiles plus the global image, or the one image.
    pub fn images(&self) -> usize {
        if self.rows == 0 && self.cols == 0 {
            1
        } else {
            self.rows * self.cols + 1
        }
    }
}

/// An image ready for the vision tower.
#[derive(Debug, Clone)]
pub struct ProcessedImage {
    /// The tiles then the global image (or the one image), `[images, 3, tile, tile]` f32.
    pub pixels: Tensor,
    /// How the image was split.
    pub grid: TileGrid,
}

/// `_resize_output_size_rescale_to_max_len` then `_resize_output_size_scale_below_upper_bound`:
/// the longest side becomes `longest`, the other keeps the ratio (truncated, then made even),
/// both capped at 4096. Returns (width, height).
fn longest_edge_size(width: u32, height: u32, longest: u32) -> (u32, u32) {
    let aspect = f64::from(width) / f64::from(height);
    let (mut width, mut height) = (i64::from(width), i64::from(height));
    if width >= height {
        width = i64::from(longest);
        height = (width as f64 / aspect) as i64;
        if height % 2 != 0 {
            height += 1;
        }
    } else {
        height = i64::from(longest);
        width = (height as f64 * aspect) as i64;
        if width % 2 != 0 {
            width += 1;
        }
    }
    let (width, height) = (width.max(1), height.max(1));
    // The cap, with the ratio of the sizes just computed.
    let cap = i64::from(MAX_IMAGE_SIZE);
    let aspect = width as f64 / height as f64;
    let (width, height) = if width >= height && width > cap {
        (cap, (cap as f64 / aspect) as i64)
    } else if height > width && height > cap {
        ((cap as f64 * aspect) as i64, cap)
    } else {
        (width, height)
    };
    (width.max(1) as u32, height.max(1) as u32)
}

/// `resize_for_vision_encoder`: both sides up to multiples of the tile, keeping the ratio as
/// transformers computes it. Returns (width, height).
fn tile_multiple_size(width: u32, height: u32, tile: u32) -> (u32, u32) {
    let aspect = f64::from(width) / f64::from(height);
    let tile_f = f64::from(tile);
    let up = |value: f64| ((value / tile_f).ceil() * tile_f) as i64;
    let (w, h) = if width >= height {
        let w = up(f64::from(width));
        let h = (w as f64 / aspect) as i64;
        (w, up(h as f64))
    } else {
        let h = up(f64::from(height));
        let w = (h as f64 * aspect) as i64;
        (up(w as f64), h)
    };
    (w.max(1) as u32, h.max(1) as u32)
}

impl ImageProcessorConfig {
    /// Resizes, splits (when `splitting`) and normalises an image as the reference does.
    pub fn process(
        &self,
        image: &RgbImage,
        splitting: bool,
        device: &Device,
    ) -> Result<ProcessedImage, ModelError> {
        crate::picture::check_size(image.width(), image.height())?;
        let resized_to = |image: &RgbImage, (width, height): (u32, u32)| {
            if (width, height) == image.dimensions() {
                image.clone()
            } else {
                resize_torchvision(image, width, height, self.filter)
            }
        };
        let base = if self.resize {
            resized_to(
                image,
                longest_edge_size(image.width(), image.height(), self.longest_edge),
            )
        } else {
            image.clone()
        };
        let tile = self.tile;
        let (images, grid) = if splitting {
            let grown = resized_to(&base, tile_multiple_size(base.width(), base.height(), tile));
            let (width, height) = grown.dimensions();
            if width > tile || height > tile {
                let (rows, cols) = (height.div_ceil(tile), width.div_ceil(tile));
                let mut images = Vec::with_capacity((rows * cols + 1) as usize);
                for row in 0..rows {
                    for col in 0..cols {
                        images.push(
                            image::imageops::crop_imm(&grown, col * tile, row * tile, tile, tile)
                                .to_image(),
                        );
                    }
                }
                images.push(resized_to(&grown, (tile, tile)));
                (
                    images,
                    TileGrid {
                        rows: rows as usize,
                        cols: cols as usize,
                    },
                )
            } else {
                (vec![grown], TileGrid { rows: 0, cols: 0 })
            }
        } else {
            (
                vec![resized_to(&base, (tile, tile))],
                TileGrid { rows: 0, cols: 0 },
            )
        };
        if images
            .iter()
            .any(|image| image.dimensions() != (tile, tile))
        {
            return Err(ModelError::Candle(candle_core::Error::Msg(format!(
                "the image of {}x{} does not split into {tile}x{tile} tiles",
                image.width(),
                image.height()
            ))));
        }
        Ok(ProcessedImage {
            pixels: self.normalize(&images, device)?,
            grid,
        })
    }

    /// Tiles as a `[n, 3, tile, tile]` f32 tensor, as the fused torchvision normalisation
    /// computes it: `(value - mean / rescale) / (std / rescale)` in f32.
    fn normalize(&self, images: &[RgbImage], device: &Device) -> candle_core::Result<Tensor> {
        let inverse = (1.0 / self.rescale_factor) as f32;
        let mean = self.mean.map(|mean| mean * inverse);
        let std = self.std.map(|std| std * inverse);
        let side = self.tile as usize;
        let plane = side * side;
        let mut data = vec![0f32; images.len() * 3 * plane];
        data.par_chunks_mut(3 * plane)
            .zip(images)
            .for_each(|(out, image)| {
                for (i, px) in image.as_raw().chunks_exact(3).enumerate() {
                    for c in 0..3 {
                        out[c * plane + i] = (f32::from(px[c]) - mean[c]) / std[c];
                    }
                }
            });
        Tensor::from_vec(data, (images.len(), 3, side, side), device)
    }

    /// The text that stands for an image of `grid` in the prompt, in place of `<image>`.
    pub fn image_prompt(&self, grid: TileGrid) -> String {
        let tokens = IMAGE_TOKEN.repeat(self.image_seq_len);
        let mut text = String::new();
        if grid.rows > 0 || grid.cols > 0 {
            for row in 1..=grid.rows {
                for col in 1..=grid.cols {
                    text.push_str(&format!("{FAKE_IMAGE_TOKEN}<row_{row}_col_{col}>{tokens}"));
                }
                text.push('\n');
            }
            text.push('\n');
        }
        text.push_str(&format!(
            "{FAKE_IMAGE_TOKEN}{GLOBAL_IMAGE_TOKEN}{tokens}{FAKE_IMAGE_TOKEN}"
        ));
        text
    }
}

/// SmolVLM-Instruct's chat template with `add_generation_prompt`, for an optional system
/// turn and one user turn, each a list of content parts: the image (when `image`) then the
/// text. A turn starting with an image takes `Role:`, one starting with text `Role: `.
pub fn chat_prompt(system: Option<&str>, user: &str, image: bool) -> String {
    let mut prompt = String::from(BEGIN);
    if let Some(system) = system {
        prompt.push_str(&format!("System: {system}{END_OF_UTTERANCE}\n"));
    }
    if image {
        prompt.push_str(&format!("User:{IMAGE_TOKEN}{user}{END_OF_UTTERANCE}\n"));
    } else {
        prompt.push_str(&format!("User: {user}{END_OF_UTTERANCE}\n"));
    }
    prompt.push_str("Assistant:");
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_transformers_arithmetic() {
        // A 16:9 frame at SmolVLM's settings: 2048x1152, then 2048x1536 = 3 x 4 tiles.
        assert_eq!(longest_edge_size(1280, 720, 2048), (2048, 1152));
        assert_eq!(tile_multiple_size(2048, 1152, 512), (2048, 1536));
        assert_eq!(longest_edge_size(150, 300, 256), (128, 256));
        assert_eq!(tile_multiple_size(128, 256, 64), (128, 256));
        // Truncated, and odd results made even (transformers gives 76 and 78).
        assert_eq!(longest_edge_size(333, 100, 256), (256, 76));
        assert_eq!(longest_edge_size(333, 101, 256), (256, 78));
    }

    #[test]
    fn image_prompts_have_the_reference_shape() {
        let config = ImageProcessorConfig {
            resize: true,
            longest_edge: 256,
            tile: 64,
            splitting: true,
            filter: Interpolation::Lanczos,
            mean: [0.5; 3],
            std: [0.5; 3],
            rescale_factor: 1.0 / 255.0,
            image_seq_len: 2,
        };
        assert_eq!(
            config.image_prompt(TileGrid { rows: 0, cols: 0 }),
            "<fake_token_around_image><global-img><image><image><fake_token_around_image>"
        );
        assert_eq!(
            config.image_prompt(TileGrid { rows: 1, cols: 2 }),
            "<fake_token_around_image><row_1_col_1><image><image>\
             <fake_token_around_image><row_1_col_2><image><image>\n\n\
             <fake_token_around_image><global-img><image><image><fake_token_around_image>"
        );
    }

    #[test]
    fn the_chat_template_marks_image_turns_without_a_space() {
        assert_eq!(
            chat_prompt(None, "Describe.", true),
            "<|im_start|>User:<image>Describe.<end_of_utterance>\nAssistant:"
        );
        assert_eq!(
            chat_prompt(Some("Be brief."), "Hi", false),
            "<|im_start|>System: Be brief.<end_of_utterance>\nUser: Hi<end_of_utterance>\nAssistant:"
        );
    }

    #[test]
    fn resizing_to_the_same_size_per_axis_keeps_values() {
        let image = RgbImage::from_fn(7, 5, |x, y| image::Rgb([(x * 30) as u8, (y * 50) as u8, 9]));
        let wide = resize_torchvision(&image, 14, 5, Interpolation::Lanczos);
        assert_eq!(wide.dimensions(), (14, 5));
        let back = resize_torchvision(&image, 7, 5, Interpolation::Lanczos);
        assert_eq!(back, image);
    }
}
