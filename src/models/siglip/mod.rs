//! SigLIP2 (and SigLIP) image and text embeddings in transformers' `SiglipModel` layout, as
//! the fixed-resolution SigLIP2 checkpoints ship (`google/siglip2-base-patch16-224`,
//! `model_type "siglip"`).
//!
//! [`vision`] is the vision transformer, reusable by the models built on it (Idefics3 /
//! SmolVLM); [`encoder`] is the transformer stack both towers share.

pub mod encoder;
pub mod vision;
