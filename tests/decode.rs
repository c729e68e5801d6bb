//! The decode stage against videos with known content: timestamps, sampling, seeking,
//! rotation, containers and codecs, and bad input.

#[path = "common/bad_inputs.rs"]
mod bad_inputs;
mod common;

use std::path::{Path, PathBuf};

use common::{read_counter, video};
use keyscribe::time::MediaTime;
use keyscribe::video::{
    self, DecodeOptions, DecodeReport, Frame, FrameReader, FrameSeeker, ResizeMode, SampleRate,
    Size, VideoError,
};

fn decode_all(name: &str, options: DecodeOptions) -> Vec<Frame> {
    FrameReader::open(&video(name), options)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn at_rate(rate: f64) -> DecodeOptions {
    DecodeOptions {
        sample_rate: SampleRate::PerSecond(rate),
        ..DecodeOptions::default()
    }
}

/// Source frame times of vfr.mp4: a 60 fps counter keeping every 2nd frame before 2 s,
/// every 12th from 2 s to 4 s, and every frame after (see samples/make_samples.sh).
fn vfr_frame_numbers() -> Vec<u32> {
    (0..360)
        .filter(|&n| {
            let t = f64::from(n) / 60.0;
            if t < 2.0 {
                n % 2 == 0
            } else if t < 4.0 {
                n % 12 == 0
            } else {
                true
            }
        })
        .collect()
}

#[test]
fn constant_rate_samples_are_on_the_half_second_and_show_their_frame() {
    let frames = decode_all("counter.mp4", at_rate(2.0));
    assert_eq!(frames.len(), 24);
    for (k, frame) in frames.iter().enumerate() {
        // At 25 fps the frame on screen at k/2 s is frame floor(12.5 k), shown at n/25 s.
        let on_screen = (k as f64 * 12.5).floor();
        assert!(
            (frame.time.seconds() - on_screen / 25.0).abs() < 1e-6,
            "{:?}",
            frame.time
        );
        let counter = read_counter(&frame.image);
        assert_eq!(counter, on_screen as u32);
        assert_eq!(frame.number, Some(u64::from(counter)));
        assert_eq!(frame.image.dimensions(), (320, 240));
    }
}

#[test]
fn every_frame_when_asked_for_all() {
    let frames = decode_all(
        "counter.mp4",
        DecodeOptions {
            sample_rate: SampleRate::All,
            ..DecodeOptions::default()
        },
    );
    assert_eq!(frames.len(), 300);
    for (n, frame) in frames.iter().enumerate() {
        assert!((frame.time.seconds() - n as f64 / 25.0).abs() < 1e-6);
        assert_eq!(read_counter(&frame.image), n as u32);
    }
}

#[test]
fn variable_rate_samples_by_time() {
    let info = video::probe(&video("vfr.mp4")).unwrap();
    assert!(info.variable_frame_rate);
    assert!(
        !video::probe(&video("counter.mp4"))
            .unwrap()
            .variable_frame_rate
    );
    let numbers = vfr_frame_numbers();
    let frames = decode_all("vfr.mp4", at_rate(2.0));
    assert_eq!(frames.len(), 12);
    for (k, frame) in frames.iter().enumerate() {
        let instant = k as f64 * 0.5;
        // The frame on screen at the instant: the last source frame at or before it.
        let on_screen = numbers
            .iter()
            .copied()
            .filter(|&n| f64::from(n) / 60.0 <= instant + 1e-9)
            .max()
            .unwrap();
        let counter = read_counter(&frame.image);
        assert_eq!(counter, on_screen, "sample {k} at {instant}");
        assert!((frame.time.seconds() - f64::from(counter) / 60.0).abs() < 1.0 / 60.0);
    }
    let times: Vec<f64> = frames.iter().map(|f| f.time.seconds()).collect();
    assert!(times.windows(2).all(|pair| pair[0] < pair[1]), "{times:?}");
}

#[test]
fn delayed_start_counts_from_the_first_frame() {
    for (name, start) in [("delayed.mp4", 1.075), ("delayed.ts", 1.48)] {
        let info = video::probe(&video(name)).unwrap();
        assert!((info.start_time_s - start).abs() < 0.01, "{name}: {info:?}");
        let frames = decode_all(name, at_rate(2.0));
        assert_eq!(frames[0].time, MediaTime::ZERO, "{name}");
        assert_eq!(frames.len(), 24, "{name}");
        for frame in &frames {
            let counter = read_counter(&frame.image);
            let shown = f64::from(counter) / 25.0;
            assert!(
                (frame.time.seconds() - shown).abs() < 1.0 / 25.0,
                "{name} {frame:?}"
            );
        }
    }
}

#[test]
fn seek_returns_the_frame_on_screen() {
    let mut seeker =
        FrameSeeker::open(&video("counter.mp4"), Size::Native, ResizeMode::Crop).unwrap();
    for time in [
        5.55, 0.0, 0.02, 0.039, 0.04, 1.99, 2.0, 2.01, 11.96, 11.99, 7.3, 3.333,
    ] {
        let frame = seeker.frame_at(MediaTime::from_seconds(time)).unwrap();
        let expected = (time * 25.0 + 1e-6).floor() as u32;
        assert_eq!(read_counter(&frame.image), expected, "seek to {time}");
        assert!((frame.time.seconds() - f64::from(expected) / 25.0).abs() < 1e-6);
    }
    // Past the end: the last frame.
    let last = seeker.frame_at(MediaTime::from_seconds(30.0)).unwrap();
    assert_eq!(read_counter(&last.image), 299);
}

#[test]
fn seek_in_variable_rate_and_delayed_files() {
    let numbers = vfr_frame_numbers();
    let mut seeker = FrameSeeker::open(&video("vfr.mp4"), Size::Native, ResizeMode::Crop).unwrap();
    for time in [3.1, 0.51, 2.4, 5.99, 1.0] {
        let frame = seeker.frame_at(MediaTime::from_seconds(time)).unwrap();
        let expected = numbers
            .iter()
            .copied()
            .filter(|&n| f64::from(n) / 60.0 <= time + 1e-9)
            .max()
            .unwrap();
        assert_eq!(read_counter(&frame.image), expected, "seek to {time}");
    }
    let mut seeker =
        FrameSeeker::open(&video("delayed.mp4"), Size::Native, ResizeMode::Crop).unwrap();
    let frame = seeker.frame_at(MediaTime::from_seconds(4.5)).unwrap();
    assert_eq!(read_counter(&frame.image), 112);
}

#[test]
fn rotation_is_applied() {
    let info = video::probe(&video("rotated.mp4")).unwrap();
    assert_eq!(info.rotation_deg, 90);
    assert_eq!((info.width, info.height), (240, 320));
    let frames = decode_all("rotated.mp4", at_rate(1.0));
    let frame = &frames[3];
    assert_eq!(frame.image.dimensions(), (240, 320));
    // Turned clockwise, the stored top strip is now the right-hand strip and its first
    // block is at the top: undo the turn and read the counter.
    let upright = image::imageops::rotate270(&frame.image);
    assert_eq!(read_counter(&upright), 75);
}

#[test]
fn containers_and_codecs_decode() {
    for name in [
        "h264.mkv",
        "h264.mov",
        "vp9.webm",
        "mpeg4.avi",
        "hevc.mp4",
        "av1.mkv",
    ] {
        let frames = decode_all(name, at_rate(2.0));
        assert_eq!(frames.len(), 4, "{name}");
        for frame in &frames {
            let expected = (frame.time.seconds() * 25.0).round() as u32;
            assert_eq!(read_counter(&frame.image), expected, "{name}");
        }
    }
}

#[test]
fn resize_modes_fit_the_picture() {
    let options = |mode| DecodeOptions {
        sample_rate: SampleRate::PerSecond(1.0),
        size: Size::Exact {
            width: 256,
            height: 256,
        },
        mode,
        ..DecodeOptions::default()
    };
    let stretch = &decode_all("counter.mp4", options(ResizeMode::Stretch))[2];
    assert_eq!(stretch.image.dimensions(), (256, 256));
    assert_eq!(read_counter(&stretch.image), 50);

    // 4:3 padded into a square: 256x192 centred, 32 black rows above and below.
    let pad = &decode_all("counter.mp4", options(ResizeMode::Pad))[2];
    assert_eq!(pad.image.dimensions(), (256, 256));
    assert!(pad.image.get_pixel(128, 10).0.iter().all(|&c| c < 8));
    assert!(pad.image.get_pixel(128, 250).0.iter().all(|&c| c < 8));
    let inner = image::imageops::crop_imm(&pad.image, 0, 32, 256, 192).to_image();
    assert_eq!(read_counter(&inner), 50);

    // 4:3 cropped into a square: scaled to 341x256, 42 columns cut on each side.
    let crop = &decode_all("counter.mp4", options(ResizeMode::Crop))[2];
    assert_eq!(crop.image.dimensions(), (256, 256));
    let mut restored = image::RgbImage::new(341, 256);
    image::imageops::replace(&mut restored, &crop.image, 42, 0);
    // Blocks 3..=12 survive the crop; frame 50 = 0b110010 sets bits 1, 4 and 5.
    let counter = read_counter(&restored);
    assert_eq!(counter & 0b0001_1111_1111_1000, 50 & 0b0001_1111_1111_1000);
}

#[test]
fn keyframes_only_decodes_key_frames() {
    let frames = decode_all(
        "counter.mp4",
        DecodeOptions {
            sample_rate: SampleRate::PerSecond(2.0),
            keyframes_only: true,
            ..DecodeOptions::default()
        },
    );
    let counters: Vec<u32> = frames.iter().map(|f| read_counter(&f.image)).collect();
    assert_eq!(counters, vec![0, 50, 100, 150, 200, 250]);
}

#[test]
fn truncated_file_keeps_the_frames_before_and_says_where_it_stopped() {
    let mut reader = FrameReader::open(&video("truncated.mp4"), at_rate(2.0)).unwrap();
    let mut frames = Vec::new();
    while let Some(frame) = reader.next_frame().unwrap() {
        frames.push(frame);
    }
    assert!(!frames.is_empty() && frames.len() < 16, "{}", frames.len());
    for frame in &frames {
        assert_eq!(
            read_counter(&frame.image),
            (frame.time.seconds() * 25.0).round() as u32
        );
    }
    let warning = reader.report().stopped_early.clone().expect("a warning");
    assert!(warning.contains("truncated"), "{warning}");
}

#[test]
fn bad_inputs_are_named_errors() {
    let dir = common::test_videos();
    type Case = (&'static str, fn(&VideoError) -> bool, &'static str);
    let cases: [Case; 5] = [
        (
            "missing.mp4",
            |e| matches!(e, VideoError::NotFound { .. }),
            "no such file",
        ),
        (
            "notes.txt",
            |e| matches!(e, VideoError::NotMedia { .. }),
            "not a video",
        ),
        (
            "empty.mp4",
            |e| matches!(e, VideoError::Empty { .. }),
            "empty",
        ),
        (
            "audio-only.m4a",
            |e| {
                matches!(
                    e,
                    VideoError::NoVideoStream {
                        has_audio: true,
                        ..
                    }
                )
            },
            "only audio",
        ),
        (
            "",
            |e| matches!(e, VideoError::IsDirectory { .. }),
            "directory",
        ),
    ];
    for (name, is_expected, words) in cases {
        let path = dir.join(name);
        let error = video::probe(&path).unwrap_err();
        assert!(is_expected(&error), "{name}: {error:?}");
        let message = error.to_string();
        assert!(message.contains(words), "{message}");
        assert!(message.contains(&*path.to_string_lossy()), "{message}");
        assert!(FrameReader::open(&path, DecodeOptions::default()).is_err());
    }
}

#[test]
fn thumbnails_show_each_keyframe() {
    let keyframe = |time_s: f64| {
        serde_json::json!({"index": 0, "time_s": time_s, "timecode": "", "change": 0.0,
            "scene": {"start_s": 0.0, "end_s": 1.0}, "caption": null})
    };
    let analysis: keyscribe::analysis::Analysis = serde_json::from_value(serde_json::json!({
        "schema": keyscribe::analysis::SCHEMA,
        "video": {"path": "counter.mp4", "sha256": "", "duration_s": 12.0, "width": 320,
                  "height": 240, "fps": 25.0},
        "models": {"embedder": {"name": "e", "source": "s"}, "captioner": null},
        "pipeline": {},
        "keyframes": [keyframe(7.3), keyframe(0.5), keyframe(11.0)],
        "summary": null,
        "embeddings": null,
        "timings": {"decode_s": 0.0, "embed_s": 0.0, "select_s": 0.0, "caption_s": 0.0,
                    "total_s": 0.0}
    }))
    .unwrap();
    let thumbnails =
        keyscribe::pipeline::keyframe_thumbnails(&video("counter.mp4"), &analysis).unwrap();
    let counters: Vec<u32> = thumbnails
        .iter()
        .map(|jpeg| {
            let picture = image::load_from_memory(jpeg).unwrap().to_rgb8();
            assert_eq!(picture.dimensions(), (320, 240));
            read_counter(&picture)
        })
        .collect();
    assert_eq!(counters, vec![182, 12, 275]);
}

#[test]
fn a_range_decodes_only_that_span_with_times_from_the_file_start() {
    let options = DecodeOptions {
        start: MediaTime::from_seconds(5.0),
        end: Some(MediaTime::from_seconds(7.0)),
        ..at_rate(2.0)
    };
    let mut reader = FrameReader::open(&video("counter.mp4"), options).unwrap();
    let mut frames = Vec::new();
    while let Some(frame) = reader.next_frame().unwrap() {
        frames.push(frame);
    }
    // The frames on screen at 5.0, 5.5, 6.0 and 6.5 s: 25 fps, so frame floor(25 t).
    let counters: Vec<u32> = frames.iter().map(|f| read_counter(&f.image)).collect();
    assert_eq!(counters, vec![125, 137, 150, 162]);
    for (frame, counter) in frames.iter().zip(&counters) {
        assert!((frame.time.seconds() - f64::from(*counter) / 25.0).abs() < 1e-6);
        assert_eq!(frame.number, None, "positions are unknown after a seek");
    }
    // Decoding starts at the key frame before 5 s (every 2 s) and stops at 7 s.
    let report = reader.report();
    assert!(report.frames_decoded <= 80, "{report:?}");
    assert_eq!(report.stopped_early, None);
    assert!(report.gaps.is_empty(), "{report:?}");

    let keyframes = decode_all(
        "counter.mp4",
        DecodeOptions {
            keyframes_only: true,
            start: MediaTime::from_seconds(3.0),
            end: Some(MediaTime::from_seconds(9.0)),
            ..at_rate(2.0)
        },
    );
    let counters: Vec<u32> = keyframes.iter().map(|f| read_counter(&f.image)).collect();
    assert_eq!(counters, vec![50, 100, 150, 200]);
}

#[test]
fn a_range_outside_the_video_is_a_named_error() {
    let path = video("counter.mp4");
    for (start, end) in [
        (5.0, Some(5.0)),
        (6.0, Some(2.0)),
        (12.0, None),
        (40.0, None),
    ] {
        let options = DecodeOptions {
            start: MediaTime::from_seconds(start),
            end: end.map(MediaTime::from_seconds),
            ..DecodeOptions::default()
        };
        let error = FrameReader::open(&path, options).err().expect("an error");
        assert!(matches!(error, VideoError::BadSetting { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&*path.to_string_lossy()), "{message}");
        assert!(message.contains("range"), "{message}");
    }
}

#[test]
fn a_corrupt_middle_is_reported_as_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.mp4");
    bad_inputs::corrupt_mp4_media(&common::scenes_sample(), &corrupt, 100_000);
    let mut reader = FrameReader::open(&corrupt, at_rate(2.0)).unwrap();
    let mut times = Vec::new();
    while let Some(frame) = reader.next_frame().unwrap() {
        times.push(frame.time.seconds());
    }
    let report = reader.report();
    assert_eq!(report.gaps.len(), 1, "{report:?}");
    let gap = &report.gaps[0];
    // The damage sits in the middle of the 30 s sample's media data.
    assert!(
        gap.start.seconds() > 10.0 && gap.end.seconds() < 20.0,
        "{gap:?}"
    );
    assert!(gap.end > gap.start && gap.frames_lost > 0, "{gap:?}");
    assert!(
        gap.reason().contains("could not be decoded"),
        "{}",
        gap.reason()
    );
    // No frame was decoded inside the gap's last lost stretch; the samples around it were.
    assert!(times.iter().any(|&t| t < gap.start.seconds()));
    assert!(times.iter().any(|&t| t >= gap.end.seconds()));
    assert_eq!(report.stopped_early, None);
}

#[test]
fn data_a_demuxer_skips_is_reported_as_a_gap() {
    // Matroska has no index to read blocks by: its demuxer resyncs after the damage and
    // drops what lies in it, without an error.
    let dir = tempfile::tempdir().unwrap();
    let intact = dir.path().join("scenes.mkv");
    bad_inputs::remux(&common::scenes_sample(), &intact);
    let corrupt = dir.path().join("corrupt.mkv");
    bad_inputs::corrupt_file_middle(&intact, &corrupt, 100_000);
    for (path, damaged) in [(&intact, false), (&corrupt, true)] {
        let mut reader = FrameReader::open(path, at_rate(2.0)).unwrap();
        while reader.next_frame().unwrap().is_some() {}
        let report = reader.report();
        if !damaged {
            assert!(report.gaps.is_empty(), "{report:?}");
            continue;
        }
        assert_eq!(report.gaps.len(), 1, "{report:?}");
        let gap = &report.gaps[0];
        assert!(
            gap.start.seconds() > 10.0 && gap.end.seconds() < 20.0,
            "{gap:?}"
        );
        // 100 kB of the 30 s, 1.4 MB sample hold about 2 s of video.
        assert!(gap.end.seconds() - gap.start.seconds() > 1.0, "{gap:?}");
    }
    // Variable-rate video jumps in time without any damage.
    let variable = dir.path().join("vfr.mkv");
    bad_inputs::remux(&video("vfr.mp4"), &variable);
    let mut reader = FrameReader::open(&variable, at_rate(2.0)).unwrap();
    while reader.next_frame().unwrap().is_some() {}
    assert!(reader.report().gaps.is_empty(), "{:?}", reader.report());
}

#[test]
fn intact_videos_report_no_gaps() {
    let mut names = vec![
        "counter.mp4",
        "delayed.mp4",
        "delayed.ts",
        "rotated.mp4",
        "vfr.mp4",
        "h264.mkv",
        "h264.mov",
        "vp9.webm",
        "mpeg4.avi",
        "hevc.mp4",
        "av1.mkv",
    ];
    names.sort();
    for name in names {
        for keyframes_only in [false, true] {
            let options = DecodeOptions {
                sample_rate: SampleRate::All,
                size: Size::Exact {
                    width: 32,
                    height: 24,
                },
                keyframes_only,
                ..DecodeOptions::default()
            };
            let mut reader = FrameReader::open(&video(name), options).unwrap();
            while reader.next_frame().unwrap().is_some() {}
            let report = reader.report();
            assert!(report.gaps.is_empty(), "{name}: {report:?}");
            assert_eq!(report.damaged_packets, 0, "{name}");
        }
    }
    let mut reader = FrameReader::open(&common::scenes_sample(), at_rate(2.0)).unwrap();
    while reader.next_frame().unwrap().is_some() {}
    assert!(reader.report().gaps.is_empty(), "{:?}", reader.report());
}

#[test]
fn a_picture_too_narrow_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let tall = bad_inputs::video_of_size(dir.path(), 2, 16384);
    let error = video::probe(&tall).unwrap_err();
    assert!(
        matches!(error, VideoError::PictureTooLarge { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("2x16384"), "{message}");
    assert!(message.contains(&*tall.to_string_lossy()), "{message}");
    for size in [Size::Native, "256x256".parse().unwrap()] {
        let options = DecodeOptions {
            size,
            ..DecodeOptions::default()
        };
        assert!(matches!(
            FrameReader::open(&tall, options),
            Err(VideoError::PictureTooLarge { .. })
        ));
    }
}

#[test]
fn a_size_whose_crop_would_not_fit_in_memory_is_an_error() {
    // 8x256 is inside the limits, but covering 10000x10000 with it means scaling it to
    // 10000x320000 before the crop.
    let dir = tempfile::tempdir().unwrap();
    let narrow = bad_inputs::video_of_size(dir.path(), 8, 256);
    let options = DecodeOptions {
        size: Size::Exact {
            width: 10000,
            height: 10000,
        },
        mode: ResizeMode::Crop,
        ..DecodeOptions::default()
    };
    let mut reader = FrameReader::open(&narrow, options).unwrap();
    let error = reader.next_frame().unwrap_err();
    let message = error.to_string();
    assert!(message.contains("10000x320000"), "{message}");
    assert!(message.contains(&*narrow.to_string_lossy()), "{message}");
    // Fitting it inside the size instead works.
    let options = DecodeOptions {
        size: Size::Exact {
            width: 1000,
            height: 1000,
        },
        mode: ResizeMode::Pad,
        ..DecodeOptions::default()
    };
    let frame = FrameReader::open(&narrow, options)
        .unwrap()
        .next_frame()
        .unwrap()
        .unwrap();
    assert_eq!(frame.image.dimensions(), (1000, 1000));
}

#[test]
fn a_file_name_that_is_not_utf8_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = bad_inputs::non_utf8_path(dir.path(), "mp4");
    std::fs::copy(video("counter.mp4"), &path).unwrap();
    let info = video::probe(&path).unwrap();
    assert_eq!(info.path, path);
    assert_eq!(decode_all_at(&path, at_rate(1.0)).len(), 12);
    let mut seeker = FrameSeeker::open(&path, Size::Native, ResizeMode::Crop).unwrap();
    let frame = seeker.frame_at(MediaTime::from_seconds(2.0)).unwrap();
    assert_eq!(read_counter(&frame.image), 50);
}

#[test]
fn local_playlists_and_lists_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = video("counter.mp4");
    let playlist = bad_inputs::hls_playlist(dir.path(), "playlist.mp4", &target);
    let list = bad_inputs::concat_list(dir.path(), "list.mp4", &target);
    for (path, what) in [(&playlist, "HLS playlist"), (&list, "concat list")] {
        let error = video::probe(path).unwrap_err();
        assert!(
            matches!(error, VideoError::RefersToOtherFiles { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains(what), "{message}");
        assert!(message.contains(&*path.to_string_lossy()), "{message}");
        assert!(FrameReader::open(path, DecodeOptions::default()).is_err());
        assert!(FrameSeeker::open(path, Size::Native, ResizeMode::Crop).is_err());
    }
    // A name FFmpeg would read as a protocol is a file name like any other.
    let protocol_like = dir.path().join("concat:a.mp4|b.mp4");
    std::fs::copy(&target, &protocol_like).unwrap();
    assert_eq!(decode_all_at(&protocol_like, at_rate(1.0)).len(), 12);
    // Given as a URL, the playlist is FFmpeg's to follow.
    let url = format!("file://{}", playlist.display());
    let frames = decode_all_at(std::path::Path::new(&url), at_rate(1.0));
    assert_eq!(read_counter(&frames[3].image), 75);
}

fn decode_all_at(path: &std::path::Path, options: DecodeOptions) -> Vec<Frame> {
    FrameReader::open(path, options)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// Every frame `options` delivers from `name`: with frames skipped where sampling cannot use
/// them (the default) and with every frame decoded; and the first pass's report.
fn both_ways(name: &Path, options: DecodeOptions) -> (Vec<Frame>, Vec<Frame>, DecodeReport) {
    let mut reader = FrameReader::open(name, options).unwrap();
    let skipping: Vec<Frame> = reader.by_ref().collect::<Result<_, _>>().unwrap();
    let report = reader.report().clone();
    let every = DecodeOptions {
        decode_every_frame: true,
        ..options
    };
    let full: Vec<Frame> = FrameReader::open(name, every)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (skipping, full, report)
}

#[test]
fn skipping_frames_sampling_cannot_use_delivers_the_same_frames_as_decoding_all() {
    let mut names: Vec<PathBuf> = [
        "counter.mp4",
        "h264.mkv",
        "h264.mov",
        "hevc.mp4",
        "vp9.webm",
        "av1.mkv",
        "mpeg4.avi",
        "rotated.mp4",
        "vfr.mp4",
        "delayed.mp4",
        "delayed.ts",
    ]
    .iter()
    .map(|name| video(name))
    .collect();
    names.push(common::scenes_sample());
    let mut skipped_somewhere = false;
    for name in &names {
        for (rate, start, end) in [
            (2.0, 0.0, None),
            (0.5, 0.0, None),
            (7.0, 0.0, None),
            (2.0, 1.3, Some(4.1)),
        ] {
            let options = DecodeOptions {
                sample_rate: SampleRate::PerSecond(rate),
                start: MediaTime::from_seconds(start),
                end: end.map(MediaTime::from_seconds),
                ..DecodeOptions::default()
            };
            let (skipping, full, report) = both_ways(name, options);
            let label = format!("{} at {rate}/s from {start}", name.display());
            assert_eq!(skipping.len(), full.len(), "{label}");
            assert!(!full.is_empty(), "{label}");
            for (a, b) in skipping.iter().zip(&full) {
                assert_eq!(
                    (a.time, a.pts, a.number),
                    (b.time, b.pts, b.number),
                    "{label}"
                );
                assert!(a.image == b.image, "{label}: pixels differ at {:?}", a.time);
            }
            skipped_somewhere |= report.frames_skipped > 0;
        }
    }
    // The x264 files have disposable B-frames: some frames were not decoded at all.
    let (_, _, report) = both_ways(&video("h264.mkv"), at_rate(2.0));
    assert!(report.frames_skipped > 0, "{report:?}");
    assert!(skipped_somewhere);
}
