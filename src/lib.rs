//! keyscribe: video keyframe analysis.
//!
//! A video is decoded with FFmpeg, sampled frames are embedded with MobileCLIP2, keyframes
//! are selected where the embedding changes, each keyframe is described by FastVLM, and the
//! result is written as a timestamped analysis document. See `docs/ARCHITECTURE.md` for the stages.

#![deny(missing_docs)]

pub mod allocator;
pub mod analysis;
pub mod atomic;
pub mod batch;
pub mod cache;
pub mod caption;
pub mod embed;
pub mod kernels;
pub mod models;
pub mod output;
pub mod output_paths;
pub mod picture;
pub mod pipeline;
pub mod search;
pub mod select;
mod serde_f32;
pub mod split;
pub mod summary;
pub mod time;
pub mod video;
