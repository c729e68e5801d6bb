//! Search over synthetic libraries shaped like real ones (see `common/synthetic_library.rs`):
//! the index against exact search, an index written through a spill directory, and results
//! that do not depend on how many are asked for.

#[path = "common/synthetic_library.rs"]
mod synthetic_library;

use keyscribe::search::{IndexBuilder, SearchConfig, SearchIndex, VideoInput};
use synthetic_library::{exact_top, Library, Video};

const DIM: usize = 512;

/// Adds `videos` videos of `frames` frames each to `builder`, returning them.
fn fill(builder: &mut IndexBuilder, library: &Library, videos: u64, frames: usize) -> Vec<Video> {
    (0..videos)
        .map(|index| {
            let video = library.video(index, frames);
            builder
                .add_video(VideoInput {
                    video: &video.name,
                    duration: video.duration,
                    times: &video.times,
                    embeddings: &video.embeddings,
                    scenes: &video.scenes,
                })
                .unwrap();
            video
        })
        .collect()
}

/// Mean recall@10 of `nearest_frames` against exact `f32` search over `queries` queries.
fn recall_at_10(
    index: &SearchIndex,
    library: &Library,
    videos: &[Video],
    queries: u64,
    candidates: usize,
) -> f64 {
    let mut found = 0;
    for number in 0..queries {
        let query = library.query(number);
        let mut exact = Vec::new();
        let mut first_row = 0;
        for video in videos {
            exact_top(
                &query.embedding,
                &video.embeddings,
                first_row,
                10,
                &mut exact,
            );
            first_row += video.times.len();
        }
        let approximate = index
            .nearest_frames(&query.embedding, 10, candidates)
            .unwrap();
        found += approximate
            .iter()
            .filter(|frame| exact.iter().any(|(_, row)| *row == frame.frame))
            .count();
    }
    found as f64 / (10 * queries) as f64
}

#[test]
fn the_index_finds_the_exact_nearest_frames() {
    // Six 30-minute videos: 21,600 frames.
    let library = Library::new(DIM, 400, 3);
    let mut builder = IndexBuilder::new();
    let videos = fill(&mut builder, &library, 6, 3600);
    let index = builder.build().unwrap();

    // Re-ranking every frame from the 16-bit vectors: their similarities are off by about
    // 1e-5, far below the gaps between neighbouring scores, so the top 10 is the exact one.
    let exhaustive = recall_at_10(&index, &library, &videos, 40, index.frames());
    assert!(exhaustive >= 0.99, "recall {exhaustive}");

    // Re-ranking 1,024 candidates (4.7 % of the library) chosen by the sign codes. The sign
    // estimate's error (checked against theory in the codes' unit tests) is about the spread
    // of scores among a scene's near-identical frames, so which of those reach the top 10
    // is partly chance; the benchmark measures 0.92–0.96 at this ratio. The bound leaves
    // three standard errors of 400 trials (0.04) below the 0.925 measured here; an index
    // that skipped centring on the library mean would score 0.86.
    let scanned = recall_at_10(&index, &library, &videos, 40, 1024);
    assert!(scanned >= 0.88, "recall {scanned}");
}

#[test]
fn a_spilled_index_file_searches_like_one_built_in_memory() {
    let library = Library::new(DIM, 200, 5);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("library.index");
    let mut spilled = IndexBuilder::spilling_to(directory.path()).unwrap();
    let mut in_memory = IndexBuilder::new();
    let videos = fill(&mut spilled, &library, 3, 1000);
    fill(&mut in_memory, &library, 3, 1000);
    let shown = |word: &str| {
        videos
            .iter()
            .flat_map(|video| &video.scenes)
            .any(|scene| scene.caption.split(' ').any(|w| w == word))
    };
    spilled.write(&path).unwrap();
    // The spill file is gone with the builder; only the index remains.
    let names: Vec<_> = std::fs::read_dir(directory.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["library.index"]);

    let opened = SearchIndex::open(&path).unwrap();
    let built = in_memory.build().unwrap();
    assert_eq!(opened.summary(), built.summary());
    let config = SearchConfig::default();
    let mut checked = 0;
    for number in 0..40 {
        let query = library.query(number);
        let from_file = opened
            .search(&query.embedding, &query.text, 5, &config)
            .unwrap();
        assert_eq!(
            from_file,
            built
                .search(&query.embedding, &query.text, 5, &config)
                .unwrap()
        );
        // When the library shows the asked-for concept, the best result is one of its
        // scenes, and its caption says so.
        if shown(&query.text) {
            let caption = from_file[0].caption.as_deref().unwrap_or("");
            assert!(
                caption.split(' ').any(|word| word == query.text),
                "{caption:?} for {:?}",
                query.text
            );
            checked += 1;
        }
    }
    assert!(checked >= 5);
}

#[test]
fn a_result_range_does_not_depend_on_how_many_results_are_asked_for() {
    let library = Library::new(DIM, 200, 7);
    let mut builder = IndexBuilder::new();
    fill(&mut builder, &library, 4, 1200);
    let index = builder.build().unwrap();
    let config = SearchConfig::default();
    for number in 0..40 {
        let query = library.query(number);
        let search = |top: usize| {
            index
                .search(&query.embedding, &query.text, top, &config)
                .unwrap()
        };
        let twenty = search(20);
        assert_eq!(twenty.len(), 20);
        for top in [1, 5] {
            assert_eq!(search(top)[..], twenty[..top], "query {number}, top {top}");
        }
    }
}
