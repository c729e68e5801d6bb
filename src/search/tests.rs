//! Search over small planted libraries: ranges, ranking, captions, files, errors.

use super::*;
use crate::time::MediaTime;

const DIM: usize = 64;

/// A small deterministic generator (SplitMix64) for test vectors.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }

    fn unit(&mut self) -> Vec<f32> {
        let vector: Vec<f32> = (0..DIM).map(|_| self.next()).collect();
        unit(vector)
    }

    /// `centre` plus noise of relative size `amount`.
    fn near(&mut self, centre: &[f32], amount: f32) -> Vec<f32> {
        let noise = self.unit();
        unit(
            centre
                .iter()
                .zip(&noise)
                .map(|(c, n)| c + amount * n)
                .collect(),
        )
    }
}

fn unit(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    vector.iter_mut().for_each(|v| *v /= norm);
    vector
}

fn time(frame: usize) -> MediaTime {
    MediaTime::from_seconds(frame as f64 * 0.5)
}

/// A video of `frames` frames, each a fresh random picture, with one scene per 10 frames.
struct TestVideo {
    name: String,
    times: Vec<MediaTime>,
    embeddings: Vec<Vec<f32>>,
    scenes: Vec<SceneCaption>,
}

impl TestVideo {
    fn random(name: &str, frames: usize, rng: &mut Rng) -> Self {
        let scenes = (0..frames.div_ceil(10))
            .map(|scene| SceneCaption {
                start: time(scene * 10),
                end: time(((scene + 1) * 10).min(frames)),
                caption: format!("scene {scene} of {name}"),
            })
            .collect();
        TestVideo {
            name: name.to_string(),
            times: (0..frames).map(time).collect(),
            embeddings: (0..frames).map(|_| rng.unit()).collect(),
            scenes,
        }
    }

    fn input(&self, flat: &mut Vec<f32>) -> (String, MediaTime) {
        flat.clear();
        self.embeddings
            .iter()
            .for_each(|e| flat.extend_from_slice(e));
        (self.name.clone(), time(self.times.len()))
    }
}

fn builder_of(videos: &[TestVideo]) -> IndexBuilder {
    let mut builder = IndexBuilder::new();
    let mut flat = Vec::new();
    for video in videos {
        let (name, duration) = video.input(&mut flat);
        builder
            .add_video(VideoInput {
                video: &name,
                duration,
                times: &video.times,
                embeddings: &flat,
                scenes: &video.scenes,
            })
            .unwrap();
    }
    builder
}

fn index_of(videos: &[TestVideo]) -> SearchIndex {
    builder_of(videos).build().unwrap()
}

#[test]
fn the_planted_time_range_is_found_as_one_result() {
    let mut rng = Rng(1);
    let query = rng.unit();
    let mut videos: Vec<TestVideo> = (0..3)
        .map(|v| TestVideo::random(&format!("v{v}.mp4"), 60, &mut rng))
        .collect();
    // Frames 20..26 of the second video show what the query asks for.
    for frame in 20..26 {
        videos[1].embeddings[frame] = rng.near(&query, 0.3);
    }
    let index = index_of(&videos);
    let hits = index
        .search(&query, "", 3, &SearchConfig::default())
        .unwrap();
    let top = &hits[0];
    assert_eq!(top.video, "v1.mp4");
    assert_eq!((top.start, top.end), (time(20), time(26)));
    assert!(top.best >= time(20) && top.best < time(26));
    assert!(top.visual_score > 0.9);
    assert_eq!(top.caption.as_deref(), Some("scene 2 of v1.mp4"));
    assert!(hits[1..].iter().all(|hit| hit.score < hits[0].score - 0.3));
}

