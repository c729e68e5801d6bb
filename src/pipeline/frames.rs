//! The `frames` job: sampled frames written as JPEG files named by their timecode, with an
//! `index.json` listing them. A two-stage pipeline: decode -> encode and write.

use std::collections::HashSet;
use std::path::Path;

use serde::Serialize;

use super::{PipelineError, Progress, Stages, StopSignal};
use crate::analysis::DecodeGapRecord;
use crate::atomic;
use crate::time::MediaTime;
use crate::video::{DecodeGap, DecodeOptions, Frame, FrameReader, VideoInfo};

/// Frames waiting between decoding and writing.
const FRAME_QUEUE: usize = 8;

/// JPEG quality of written frames.
const JPEG_QUALITY: u8 = 92;

/// One written frame, as listed in `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WrittenFrame {
    /// File name inside the output directory.
    pub file: String,
    /// When the frame is shown, in seconds from the start.
    pub time_s: f64,
    /// The same time as `HH:MM:SS.mmm`.
    pub timecode: String,
    /// Raw presentation timestamp in the stream's time base.
    pub pts: i64,
    /// Position among all decoded frames, from 0.
    pub frame: Option<u64>,
}

/// The `index.json` document.
#[derive(Debug, Clone, Serialize)]
pub struct FramesIndex {
    /// The video as probed.
    pub video: VideoInfo,
    /// The frames written, in time order.
    pub frames: Vec<WrittenFrame>,
    /// Spans whose frames could not be decoded (damaged data); absent when there were none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decode_gaps: Vec<DecodeGapRecord>,
    /// Set when the video ended early (damaged or truncated); the frames before are kept.
    pub warning: Option<String>,
}

/// Decodes `video` with `options` and writes every sampled frame into `out_dir` as JPEG,
/// plus `index.json`. Progress and warnings go to `progress`.
pub fn write_frames(
    video: &Path,
    options: DecodeOptions,
    out_dir: &Path,
    signal: StopSignal,
    quiet: bool,
) -> Result<FramesIndex, PipelineError> {
    let reader = FrameReader::open(video, options)?;
    let info = reader.info().clone();
    prepare_output_dir(out_dir)?;
    let progress = Progress::new("frames", MediaTime::from_seconds(info.duration_s), quiet);

    let (frame_sender, frame_receiver) = crossbeam_channel::bounded::<Frame>(FRAME_QUEUE);
    let mut stages = Stages::new(signal);

    let decoding = stages.spawn("decode", move |signal| {
        let mut reader = reader;
        while let Some(frame) = reader.next_frame()? {
            signal.send(&frame_sender, frame)?;
        }
        Ok(reader.report().clone())
    });

    let directory = out_dir.to_path_buf();
    let bar = progress.clone();
    let writing = stages.spawn("write", move |signal| {
        let mut names = HashSet::new();
        let mut written = Vec::new();
        while let Some(frame) = signal.recv(&frame_receiver)? {
            let file = unique_name(&mut names, frame.time);
            write_jpeg(&directory.join(&file), &frame)?;
            bar.advance_to(frame.time);
            written.push(WrittenFrame {
                file,
                time_s: frame.time.seconds(),
                timecode: frame.time.timecode(),
                pts: frame.pts,
                frame: frame.number,
            });
        }
        Ok(written)
    });

    let (report, frames) = (decoding.join(), writing.join());
    progress.finish();
    let (report, frames) = (report?, frames?);
    for gap in &report.gaps {
        progress.println(format!(
            "warning: {}: {} to {}: {}",
            video.display(),
            gap.start,
            gap.end,
            gap.reason()
        ));
    }
    if let Some(warning) = &report.stopped_early {
        progress.println(format!("warning: {}: {warning}", video.display()));
    }
    let index = FramesIndex {
        video: info,
        frames,
        decode_gaps: gap_records(&report.gaps),
        warning: report.stopped_early,
    };
    let index_path = out_dir.join("index.json");
    let json = serde_json::to_vec_pretty(&index).expect("the index serialises");
    atomic::write(&index_path, &json).map_err(|source| PipelineError::Output {
        path: index_path,
        source,
    })?;
    Ok(index)
}

/// Decode gaps as the documents record them.
pub(super) fn gap_records(gaps: &[DecodeGap]) -> Vec<DecodeGapRecord> {
    gaps.iter()
        .map(|gap| DecodeGapRecord {
            start_s: gap.start.seconds(),
            end_s: gap.end.seconds(),
            reason: gap.reason(),
        })
        .collect()
}

/// Creates the output directory and checks that files can be written in it.
fn prepare_output_dir(out_dir: &Path) -> Result<(), PipelineError> {
    let failed = |source| PipelineError::Output {
        path: out_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(out_dir).map_err(failed)?;
    let probe = atomic::temporary_path(&out_dir.join("write-check"));
    std::fs::write(&probe, b"").map_err(failed)?;
    std::fs::remove_file(&probe).map_err(failed)
}

/// `HH-MM-SS.mmm.jpg`, with a counter appended when two frames share a millisecond.
fn unique_name(names: &mut HashSet<String>, time: MediaTime) -> String {
    let stem = time.file_stem();
    let mut name = format!("{stem}.jpg");
    let mut counter = 1;
    while !names.insert(name.clone()) {
        name = format!("{stem}-{counter}.jpg");
        counter += 1;
    }
    name
}

fn write_jpeg(path: &Path, frame: &Frame) -> Result<(), PipelineError> {
    atomic::write_with(path, |writer| {
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(writer, JPEG_QUALITY);
        frame
            .image
            .write_with_encoder(encoder)
            .map_err(std::io::Error::other)
    })
    .map_err(|source| PipelineError::Output {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_timecodes_made_unique() {
        let mut names = HashSet::new();
        let time = MediaTime::from_seconds(3.7541);
        assert_eq!(unique_name(&mut names, time), "00-00-03.754.jpg");
        assert_eq!(unique_name(&mut names, time), "00-00-03.754-1.jpg");
    }
}
