//! Opening an input with FFmpeg. A local file is read through FFmpeg's `file` protocol
//! only, by demuxers that read nothing but the file itself: a playlist, a concat list or a
//! session description saved under a video's name cannot make keyscribe read other files or
//! the network. A URL (`scheme://...`) is opened as FFmpeg opens it.
//!
//! The path reaches FFmpeg as its raw bytes, so file names that are not UTF-8 open too.

use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::OnceLock;

use ffmpeg_next::ffi;
use ffmpeg_next::format::context::Input;

use super::live::{LiveSource, LiveTarget, Watchdog};
use super::{check_input_file, VideoError};

/// Demuxers that read a local file and then open what it names: other files, URLs, network
/// streams or scripts. Demuxers flagged `AVFMT_NOFILE` open their input by name themselves
/// (devices, RTSP, image sequences such as `frame%03d.png`) and are refused as well.
const REFERRING_DEMUXERS: [(&str, &str); 8] = [
    ("hls", "an HLS playlist"),
    ("dash", "a DASH manifest"),
    ("concat", "an FFmpeg concat list"),
    ("imf", "an IMF composition playlist"),
    ("sdp", "an SDP session description"),
    ("avisynth", "an AviSynth script"),
    ("vapoursynth", "a VapourSynth script"),
    ("lavfi", "a filter graph"),
];

/// How much of a refused file is read to name its format.
const PROBE_BYTES: usize = 1 << 20;

/// Opens `path` and reads its stream information: a URL as FFmpeg opens it, anything else
/// as a local file under the restrictions of this module.
pub(super) fn open_input(path: &Path) -> Result<Input, VideoError> {
    if is_url(path) {
        let url = CString::new(path.as_os_str().as_bytes()).map_err(|_| nul_in_path(path))?;
        return open_with(path, &url, &[]);
    }
    check_input_file(path)?;
    // `file:` keeps FFmpeg from reading a name such as `concat:a|b` as a protocol.
    let mut local = b"file:".to_vec();
    local.extend_from_slice(path.as_os_str().as_bytes());
    let url = CString::new(local).map_err(|_| nul_in_path(path))?;
    let options = [
        ("protocol_whitelist", "file"),
        ("format_whitelist", allowed_demuxers()),
    ];
    open_with(path, &url, &options).map_err(|error| match referring_format(path) {
        Some(what) => VideoError::RefersToOtherFiles {
            path: path.to_path_buf(),
            what: what.to_string(),
        },
        None => error,
    })
}

/// Opens a live `source` for reading: a URL as FFmpeg opens it, a V4L2 device through the
/// `v4l2` demuxer, stdin through the `pipe` protocol, or any input through the demuxer the
/// user named. Every blocking call gives up when `watchdog` says so. This is the only way
/// to a device or a named demuxer: [`open_input`] keeps local files to self-contained media.
pub(super) fn open_live_input(
    source: &LiveSource,
    watchdog: &Watchdog,
) -> Result<Input, VideoError> {
    let label = PathBuf::from(source.to_string());
    let not_media = |reason: String| VideoError::NotMedia {
        path: label.clone(),
        reason,
    };
    let (url, format) = match source.target() {
        LiveTarget::Url(url) => (url.to_string(), source.format()),
        LiveTarget::Device(path) => {
            let mut url = Vec::from(path.as_os_str().as_bytes());
            url.retain(|byte| *byte != 0);
            (
                String::from_utf8_lossy(&url).into_owned(),
                Some(source.format().unwrap_or("v4l2")),
            )
        }
        LiveTarget::Stdin => ("pipe:0".to_string(), source.format()),
    };
    let url = CString::new(url).map_err(|_| nul_in_path(&label))?;
    let demuxer = match format {
        Some(name) => {
            let name_c = CString::new(name).map_err(|_| nul_in_path(&label))?;
            // SAFETY: looks a name up in FFmpeg's static demuxer table.
            let found = unsafe { ffi::av_find_input_format(name_c.as_ptr()) };
            if found.is_null() {
                return Err(not_media(format!(
                    "this FFmpeg build has no input format `{name}`"
                )));
            }
            found
        }
        None => ptr::null(),
    };
    // SAFETY: a fresh context; avformat_open_input takes it over (and frees it on failure).
    let mut context = unsafe { ffi::avformat_alloc_context() };
    if context.is_null() {
        return Err(not_media("out of memory".to_string()));
    }
    // SAFETY: `context` is valid; the callback reads `watchdog`, which the caller keeps
    // alive for as long as the input (the decoding stream holds both, the input first).
    unsafe {
        (*context).interrupt_callback = ffi::AVIOInterruptCB {
            callback: Some(watchdog_callback),
            opaque: watchdog as *const Watchdog as *mut std::ffi::c_void,
        };
    }
    watchdog.heard();
    // SAFETY: as for `open_with`; the demuxer is null or from FFmpeg's table.
    let opened =
        unsafe { ffi::avformat_open_input(&mut context, url.as_ptr(), demuxer, ptr::null_mut()) };
    if opened < 0 {
        return Err(not_media(ffmpeg_next::Error::from(opened).to_string()));
    }
    // SAFETY: `context` was opened above; on failure it is closed, which nulls it.
    let found = unsafe { ffi::avformat_find_stream_info(context, ptr::null_mut()) };
    if found < 0 {
        // SAFETY: as above.
        unsafe { ffi::avformat_close_input(&mut context) };
        return Err(not_media(ffmpeg_next::Error::from(found).to_string()));
    }
    // SAFETY: an opened context; `Input` closes it when dropped.
    Ok(unsafe { Input::wrap(context) })
}