#[test]
fn a_range_keeps_the_frames_near_its_peak_within_its_scene() {
    // Frames 20..30 form one scene: similarities 0.90, 0.935, 0.95 (the peak at 22),
    // 0.93, 0.80, 0.945, then 0.10; the scene before holds 0.94 at frames 18 and 19.
    let mut rng = Rng(11);
    let query = rng.unit();
    let mut video = TestVideo::random("v.mp4", 40, &mut rng);
    for (frame, embedding) in video.embeddings.iter_mut().enumerate() {
        let similarity = match frame {
            18 | 19 => 0.94,
            20 => 0.90,
            21 => 0.935,
            22 => 0.95,
            23 => 0.93,
            24 => 0.80,
            25 => 0.945,
            _ => 0.10,
        };
        *embedding = at_similarity(&query, similarity, &mut rng);
    }
    let index = index_of(&[video]);
    let ranges = |config: &SearchConfig| -> Vec<(MediaTime, MediaTime)> {
        let hits = index.search(&query, "", 3, config).unwrap();
        hits.iter().map(|hit| (hit.start, hit.end)).collect()
    };
    // Within 0.03 of the peak: 21..=23, and 25 across the dip at 24 (1 s apart); the
    // frames of the scene before belong to a range of their own.
    assert_eq!(
        ranges(&SearchConfig::default()),
        [
            (time(21), time(26)),
            (time(18), time(20)),
            (time(20), time(21))
        ]
    );
    // Without bridging, the dip ends the range and 25 makes one of its own.
    let no_gap = SearchConfig {
        merge_gap_s: 0.5,
        ..SearchConfig::default()
    };
    assert_eq!(
        ranges(&no_gap),
        [
            (time(21), time(24)),
            (time(25), time(26)),
            (time(18), time(20))
        ]
    );
    // A wider drop takes in the whole run of similar frames of the scene.
    let wide = SearchConfig {
        range_drop: 0.2,
        ..SearchConfig::default()
    };
    assert_eq!(ranges(&wide)[0], (time(20), time(26)));
}

#[test]
fn the_first_results_do_not_depend_on_how_many_are_asked_for() {
    let mut rng = Rng(12);
    let mut subjects = Vec::new();
    let videos: Vec<TestVideo> = (0..4)
        .map(|v| {
            let mut video = TestVideo::random(&format!("v{v}.mp4"), 80, &mut rng);
            // A stretch that fades in and out of a subject of its own.
            let subject = rng.unit();
            for (offset, frame) in (10 * v + 5..10 * v + 25).enumerate() {
                let amount = 0.2 + 0.15 * (offset as f32 - 9.5).abs();
                video.embeddings[frame] = rng.near(&subject, amount);
            }
            subjects.push(subject);
            video
        })
        .collect();
    let index = index_of(&videos);
    let config = SearchConfig::default();
    for subject in subjects.iter().chain(subjects.iter()) {
        let query = rng.near(subject, 0.8);
        let all = index.search(&query, "scene 2", 20, &config).unwrap();
        assert_eq!(all.len(), 20);
        for top in [1, 2, 5, 10] {
            let first = index.search(&query, "scene 2", top, &config).unwrap();
            assert_eq!(first[..], all[..top], "top {top}");
        }
    }
}

#[test]
fn the_last_frame_range_ends_with_the_video() {
    let mut rng = Rng(3);
    let query = rng.unit();
    let mut videos = vec![TestVideo::random("v.mp4", 20, &mut rng)];
    videos[0].embeddings[19] = query.clone();
    let hits = index_of(&videos)
        .search(&query, "", 1, &SearchConfig::default())
        .unwrap();
    assert_eq!((hits[0].start, hits[0].end), (time(19), time(20)));
}

#[test]
fn a_caption_match_decides_between_equal_pictures() {
    let mut rng = Rng(4);
    let query = rng.unit();
    let mut first = TestVideo::random("first.mp4", 30, &mut rng);
    for frame in 10..20 {
        first.embeddings[frame] = rng.near(&query, 0.3);
    }
    let mut second = TestVideo {
        name: "second.mp4".into(),
        times: first.times.clone(),
        embeddings: first.embeddings.clone(),
        scenes: first.scenes.clone(),
    };
    first.scenes[1].caption = "A red car crosses a bridge at night.".into();
    second.scenes[1].caption = "A dog runs along the beach.".into();
    let index = index_of(&[first, second]);
    let config = SearchConfig::default();
    for (words, expected) in [("dogs on a beach", "second.mp4"), ("red car", "first.mp4")] {
        let hits = index.search(&query, words, 2, &config).unwrap();
        assert_eq!(hits[0].video, expected, "query {words:?}");
        assert_eq!(hits[0].visual_score, hits[1].visual_score);
        // The other caption shares only the word "a".
        assert!(hits[0].caption_score > hits[1].caption_score + 0.3);
        assert!((hits[0].score - hits[0].visual_score - 0.1 * hits[0].caption_score).abs() < 1e-6);
    }
    // Without the caption weight the tie stays a tie, broken by library order.
    let visual_only = SearchConfig {
        caption_weight: 0.0,
        ..config
    };
    let hits = index
        .search(&query, "dogs on a beach", 2, &visual_only)
        .unwrap();
    assert_eq!(hits[0].video, "first.mp4");
}

