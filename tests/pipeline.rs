//! The main job end to end with the tiny fixture models: `keyscribe run`, `keyframes`,
//! `summarize`, `search` and `index` on the committed sample, the document they write, the
//! cache, and the errors for bad models, pipelines and videos.

mod common;

use common::{scenes_sample as sample, tiny_captioner as captioner, tiny_embedder as embedder};

use std::path::{Path, PathBuf};
use std::process::Output;

use std::os::unix::fs::PermissionsExt;

use keyscribe::analysis::Analysis;

/// Runs keyscribe in `dir` with a cache of its own.
fn keyscribe(dir: &Path, args: &[&str]) -> Output {
    common::keyscribe()
        .args(args)
        .current_dir(dir)
        .env("KEYSCRIBE_CACHE_DIR", dir.join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.join("hf-home"))
        .output()
        .expect("keyscribe runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Every property a document of the sample must have, captioned or not.
fn check_document(analysis: &Analysis, document: &Path, captioned: bool) {
    assert_eq!(analysis.schema, "keyscribe.analysis/1");
    assert!(analysis.video.path.ends_with("scenes.mp4"));
    assert_eq!(analysis.video.sha256.len(), 64);
    assert!((analysis.video.duration_s - 30.0).abs() < 0.1);
    assert_eq!((analysis.video.width, analysis.video.height), (640, 360));
    assert!(!analysis.keyframes.is_empty());
    assert_eq!(analysis.models.captioner.is_some(), captioned);
    let mut previous_time = -1.0;
    let mut scene_start = 0.0;
    for (index, keyframe) in analysis.keyframes.iter().enumerate() {
        assert_eq!(keyframe.index, index);
        assert!(keyframe.time_s > previous_time, "keyframe times increase");
        assert!((0.0..analysis.video.duration_s).contains(&keyframe.time_s));
        assert!(
            keyframe.scene.start_s <= keyframe.time_s && keyframe.time_s < keyframe.scene.end_s,
            "keyframe {index} lies in its scene"
        );
        assert!(
            (keyframe.scene.start_s - scene_start).abs() < 1e-9,
            "scenes are contiguous"
        );
        assert_eq!(
            keyframe.timecode,
            keyscribe::time::MediaTime::from_seconds(keyframe.time_s).timecode()
        );
        assert!(keyframe.change.is_finite());
        match &keyframe.caption {
            Some(caption) => assert!(captioned && !caption.trim().is_empty()),
            None => assert!(!captioned, "one caption per keyframe"),
        }
        previous_time = keyframe.time_s;
        scene_start = keyframe.scene.end_s;
    }
    assert!((scene_start - analysis.video.duration_s).abs() < 0.1);
    let timings = &analysis.timings;
    for value in [timings.decode_s, timings.embed_s, timings.total_s] {
        assert!(value > 0.0 && value.is_finite());
    }
    let frames = analysis.load_frames(document).unwrap();
    let record = analysis.embeddings.as_ref().unwrap();
    assert_eq!(frames.len(), record.frames);
    assert_eq!(frames.dim, record.dim);
    // 2 samples per second over 30 s.
    assert!((59..=61).contains(&frames.len()), "{} frames", frames.len());
    for row in frames.embeddings.chunks(frames.dim) {
        let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3);
    }
}

/// The document without what legitimately differs between runs.
fn comparable(analysis: &Analysis) -> serde_json::Value {
    let mut value = serde_json::to_value(analysis).unwrap();
    value["timings"] = serde_json::Value::Null;
    value["embeddings"]["path"] = serde_json::Value::Null;
    value
}

#[test]
fn keyframes_writes_a_complete_document_and_the_same_one_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut documents = Vec::new();
    for name in ["first.json", "second.json"] {
        let output = keyscribe(
            dir.path(),
            &[
                "keyframes",
                path_arg(&sample()),
                "--embedder",
                path_arg(&embedder()),
                "-o",
                name,
                "--quiet",
            ],
        );
        assert_ok(&output);
        let document = dir.path().join(name);
        let analysis = Analysis::load(&document).unwrap();
        check_document(&analysis, &document, false);
        assert_eq!(analysis.pipeline["caption"]["enabled"], false);
        documents.push(analysis);
    }
    assert_eq!(comparable(&documents[0]), comparable(&documents[1]));
    let sidecar = |index: usize, name: &str| {
        let path = documents[index]
            .embeddings_path(&dir.path().join(name))
            .unwrap();
        std::fs::read(path).unwrap()
    };
    assert_eq!(sidecar(0, "first.json"), sidecar(1, "second.json"));
    // The embedder is recorded with the SHA-256 of its weights; a local directory has no
    // Hub revision.
    let embedder_record = &documents[0].models.embedder;
    assert_eq!(
        embedder_record.weights_sha256.as_deref(),
        Some(
            keyscribe::cache::file_sha256(&embedder().join("open_clip_model.safetensors"))
                .unwrap()
                .as_str()
        )
    );
    assert_eq!(embedder_record.revision, None);
    assert_eq!(
        Path::new(&embedder_record.source),
        std::fs::canonicalize(embedder()).unwrap()
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The process's umask, as Linux reports it.
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Umask:"))
        .unwrap();
    u32::from_str_radix(line.trim(), 8).unwrap()
}

#[test]
fn outputs_keep_their_permissions_and_links() {
    let dir = tempfile::tempdir().unwrap();
    let keyframes = |output: &str, fps: &str| {
        let pipeline = dir.path().join(format!("fps-{fps}.toml"));
        std::fs::write(&pipeline, format!("[decode]\nsample_fps = {fps}\n")).unwrap();
        let output = keyscribe(
            dir.path(),
            &[
                "keyframes",
                path_arg(&sample()),
                "--embedder",
                path_arg(&embedder()),
                "--pipeline",
                path_arg(&pipeline),
                "-o",
                output,
                "--quiet",
            ],
        );
        assert_ok(&output);
    };
    // New files: the document and its sidecar get the same usual mode.
    keyframes("out.json", "2");
    let document = dir.path().join("out.json");
    let first = Analysis::load(&document).unwrap();
    let first_sidecar = first.embeddings_path(&document).unwrap();
    assert_eq!(mode(&document), 0o666 & !umask());
    assert_eq!(mode(&first_sidecar), mode(&document));

    // Replacing them keeps the mode the user gave the document, for both.
    std::fs::set_permissions(&document, std::fs::Permissions::from_mode(0o640)).unwrap();
    keyframes("out.json", "1");
    let second = Analysis::load(&document).unwrap();
    let second_sidecar = second.embeddings_path(&document).unwrap();
    assert_ne!(first_sidecar, second_sidecar);
    assert!(!first_sidecar.exists(), "the replaced sidecar is removed");
    assert_eq!(mode(&document), 0o640);
    assert_eq!(mode(&second_sidecar), 0o640);
    assert!(second.load_frames(&document).unwrap().len() < 40);

    // A document path that is a link: the file it points to is replaced, the link stays.
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::fs::copy(&document, dir.path().join("real/target.json")).unwrap();
    std::os::unix::fs::symlink("real/target.json", dir.path().join("link.json")).unwrap();
    keyframes("link.json", "2");
    let link = dir.path().join("link.json");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let through_link = Analysis::load(&link).unwrap();
    assert!(through_link.load_frames(&link).unwrap().len() > 50);
    assert_eq!(
        Analysis::load(&dir.path().join("real/target.json")).unwrap(),
        through_link
    );
}

#[test]
fn run_captions_every_keyframe_and_writes_subtitles_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let mut documents = Vec::new();
    for name in ["a", "b"] {
        let output = keyscribe(
            dir.path(),
            &[
                "run",
                path_arg(&sample()),
                "--embedder",
                path_arg(&embedder()),
                "--captioner",
                path_arg(&captioner()),
                "-o",
                &format!("{name}.json"),
                "--srt",
                &format!("{name}.srt"),
                "--vtt",
                &format!("{name}.vtt"),
                "--html",
                &format!("{name}.html"),
            ],
        );
        assert_ok(&output);
        let document = dir.path().join(format!("{name}.json"));
        let analysis = Analysis::load(&document).unwrap();
        check_document(&analysis, &document, true);
        // Each caption was printed on stdout as it was made.
        let stdout = text(&output.stdout);
        for keyframe in &analysis.keyframes {
            let caption = keyscribe::output::one_line(keyframe.caption.as_ref().unwrap());
            assert!(stdout.contains(&caption), "{caption} in {stdout}");
        }
        let srt = std::fs::read_to_string(dir.path().join(format!("{name}.srt"))).unwrap();
        assert_eq!(
            srt.matches(" --> ").count(),
            analysis.keyframes.len(),
            "one cue per keyframe"
        );
        let html = std::fs::read_to_string(dir.path().join(format!("{name}.html"))).unwrap();
        assert_eq!(
            html.matches("<img").count(),
            analysis.keyframes.len(),
            "one thumbnail per keyframe"
        );
        documents.push(analysis);
    }
    assert_eq!(comparable(&documents[0]), comparable(&documents[1]));
}