/// FFmpeg's interrupt callback: non-zero makes a blocked read or connect give up.
unsafe extern "C" fn watchdog_callback(opaque: *mut std::ffi::c_void) -> std::ffi::c_int {
    // SAFETY: `opaque` is the `Watchdog` set by `open_live_input`, alive while the input is.
    let watchdog = unsafe { &*(opaque as *const Watchdog) };
    std::ffi::c_int::from(watchdog.gives_up())
}

/// Whether `path` is a URL (`scheme://...`) rather than a local file of that name.
pub(super) fn is_url(path: &Path) -> bool {
    let Some(text) = path.to_str() else {
        return false;
    };
    let Some((scheme, _)) = text.split_once("://") else {
        return false;
    };
    let mut letters = scheme.chars();
    letters.next().is_some_and(|c| c.is_ascii_alphabetic())
        && letters.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !path.exists()
}

fn nul_in_path(path: &Path) -> VideoError {
    VideoError::NotFound {
        path: path.to_path_buf(),
    }
}

/// `avformat_open_input` and `avformat_find_stream_info` with `options`.
fn open_with(path: &Path, url: &CStr, options: &[(&str, &str)]) -> Result<Input, VideoError> {
    let not_media = |code: i32| VideoError::NotMedia {
        path: path.to_path_buf(),
        reason: ffmpeg_next::Error::from(code).to_string(),
    };
    let mut dictionary: *mut ffi::AVDictionary = ptr::null_mut();
    for (key, value) in options {
        let key = CString::new(*key).expect("option names have no NUL byte");
        let value = CString::new(*value).expect("option values have no NUL byte");
        // SAFETY: `dictionary` is null or a dictionary made by earlier calls; the strings
        // are copied.
        unsafe { ffi::av_dict_set(&mut dictionary, key.as_ptr(), value.as_ptr(), 0) };
    }
    let mut context: *mut ffi::AVFormatContext = ptr::null_mut();
    // SAFETY: `context` is null as avformat_open_input expects; on failure it frees the
    // context and leaves the pointer null. The dictionary is left holding the options no
    // component used, and freed here.
    let opened = unsafe {
        let code =
            ffi::avformat_open_input(&mut context, url.as_ptr(), ptr::null(), &mut dictionary);
        ffi::av_dict_free(&mut dictionary);
        code
    };
    if opened < 0 {
        return Err(not_media(opened));
    }
    // SAFETY: `context` was opened above; on failure it is closed, which nulls it.
    let found = unsafe { ffi::avformat_find_stream_info(context, ptr::null_mut()) };
    if found < 0 {
        // SAFETY: as above.
        unsafe { ffi::avformat_close_input(&mut context) };
        return Err(not_media(found));
    }
    // SAFETY: an opened context; `Input` closes it when dropped.
    Ok(unsafe { Input::wrap(context) })
}