#[test]
fn a_caption_can_lift_a_scene_the_pictures_rank_lower() {
    // Similarities by construction: frames 50..60 score `best`, the lighthouse scene
    // (frames 30..40) `lighthouse`, every other frame 0.10.
    let library = |lighthouse: f32, best: f32| {
        let mut rng = Rng(5);
        let query = rng.unit();
        let mut video = TestVideo::random("v.mp4", 100, &mut rng);
        for (frame, embedding) in video.embeddings.iter_mut().enumerate() {
            let similarity = match frame {
                30..40 => lighthouse,
                50..60 => best,
                _ => 0.10,
            };
            *embedding = at_similarity(&query, similarity, &mut rng);
        }
        video.scenes[3].caption = "a lighthouse on a cliff".into();
        (index_of(&[video]), query)
    };
    let (index, query) = library(0.25, 0.30);
    let config = SearchConfig::default();
    let hits = index.search(&query, "lighthouse", 2, &config).unwrap();
    assert_eq!(hits[0].caption.as_deref(), Some("a lighthouse on a cliff"));
    assert_eq!((hits[0].start, hits[0].end), (time(30), time(40)));
    assert!((hits[0].visual_score - 0.25).abs() < 5e-3);
    assert!((hits[0].caption_score - 1.0).abs() < 1e-6);
    assert_eq!((hits[1].start, hits[1].end), (time(50), time(60)));
    // Without the caption weight, the pictures decide.
    let visual_only = SearchConfig {
        caption_weight: 0.0,
        ..config.clone()
    };
    let hits = index.search(&query, "lighthouse", 1, &visual_only).unwrap();
    assert_eq!((hits[0].start, hits[0].end), (time(50), time(60)));

    // Pictures that match worse than any other, far from the ten re-ranked candidates
    // (frames 50..60): a caption weighted heavily still brings the scene in...
    let (index, query) = library(-0.3, 0.5);
    let few = SearchConfig {
        caption_weight: 1.0,
        rerank_candidates: 10,
        ..config
    };
    let hits = index.search(&query, "lighthouse", 1, &few).unwrap();
    assert_eq!((hits[0].start, hits[0].end), (time(30), time(40)));
    assert!((hits[0].score - (-0.3 + 1.0)).abs() < 5e-3);
    // ... unless captions may not bring in scenes.
    let no_caption_scenes = SearchConfig {
        caption_scenes: 0,
        ..few
    };
    let hits = index
        .search(&query, "lighthouse", 1, &no_caption_scenes)
        .unwrap();
    assert_eq!((hits[0].start, hits[0].end), (time(50), time(60)));
}

#[test]
fn json_results_give_seconds_and_timecodes() {
    let hit = SearchHit {
        video: "clip.mp4".into(),
        start: MediaTime::from_seconds(11.0),
        end: MediaTime::from_seconds(22.0004),
        best: MediaTime::from_seconds(18.5),
        score: 0.3,
        visual_score: 0.25,
        caption_score: 0.5,
        caption: Some("a beach".into()),
    };
    let json = serde_json::to_value(&hit).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "video": "clip.mp4",
            "start_s": 11.0, "end_s": 22.0, "start": "00:00:11.000", "end": "00:00:22.000",
            "best_s": 18.5, "best": "00:00:18.500",
            "score": 0.3f32, "visual_score": 0.25f32, "caption_score": 0.5f32,
            "caption": "a beach"
        })
    );
    let back: SearchHit = serde_json::from_value(json).unwrap();
    assert_eq!(back.end, MediaTime::from_seconds(22.0));
    assert_eq!(back.best, hit.best);
}