#[test]
fn run_json_prints_only_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let output = keyscribe(
        dir.path(),
        &[
            "keyframes",
            path_arg(&sample()),
            "--embedder",
            path_arg(&embedder()),
            "--json",
        ],
    );
    assert_ok(&output);
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("scenes.analysis.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(printed, written);
}

/// Files in `dir` (not descending), for "nothing partial left behind".
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn missing_model_files_are_named_with_how_to_get_them() {
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("partial-s0");
    std::fs::create_dir(&partial).unwrap();
    for file in ["open_clip_config.json", "tokenizer.json"] {
        std::fs::copy(embedder().join(file), partial.join(file)).unwrap();
    }
    let output = keyscribe(
        dir.path(),
        &[
            "keyframes",
            path_arg(&sample()),
            "--embedder",
            path_arg(&partial),
            "-o",
            "out.json",
        ],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("open_clip_model.safetensors")
            && stderr.contains("timm/MobileCLIP2-S0-OpenCLIP"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(files_in(dir.path()), Vec::<String>::new());

    // No directory, no cache, no network: the error gives the fetch command and the flag.
    let output = keyscribe(
        dir.path(),
        &["keyframes", path_arg(&sample()), "-o", "out.json"],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("keyscribe models fetch MobileCLIP2-S0") && stderr.contains("--embedder"),
        "{stderr}"
    );
    assert_eq!(files_in(dir.path()), Vec::<String>::new());
}

#[test]
fn a_damaged_model_is_one_line_that_says_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let damaged = dir.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    for file in ["open_clip_config.json", "tokenizer.json"] {
        std::fs::copy(embedder().join(file), damaged.join(file)).unwrap();
    }
    let mut tensors = candle_core::safetensors::load(
        embedder().join("open_clip_model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    tensors.remove("text.text_projection").unwrap();
    candle_core::safetensors::save(&tensors, damaged.join("open_clip_model.safetensors")).unwrap();
    let output = keyscribe(
        dir.path(),
        &[
            "keyframes",
            path_arg(&sample()),
            "--embedder",
            path_arg(&damaged),
            "-o",
            "out.json",
        ],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        stderr
            .matches("tensor `text.text_projection` is missing")
            .count(),
        1,
        "{stderr}"
    );
}

#[test]
fn a_pipeline_typo_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mine.toml"),
        "[select]\nchange_treshold = 0.3\n",
    )
    .unwrap();
    let output = keyscribe(
        dir.path(),
        &[
            "keyframes",
            path_arg(&sample()),
            "--pipeline",
            "mine.toml",
            "--embedder",
            path_arg(&embedder()),
            "-o",
            "out.json",
        ],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("mine.toml") && stderr.contains("change_treshold"),
        "{stderr}"
    );
    assert_eq!(files_in(dir.path()), vec!["mine.toml".to_string()]);
}

#[test]
fn an_unreadable_video_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.mp4"), "not a video\n").unwrap();
    let output = keyscribe(
        dir.path(),
        &[
            "keyframes",
            "notes.mp4",
            "--embedder",
            path_arg(&embedder()),
            "-o",
            "out.json",
        ],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("notes.mp4") && stderr.contains("not a video"),
        "{stderr}"
    );
    assert_eq!(files_in(dir.path()), vec!["notes.mp4".to_string()]);
}

