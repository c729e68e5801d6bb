//! Reading the analysis document a command was given, with a hint when it was given the
//! video instead.

use std::path::Path;

use keyscribe::analysis::{Analysis, AnalysisError};

/// Reads the analysis document at `path`. When the file is no analysis but FFmpeg reads it
/// as a video, the error says so and how to make its analysis.
pub fn load_analysis(path: &Path) -> anyhow::Result<Analysis> {
    match Analysis::load(path) {
        Ok(analysis) => Ok(analysis),
        Err(error @ AnalysisError::Read { .. }) if !path.is_file() => Err(error.into()),
        Err(error) => match keyscribe::video::probe(path) {
            Ok(_) => anyhow::bail!(
                "{}: this is a video, not an analysis document: run `keyscribe run {}` first \
                 and pass the NAME.analysis.json it writes",
                path.display(),
                path.display()
            ),
            Err(_) => Err(error.into()),
        },
    }
}