/// A unit vector with exactly `similarity` to the unit vector `query`.
fn at_similarity(query: &[f32], similarity: f32, rng: &mut Rng) -> Vec<f32> {
    let random = rng.unit();
    let along: f32 = random.iter().zip(query).map(|(r, q)| r * q).sum();
    let orthogonal = unit(
        random
            .iter()
            .zip(query)
            .map(|(r, q)| r - along * q)
            .collect(),
    );
    let rest = (1.0 - similarity * similarity).sqrt();
    query
        .iter()
        .zip(&orthogonal)
        .map(|(q, o)| similarity * q + rest * o)
        .collect()
}

#[test]
fn an_index_file_round_trips() {
    let mut rng = Rng(6);
    let videos: Vec<TestVideo> = (0..4)
        .map(|v| TestVideo::random(&format!("v{v}.mp4"), 45, &mut rng))
        .collect();
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("library.index");
    builder_of(&videos).write(&path).unwrap();
    let names: Vec<String> = std::fs::read_dir(directory.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["library.index"]);

    let opened = SearchIndex::open(&path).unwrap();
    let in_memory = index_of(&videos);
    assert_eq!(opened.summary(), in_memory.summary());
    assert_eq!(
        opened.summary(),
        IndexSummary {
            videos: 4,
            frames: 180,
            scenes: 20
        }
    );
    assert!(opened.videos().eq(in_memory.videos()));
    assert_eq!(
        opened.total_bytes(),
        std::fs::metadata(&path).unwrap().len() as usize
    );
    let config = SearchConfig::default();
    for _ in 0..5 {
        let query = rng.unit();
        assert_eq!(
            opened.search(&query, "scene 2", 5, &config).unwrap(),
            in_memory.search(&query, "scene 2", 5, &config).unwrap()
        );
    }
}

#[test]
fn an_index_can_be_extended_with_new_videos() {
    let mut rng = Rng(7);
    let query = rng.unit();
    let mut old = TestVideo::random("old.mp4", 30, &mut rng);
    old.embeddings[5] = query.clone();
    let mut new = TestVideo::random("new.mp4", 30, &mut rng);
    new.embeddings[25] = rng.near(&query, 0.1);
    let first = index_of(&[old]);
    let mut builder = IndexBuilder::new();
    builder.add_index(&first).unwrap();
    let mut flat = Vec::new();
    let (name, duration) = new.input(&mut flat);
    builder
        .add_video(VideoInput {
            video: &name,
            duration,
            times: &new.times,
            embeddings: &flat,
            scenes: &new.scenes,
        })
        .unwrap();
    let extended = builder.build().unwrap();
    assert_eq!(extended.summary().videos, 2);
    let hits = extended
        .search(&query, "", 2, &SearchConfig::default())
        .unwrap();
    assert_eq!((hits[0].video.as_str(), hits[0].best), ("old.mp4", time(5)));
    assert_eq!(
        (hits[1].video.as_str(), hits[1].best),
        ("new.mp4", time(25))
    );
}

#[test]
fn with_every_frame_a_candidate_the_nearest_frames_are_exact() {
    let mut rng = Rng(8);
    let videos: Vec<TestVideo> = (0..3)
        .map(|v| TestVideo::random(&format!("v{v}.mp4"), 100, &mut rng))
        .collect();
    let index = index_of(&videos);
    let all: Vec<&Vec<f32>> = videos.iter().flat_map(|v| &v.embeddings).collect();
    for _ in 0..10 {
        let query = rng.unit();
        let found = index.nearest_frames(&query, 10, 300).unwrap();
        let mut exact: Vec<(f32, usize)> = all
            .iter()
            .enumerate()
            .map(|(row, e)| (e.iter().zip(&query).map(|(a, b)| a * b).sum(), row))
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (hit, (similarity, _)) in found.iter().zip(&exact) {
            // 16-bit vectors: similarities within a few thousandths of the exact ones.
            assert!((hit.similarity - similarity).abs() < 4e-3);
        }
        let rows: Vec<usize> = found.iter().map(|hit| hit.frame).collect();
        assert_eq!(rows[0], exact[0].1);
        assert_eq!(found[0].video, exact[0].1 / 100);
        assert_eq!(found[0].time, time(exact[0].1 % 100));
    }
}

