//! TEMPORARY local shim (not committed): replaced by the real FastVLM.
use crate::models::ModelError;
use std::path::Path;
pub struct FastVlmCaptioner;
impl FastVlmCaptioner {
    pub fn from_settings(
        dir: &Path,
        _s: &crate::pipeline::CaptionSettings,
    ) -> Result<Self, ModelError> {
        Err(ModelError::BadFile {
            path: dir.to_path_buf(),
            problem: "shim".into(),
        })
    }
}
impl crate::caption::FrameCaptioner for FastVlmCaptioner {
    fn name(&self) -> &str {
        "shim"
    }
    fn caption(
        &mut self,
        _f: &image::RgbImage,
        _t: &mut dyn FnMut(&str),
    ) -> Result<String, ModelError> {
        unreachable!()
    }
}

pub struct FastVlm;
impl FastVlm {
    pub fn load(
        dir: &Path,
        _d: candle_core::DType,
        _dev: &candle_core::Device,
    ) -> Result<Self, ModelError> {
        Err(ModelError::BadFile {
            path: dir.to_path_buf(),
            problem: "shim".into(),
        })
    }
    pub fn name(&self) -> &str {
        "shim"
    }
}