#[test]
fn search_reuses_the_cached_analysis_without_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("clip.mp4");
    std::fs::copy(sample(), &video).unwrap();
    let search = || {
        keyscribe(
            dir.path(),
            &[
                "search",
                "clip.mp4",
                "colour bars",
                "--pipeline",
                "keyframes-only.toml",
                "--embedder",
                path_arg(&embedder()),
                "--json",
            ],
        )
    };
    std::fs::write(
        dir.path().join("keyframes-only.toml"),
        "[caption]\nenabled = false\n",
    )
    .unwrap();
    let first = search();
    assert_ok(&first);
    assert!(text(&first.stderr).contains("analysing clip.mp4"));
    let cached: Vec<PathBuf> = walk(&dir.path().join("cache"));
    let document = cached
        .iter()
        .find(|path| path.ends_with("analysis.json"))
        .expect("the analysis is cached")
        .clone();
    let stamp = std::fs::metadata(&document).unwrap().modified().unwrap();

    let second = search();
    assert_ok(&second);
    let stderr = text(&second.stderr);
    assert!(
        stderr.contains("using the cached analysis") && !stderr.contains("analysing"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::metadata(&document).unwrap().modified().unwrap(),
        stamp
    );
    assert_eq!(walk(&dir.path().join("cache")), cached);
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let second: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(first, second);
    assert!(!first.as_array().unwrap().is_empty());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found.sort();
    found
}

