//! The decode stage: FFmpeg (through ffmpeg-next) opens a video, reports what it holds, and
//! delivers RGB frames sampled by presentation time with exact timestamps.
//!
//! Every frame's [`MediaTime`](crate::time::MediaTime) counts from the start of the file as
//! players and subtitle files do: the container's start time and the stream's time base are
//! applied, so a file whose first frame has pts 1.075 s reports it at 0.000.

mod convert;
mod decode;
mod input;
mod live;
mod probe;
mod sampling;

use std::path::{Path, PathBuf};
use std::sync::Once;

use thiserror::Error;

pub use convert::{ResizeMode, Size};
pub use decode::{DecodeGap, DecodeOptions, DecodeReport, Frame, FrameReader, FrameSeeker};
pub use live::{LiveSource, LiveTarget, Watchdog};
pub use probe::{probe, VideoInfo};
pub use sampling::SampleRate;

/// What can go wrong with a video file.
#[derive(Debug, Error)]
pub enum VideoError {
    /// The path does not exist.
    #[error("{}: no such file", path.display())]
    NotFound {
        /// The input path.
        path: PathBuf,
    },
    /// The path is a directory.
    #[error("{}: is a directory, not a video file", path.display())]
    IsDirectory {
        /// The input path.
        path: PathBuf,
    },
    /// The file is empty.
    #[error("{}: the file is empty (0 bytes)", path.display())]
    Empty {
        /// The input path.
        path: PathBuf,
    },
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Unreadable {
        /// The input path.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// FFmpeg does not recognise the file as a media file.
    #[error("{}: not a video FFmpeg can read ({reason})", path.display())]
    NotMedia {
        /// The input path.
        path: PathBuf,
        /// FFmpeg's explanation.
        reason: String,
    },
    /// A local file that would make FFmpeg read other files or the network (a playlist, a
    /// concat list, a session description): refused.
    #[error("{}: {what}, which refers to other files or streams; keyscribe reads only self-contained local media files (pass it as a file:// URL to let FFmpeg follow it)", path.display())]
    RefersToOtherFiles {
        /// The input path.
        path: PathBuf,
        /// What the file is.
        what: String,
    },
    /// The video's pictures are outside the size limits of [`crate::picture`].
    #[error("{}: {source}", path.display())]
    PictureTooLarge {
        /// The input path.
        path: PathBuf,
        /// Which limit they exceed.
        source: crate::picture::PictureSizeError,
    },
    /// The file holds media but no video stream (e.g. an audio file).
    #[error("{}: has no video stream{}", path.display(), if *has_audio { " (it holds only audio)" } else { "" })]
    NoVideoStream {
        /// The input path.
        path: PathBuf,
        /// Whether an audio stream was found.
        has_audio: bool,
    },
    /// The video codec has no decoder in this FFmpeg build.
    #[error("{}: no decoder for the video codec `{codec}` in this FFmpeg build", path.display())]
    UnsupportedCodec {
        /// The input path.
        path: PathBuf,
        /// The codec's name.
        codec: String,
    },
    /// Decoding failed before any frame could be produced, or seeking failed.
    #[error("{}: {problem}", path.display())]
    Decode {
        /// The input path.
        path: PathBuf,
        /// What failed.
        problem: String,
    },
    /// A requested output size or setting is unusable.
    #[error("{problem}")]
    BadSetting {
        /// What is wrong.
        problem: String,
    },
}

/// Initialises FFmpeg once per process and keeps its own logging quiet: problems reach the
/// user through [`VideoError`] and warnings, not through FFmpeg's stderr chatter.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        ffmpeg_next::init().expect("FFmpeg failed to initialise");
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Fatal);
    });
}

/// Checks that `path` names a non-empty regular file before FFmpeg sees it, so that the
/// common mistakes get precise messages.
fn check_input_file(path: &Path) -> Result<(), VideoError> {
    let metadata = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => VideoError::NotFound {
            path: path.to_path_buf(),
        },
        _ => VideoError::Unreadable {
            path: path.to_path_buf(),
            source,
        },
    })?;
    if metadata.is_dir() {
        return Err(VideoError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    if metadata.len() == 0 {
        return Err(VideoError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}