#[test]
fn broken_files_are_refused_with_the_reason() {
    let mut rng = Rng(9);
    let videos = vec![TestVideo::random("v.mp4", 30, &mut rng)];
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("library.index");
    builder_of(&videos).write(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let truncated = directory.path().join("truncated.index");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let error = SearchIndex::open(&truncated).unwrap_err();
    assert!(matches!(error, SearchError::BadIndex { .. }), "{error}");
    assert!(error.to_string().contains("truncated.index"));

    let other = directory.path().join("other.index");
    std::fs::write(&other, b"{\"schema\": \"keyscribe.analysis/1\"}").unwrap();
    assert!(SearchIndex::open(&other)
        .unwrap_err()
        .to_string()
        .contains("bad magic"));
    assert!(matches!(
        SearchIndex::open(&directory.path().join("missing.index")),
        Err(SearchError::Io { .. })
    ));
}

#[test]
fn inconsistent_inputs_and_queries_are_errors() {
    let mut builder = IndexBuilder::new();
    let times = [time(0), time(1)];
    let scenes = [];
    let video = |embeddings: &'static [f32], times: &'static [MediaTime]| VideoInput {
        video: "v.mp4",
        duration: time(2),
        times,
        embeddings,
        scenes: &scenes,
    };
    static TWO: [MediaTime; 2] = [MediaTime::ZERO, MediaTime::ZERO];
    assert!(builder.add_video(video(&[1.0, 0.0, 0.0], &TWO)).is_err());
    assert!(builder
        .add_video(video(&[1.0, 0.0, 0.0, 1.0], &TWO))
        .is_err());
    let mut good = IndexBuilder::new();
    good.add_video(VideoInput {
        video: "v.mp4",
        duration: time(2),
        times: &times,
        embeddings: &[1.0, 0.0, 0.0, 1.0],
        scenes: &scenes,
    })
    .unwrap();
    let error = good
        .add_video(VideoInput {
            video: "w.mp4",
            duration: time(2),
            times: &times,
            embeddings: &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            scenes: &scenes,
        })
        .unwrap_err();
    assert!(error.to_string().starts_with("video `w.mp4`: "), "{error}");
    assert!(good
        .add_video(VideoInput {
            video: "zero.mp4",
            duration: time(2),
            times: &times,
            embeddings: &[0.0, 0.0, 0.0, 1.0],
            scenes: &scenes,
        })
        .is_err());
    let index = good.build().unwrap();
    let config = SearchConfig::default();
    assert!(matches!(
        index.search(&[1.0, 0.0, 0.0], "", 1, &config),
        Err(SearchError::QueryDimension {
            expected: 2,
            found: 3
        })
    ));
    assert!(matches!(
        index.search(&[0.0, 0.0], "", 1, &config),
        Err(SearchError::BadQuery)
    ));
    let bad = SearchConfig {
        rerank_candidates: 0,
        ..config
    };
    assert!(matches!(
        index.search(&[1.0, 0.0], "", 1, &bad),
        Err(SearchError::Config(SearchConfigError {
            field: "rerank_candidates",
            ..
        }))
    ));
}

#[test]
fn an_empty_library_answers_with_nothing() {
    let index = IndexBuilder::new().build().unwrap();
    assert_eq!(index.frames(), 0);
    assert!(index
        .search(&[1.0, 0.0], "anything", 5, &SearchConfig::default())
        .unwrap()
        .is_empty());
}

#[test]
fn config_reads_from_a_pipeline_table() {
    let config: SearchConfig = toml::from_str("caption_weight = 0.2").unwrap();
    assert_eq!(config.caption_weight, 0.2);
    assert_eq!(
        config.rerank_candidates,
        SearchConfig::default().rerank_candidates
    );
    assert!(toml::from_str::<SearchConfig>("caption_wieght = 0.2").is_err());
    let written = toml::to_string(&config).unwrap();
    assert_eq!(toml::from_str::<SearchConfig>(&written).unwrap(), config);
    let negative = SearchConfig {
        caption_weight: -1.0,
        ..SearchConfig::default()
    };
    assert_eq!(negative.validate().unwrap_err().field, "caption_weight");
}