#[test]
fn index_builds_a_searchable_library_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("videos");
    std::fs::create_dir_all(library.join("more")).unwrap();
    std::fs::copy(sample(), library.join("one.mp4")).unwrap();
    std::fs::copy(sample(), library.join("more/two.mp4")).unwrap();
    std::fs::write(dir.path().join("p.toml"), "[caption]\nenabled = false\n").unwrap();
    let index = || {
        keyscribe(
            dir.path(),
            &[
                "index",
                "videos",
                "--pipeline",
                "p.toml",
                "--embedder",
                path_arg(&embedder()),
                "--quiet",
            ],
        )
    };
    let first = index();
    assert_ok(&first);
    assert!(
        text(&first.stderr).contains("2 analysed, 0 already analysed"),
        "{}",
        text(&first.stderr)
    );
    let second = index();
    assert_ok(&second);
    assert!(
        text(&second.stderr).contains("0 analysed, 2 already analysed"),
        "{}",
        text(&second.stderr)
    );
    let output = keyscribe(
        dir.path(),
        &[
            "search",
            "videos",
            "colour bars",
            "--pipeline",
            "p.toml",
            "--embedder",
            path_arg(&embedder()),
            "--top",
            "3",
            "--json",
        ],
    );
    assert_ok(&output);
    let hits: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(hits.len(), 3);
    for hit in &hits {
        let video = hit["video"].as_str().unwrap();
        assert!(video.ends_with("one.mp4") || video.ends_with("two.mp4"));
        assert!(hit["start_s"].as_f64().unwrap() < hit["end_s"].as_f64().unwrap());
    }
}

