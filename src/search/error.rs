//! What can go wrong while building, opening or searching an index.

use std::path::PathBuf;

use thiserror::Error;

use super::SearchConfigError;

/// What can go wrong while building, opening or searching an index.
#[derive(Debug, Error)]
pub enum SearchError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file is not a usable index.
    #[error("{}: {problem}", path.display())]
    BadIndex {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A video's input is inconsistent.
    #[error("video `{video}`: {problem}")]
    BadVideo {
        /// The video.
        video: String,
        /// What is wrong with its input.
        problem: String,
    },
    /// The query embedding does not fit the index.
    #[error(
        "the query embedding has {found} values; the index holds {expected}-dimensional embeddings"
    )]
    QueryDimension {
        /// The index's dimension.
        expected: usize,
        /// The query's.
        found: usize,
    },
    /// The query embedding is zero or holds a NaN or infinity.
    #[error("the query embedding is zero or not finite")]
    BadQuery,
    /// The settings are unusable.
    #[error(transparent)]
    Config(#[from] SearchConfigError),
}
