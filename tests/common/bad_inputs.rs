//! Damaged and hostile inputs, made on the fly: a video with a corrupt middle, videos of
//! extreme shapes, a playlist saved under a video's name, a PNG whose header claims huge
//! dimensions, and a file name that is not UTF-8.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Copies the MP4 `source` to `target` with `length` bytes in the middle of its media data
/// (`mdat`) overwritten with noise: the index stays intact, so the demuxer delivers every
/// packet and the decoder meets the damage.
pub fn corrupt_mp4_media(source: &Path, target: &Path, length: usize) {
    let mut data = std::fs::read(source).unwrap();
    let mut offset = 0;
    let media = loop {
        assert!(
            offset + 8 <= data.len(),
            "no mdat box in {}",
            source.display()
        );
        let size = u32::from_be_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
        if &data[offset + 4..offset + 8] == b"mdat" {
            break offset + 8..offset + size;
        }
        offset += size;
    };
    let middle = (media.start + media.end) / 2;
    add_noise(&mut data[middle..middle + length]);
    std::fs::write(target, data).unwrap();
}

/// Copies `source` to `target` with `length` bytes in the middle of the file overwritten
/// with noise: for containers without an index, the demuxer meets the damage.
pub fn corrupt_file_middle(source: &Path, target: &Path, length: usize) {
    let mut data = std::fs::read(source).unwrap();
    let middle = data.len() / 2;
    add_noise(&mut data[middle..middle + length]);
    std::fs::write(target, data).unwrap();
}

fn add_noise(bytes: &mut [u8]) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for byte in bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
}

/// Copies the streams of `source` into the container `target`'s extension names, with the
/// ffmpeg CLI.
pub fn remux(source: &Path, target: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(source)
        .args(["-c", "copy"])
        .arg(target)
        .status()
        .expect("the ffmpeg CLI runs");
    assert!(
        status.success(),
        "ffmpeg could not remux {}",
        source.display()
    );
}

/// A one-second H.264 video of `width` x `height` pixels at 5 fps, made with the ffmpeg CLI.
pub fn video_of_size(dir: &Path, width: u32, height: u32) -> PathBuf {
    let path = dir.join(format!("{width}x{height}.mp4"));
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("color=c=gray:s={width}x{height}:d=1:r=5"))
        .args(["-pix_fmt", "yuv420p", "-c:v", "libx264"])
        .arg(&path)
        .status()
        .expect("the ffmpeg CLI runs");
    assert!(status.success(), "ffmpeg made no {width}x{height} video");
    path
}

/// An HLS playlist naming `target`, saved as `name` in `dir`.
pub fn hls_playlist(dir: &Path, name: &str, target: &Path) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:30\n#EXTINF:30,\n{}\n#EXT-X-ENDLIST\n",
        target.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// An FFmpeg concat list naming `target`, saved as `name` in `dir`.
pub fn concat_list(dir: &Path, name: &str, target: &Path) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("ffconcat version 1.0\nfile '{}'\n", target.display()),
    )
    .unwrap();
    path
}

/// A PNG file whose header says `width` x `height` RGB pixels, followed by a few bytes of
/// pixel data: a decoder that trusts the header allocates for the whole picture.
pub fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    for (kind, data) in [
        (b"IHDR", header.as_slice()),
        // An empty zlib stream.
        (b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]),
        (b"IEND", &[]),
    ] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        let crc = crc32(&png[start..]);
        png.extend_from_slice(&crc.to_be_bytes());
    }
    png
}

/// The CRC-32 of PNG chunks (ISO-HDLC).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A path in `dir` whose file name holds the byte 0xFF, which is not UTF-8.
pub fn non_utf8_path(dir: &Path, extension: &str) -> PathBuf {
    let mut name = b"clip-\xff.".to_vec();
    name.extend_from_slice(extension.as_bytes());
    let path = dir.join(OsStr::from_bytes(&name));
    assert!(path.to_str().is_none());
    path
}