#[test]
fn models_verify_checks_every_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let output = keyscribe(
        dir.path(),
        &["models", "verify", "--embedder", path_arg(&embedder())],
    );
    assert_ok(&output);
    assert!(text(&output.stdout).contains("ok: MobileCLIP2-S0 (reduced), 32-d embeddings"));

    // A truncated weights file is named, and the command fails.
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for file in ["open_clip_config.json", "tokenizer.json"] {
        std::fs::copy(embedder().join(file), broken.join(file)).unwrap();
    }
    let weights = std::fs::read(embedder().join("open_clip_model.safetensors")).unwrap();
    std::fs::write(
        broken.join("open_clip_model.safetensors"),
        &weights[..weights.len() / 2],
    )
    .unwrap();
    let output = keyscribe(
        dir.path(),
        &["models", "verify", "--embedder", path_arg(&broken)],
    );
    assert!(!output.status.success());
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("FAILED") && stdout.contains("open_clip_model.safetensors"),
        "{stdout}"
    );

    // Weights with a NaN load with the right shapes; verify names the damaged tensor.
    let damaged = dir.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    for file in ["open_clip_config.json", "tokenizer.json"] {
        std::fs::copy(embedder().join(file), damaged.join(file)).unwrap();
    }
    let mut tensors = candle_core::safetensors::load(
        embedder().join("open_clip_model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let name = "text.token_embedding.weight";
    let original = tensors.remove(name).unwrap();
    let nan = (original.zeros_like().unwrap() + f64::NAN).unwrap();
    tensors.insert(name.to_string(), nan);
    candle_core::safetensors::save(&tensors, damaged.join("open_clip_model.safetensors")).unwrap();
    let output = keyscribe(
        dir.path(),
        &["models", "verify", "--embedder", path_arg(&damaged)],
    );
    assert!(!output.status.success());
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("FAILED") && stdout.contains(name) && stdout.contains("NaN or infinite"),
        "{stdout}"
    );

    // A named model that is not downloaded is an error with the fetch command.
    let output = keyscribe(dir.path(), &["models", "verify", "MobileCLIP2-S2"]);
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("keyscribe models fetch MobileCLIP2-S2"));
}

#[test]
fn summarize_stores_a_summary_and_reuses_the_cached_analysis() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("clip.mp4");
    std::fs::copy(sample(), &video).unwrap();
    let summarize = || {
        keyscribe(
            dir.path(),
            &[
                "summarize",
                "clip.mp4",
                "--embedder",
                path_arg(&embedder()),
                "--captioner",
                path_arg(&captioner()),
                "--json",
            ],
        )
    };
    let first = summarize();
    assert_ok(&first);
    assert!(text(&first.stderr).contains("analysing clip.mp4"));
    let analysis: Analysis = serde_json::from_slice(&first.stdout).unwrap();
    let document = walk(&dir.path().join("cache"))
        .into_iter()
        .find(|path| path.ends_with("analysis.json"))
        .expect("the analysis is cached");
    let stored = Analysis::load(&document).unwrap();
    assert_eq!(stored.summary, analysis.summary);
    assert!(stored
        .summary
        .as_deref()
        .is_some_and(|s| !s.trim().is_empty()));
    assert!(!stored.chapters.is_empty());
    let starts: Vec<f64> = stored.chapters.iter().map(|c| c.start_s).collect();
    assert_eq!(starts[0], 0.0, "the first chapter opens the video");
    assert!(
        starts.windows(2).all(|pair| pair[0] < pair[1]),
        "{starts:?}"
    );
    assert!(starts.iter().all(|&start| start < stored.video.duration_s));
    assert!(stored.chapters.iter().all(|c| !c.title.trim().is_empty()));

    let sidecar = walk(&dir.path().join("cache"))
        .into_iter()
        .find(|path| path.to_string_lossy().ends_with(".safetensors"))
        .expect("the embeddings are cached");
    let stamp = std::fs::metadata(&sidecar).unwrap().modified().unwrap();
    let second = summarize();
    assert_ok(&second);
    let stderr = text(&second.stderr);
    assert!(
        stderr.contains("using the cached analysis") && !stderr.contains("analysing"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::metadata(&sidecar).unwrap().modified().unwrap(),
        stamp
    );
    let again: Analysis = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(again.summary, analysis.summary, "greedy summaries repeat");
}
