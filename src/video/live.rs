//! Live sources: network streams, capture devices and stdin, opened on a path of their own
//! (see [`FrameReader::open_live`](super::FrameReader::open_live)); the local-file rules of
//! `run` stay as they are. A [`Watchdog`] lets every blocking read give up, on a stop or
//! when the source has been silent too long.

use std::fmt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::input::is_url;
use super::VideoError;

/// Where a live stream comes from, and optionally the FFmpeg input format to read it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSource {
    target: LiveTarget,
    format: Option<String>,
}

/// The kinds of live source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveTarget {
    /// A URL FFmpeg opens: `rtsp://`, `rtmp://`, `srt://`, `udp://`, `tcp://`, `http(s)://`
    /// (HLS included).
    Url(String),
    /// A capture device such as `/dev/video0` (read with `v4l2` unless a format is named).
    Device(PathBuf),
    /// A stream on standard input (`-`).
    Stdin,
}

impl LiveSource {
    /// Reads a source as given on the command line: `-` for stdin, a URL, or a character
    /// device. A regular file is refused (it is not live: `keyscribe run` analyses it), as
    /// is anything else. With `format`, a name that is neither URL nor path (an X11 display
    /// such as `:0.0` with `x11grab`) is passed to that input format as it is.
    pub fn parse(text: &str, format: Option<&str>) -> Result<LiveSource, VideoError> {
        let path = Path::new(text);
        let target = if text == "-" {
            LiveTarget::Stdin
        } else if is_url(path) {
            LiveTarget::Url(text.to_string())
        } else {
            match std::fs::metadata(path) {
                Ok(metadata) if metadata.file_type().is_char_device() => {
                    LiveTarget::Device(path.to_path_buf())
                }
                Ok(metadata) if metadata.is_file() => {
                    return Err(VideoError::BadSetting {
                        problem: format!(
                            "{text}: a file, not a live source; use `keyscribe run {text}` to \
                             analyse a file"
                        ),
                    })
                }
                Ok(_) => {
                    return Err(VideoError::BadSetting {
                        problem: format!(
                            "{text}: not a live source (expected a URL such as rtsp://..., a \
                             capture device such as /dev/video0, or - for stdin)"
                        ),
                    })
                }
                Err(_) if format.is_some() => LiveTarget::Url(text.to_string()),
                Err(_) => {
                    return Err(VideoError::BadSetting {
                        problem: format!(
                            "{text}: no such device, and not a URL (expected rtsp://..., \
                             udp://..., tcp://..., /dev/video0, or - for stdin)"
                        ),
                    })
                }
            }
        };
        Ok(LiveSource {
            target,
            format: format.map(str::to_string),
        })
    }

    /// What kind of source it is.
    pub fn target(&self) -> &LiveTarget {
        &self.target
    }

    /// The FFmpeg input format named for it, if any.
    pub fn format(&self) -> Option<&str> {
        self.format.as_deref()
    }

    /// Whether the source can be opened again after it ends or fails (a network stream or
    /// a device); stdin cannot.
    pub fn can_reconnect(&self) -> bool {
        !matches!(self.target, LiveTarget::Stdin)
    }
}

impl fmt::Display for LiveSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            LiveTarget::Url(url) => f.write_str(url),
            LiveTarget::Device(path) => write!(f, "{}", path.display()),
            LiveTarget::Stdin => f.write_str("<stdin>"),
        }
    }
}

/// Decides when a blocked read of a live source gives up: when asked to stop, or when no
/// data has arrived for the stall timeout.
pub struct Watchdog {
    stop: Box<dyn Fn() -> bool + Send + Sync>,
    stall: Duration,
    started: Instant,
    /// Milliseconds from `started` to the last data heard.
    heard_at_ms: AtomicU64,
}

impl fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watchdog")
            .field("stall", &self.stall)
            .field("stalled", &self.stalled())
            .finish()
    }
}

impl Watchdog {
    /// A watchdog that gives up once `stop` says so or after `stall` without data.
    pub fn new(stop: impl Fn() -> bool + Send + Sync + 'static, stall: Duration) -> Arc<Watchdog> {
        Arc::new(Watchdog {
            stop: Box::new(stop),
            stall,
            started: Instant::now(),
            heard_at_ms: AtomicU64::new(0),
        })
    }

    /// Data arrived (a packet, or a connection attempt starts).
    pub fn heard(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.heard_at_ms.store(now, Ordering::SeqCst);
    }

    /// Whether the source has been silent for the stall timeout.
    pub fn stalled(&self) -> bool {
        let heard = Duration::from_millis(self.heard_at_ms.load(Ordering::SeqCst));
        self.started.elapsed().saturating_sub(heard) > self.stall
    }

    /// Whether a blocked read should give up now.
    pub fn gives_up(&self) -> bool {
        (self.stop)() || self.stalled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_urls_devices_or_stdin_and_files_are_refused() {
        assert_eq!(
            LiveSource::parse("-", None).unwrap().target,
            LiveTarget::Stdin
        );
        let url = LiveSource::parse("rtsp://camera.local/stream", None).unwrap();
        assert!(matches!(url.target(), LiveTarget::Url(_)));
        assert!(url.can_reconnect());
        let device = LiveSource::parse("/dev/null", None).unwrap();
        assert!(matches!(device.target(), LiveTarget::Device(_)));
        let file = LiveSource::parse("Cargo.toml", None)
            .unwrap_err()
            .to_string();
        assert!(file.contains("keyscribe run"), "{file}");
        let missing = LiveSource::parse("no-such-camera", None)
            .unwrap_err()
            .to_string();
        assert!(missing.starts_with("no-such-camera: "), "{missing}");
        let display = LiveSource::parse(":0.0", Some("x11grab")).unwrap();
        assert_eq!(display.format(), Some("x11grab"));
    }

    #[test]
    fn a_watchdog_gives_up_on_silence_or_a_stop() {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let watchdog = Watchdog::new(
            move || flag.load(Ordering::SeqCst),
            Duration::from_millis(50),
        );
        watchdog.heard();
        assert!(!watchdog.gives_up());
        std::thread::sleep(Duration::from_millis(80));
        assert!(watchdog.stalled() && watchdog.gives_up());
        watchdog.heard();
        assert!(!watchdog.gives_up());
        stop.store(true, Ordering::SeqCst);
        assert!(watchdog.gives_up());
    }
}