/// Every demuxer of this FFmpeg build that reads only the file it is given, as the
/// comma-separated list FFmpeg's `format_whitelist` takes.
fn allowed_demuxers() -> &'static str {
    static ALLOWED: OnceLock<String> = OnceLock::new();
    ALLOWED.get_or_init(|| {
        let mut names = Vec::new();
        let mut opaque = ptr::null_mut();
        loop {
            // SAFETY: iterates FFmpeg's static demuxer table with its own cursor.
            let demuxer = unsafe { ffi::av_demuxer_iterate(&mut opaque) };
            if demuxer.is_null() {
                break;
            }
            // SAFETY: the table's entries are static.
            if unsafe { refusal(demuxer) }.is_none() {
                // SAFETY: as above; names are C strings.
                let name = unsafe { CStr::from_ptr((*demuxer).name) };
                names.push(name.to_string_lossy().into_owned());
            }
        }
        names.join(",")
    })
}

/// Why a demuxer is refused for local files, if it is.
///
/// # Safety
/// `demuxer` points at one of FFmpeg's demuxers.
unsafe fn refusal(demuxer: *const ffi::AVInputFormat) -> Option<&'static str> {
    // SAFETY: the caller's promise; demuxer names are C strings.
    let (name, flags) = unsafe { (CStr::from_ptr((*demuxer).name), (*demuxer).flags) };
    // A name lists the demuxer's aliases separated by commas.
    let referring = name.to_string_lossy().split(',').find_map(|alias| {
        REFERRING_DEMUXERS
            .iter()
            .find(|(refused, _)| *refused == alias)
            .map(|(_, what)| *what)
    });
    referring.or((flags & ffi::AVFMT_NOFILE != 0).then_some(
        "an input FFmpeg opens by name (a device, a network stream or an image sequence)",
    ))
}

/// What the local file at `path` is when FFmpeg would read it with a refused demuxer.
fn referring_format(path: &Path) -> Option<&'static str> {
    let mut head = Vec::with_capacity(PROBE_BYTES);
    std::fs::File::open(path)
        .ok()?
        .take(PROBE_BYTES as u64)
        .read_to_end(&mut head)
        .ok()?;
    let size = head.len();
    // FFmpeg's probes read past the data by up to AVPROBE_PADDING_SIZE zero bytes.
    head.resize(size + ffi::AVPROBE_PADDING_SIZE as usize, 0);
    let filename = CString::new(path.as_os_str().as_bytes()).ok()?;
    let probe = ffi::AVProbeData {
        filename: filename.as_ptr(),
        buf: head.as_mut_ptr(),
        buf_size: size as i32,
        mime_type: ptr::null(),
    };
    let mut score = 0;
    // SAFETY: `probe` points at live, padded data and a C string for the whole call.
    let format = unsafe { ffi::av_probe_input_format3(&probe, 1, &mut score) };
    if format.is_null() {
        return None;
    }
    // SAFETY: a demuxer FFmpeg returned.
    unsafe { refusal(format) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlists_and_devices_are_refused_and_containers_allowed() {
        super::super::init();
        let allowed: Vec<&str> = allowed_demuxers().split(',').collect();
        for refused in ["hls", "concat", "sdp", "rtsp", "lavfi", "image2"] {
            assert!(!allowed.contains(&refused), "{refused}");
        }
        for container in [
            "mov", "mp4", "matroska", "webm", "mpegts", "avi", "png_pipe",
        ] {
            assert!(allowed.contains(&container), "{container}");
        }
    }

    #[test]
    fn urls_are_told_from_file_names() {
        assert!(is_url(Path::new("rtsp://camera.local/stream")));
        assert!(is_url(Path::new("file:///tmp/a.m3u8")));
        assert!(!is_url(Path::new("clip.mp4")));
        assert!(!is_url(Path::new("/videos/a://b.mp4")));
        assert!(!is_url(Path::new("://x")));
    }
}
