//! The command line as people use it: settings without TOML (`--set`, named flags),
//! `pipelines`, `cache`, `-` for stdin and stdout, captions on stdout, several images for
//! `describe`, `embed`'s model fallback and `frames --codec-keyframes`. Run against the
//! committed sample with the tiny fixture models.

mod common;

use std::path::{Path, PathBuf};

use common::{arg, assert_ok, keyscribe_in, root, text, tiny_captioner, tiny_embedder};
use keyscribe::analysis::Analysis;

fn sample() -> PathBuf {
    common::scenes_sample()
}

/// Files directly in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `keyscribe keyframes SAMPLE --embedder TINY -q` with `extra` arguments.
fn keyframes(dir: &Path, extra: &[&str]) -> std::process::Output {
    let sample = sample();
    let embedder = tiny_embedder();
    let mut args = vec![
        "keyframes",
        arg(&sample),
        "--embedder",
        arg(&embedder),
        "-q",
    ];
    args.extend_from_slice(extra);
    keyscribe_in(dir, &args, None)
}

#[test]
fn set_and_named_flags_change_the_recorded_settings() {
    let dir = tempfile::tempdir().unwrap();
    let output = keyframes(
        dir.path(),
        &[
            "--set",
            "select.max_keyframes=2",
            "--set",
            "embed.batch_size=3",
            "--sample-fps",
            "1",
            "--threshold",
            "0.3",
            "--max-tokens",
            "7",
            "--prompt",
            "Name the colour = 1",
            "--dtype",
            "bf16",
            "-o",
            "out.json",
        ],
    );
    assert_ok(&output);
    let document = dir.path().join("out.json");
    let analysis = Analysis::load(&document).unwrap();
    let pipeline = &analysis.pipeline;
    assert_eq!(pipeline["select"]["max_keyframes"], 2);
    assert_eq!(pipeline["embed"]["batch_size"], 3);
    assert_eq!(pipeline["decode"]["sample_fps"], 1.0);
    let threshold = pipeline["select"]["change_threshold"].as_f64().unwrap();
    assert_eq!(threshold as f32, 0.3f32, "stored as f32");
    assert_eq!(pipeline["caption"]["max_tokens"], 7);
    assert_eq!(pipeline["caption"]["prompt"], "Name the colour = 1");
    assert_eq!(pipeline["caption"]["dtype"], "bf16");
    // Untouched settings keep the default pipeline's values.
    assert_eq!(pipeline["select"]["min_scene_s"], 2.0);
    // The settings were used, not only recorded.
    assert!(
        analysis.keyframes.len() <= 2,
        "{}",
        analysis.keyframes.len()
    );
    let frames = analysis.embeddings.as_ref().unwrap().frames;
    assert!((29..=31).contains(&frames), "1 sample per second: {frames}");

    // --set is applied after the named flags, so it wins.
    let output = keyframes(
        dir.path(),
        &[
            "--sample-fps",
            "1",
            "--set",
            "decode.sample_fps=0.5",
            "-o",
            "later.json",
        ],
    );
    assert_ok(&output);
    let analysis = Analysis::load(&dir.path().join("later.json")).unwrap();
    assert_eq!(analysis.pipeline["decode"]["sample_fps"], 0.5);
}

#[test]
fn bad_settings_are_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, code, expected) in [
        (
            &["--set", "caption.max_tokns=3"][..],
            1,
            &["--set caption.max_tokns=3", "unknown field `max_tokns`"][..],
        ),
        (
            &["--set", "selct.change_threshold=0.3"],
            1,
            &["selct.change_threshold", "unknown field `selct`"],
        ),
        (
            &["--set", "caption.max_tokens=lots"],
            1,
            &["--set caption.max_tokens=lots", "lots"],
        ),
        (
            &["--max-tokens", "0"],
            1,
            &[
                "--max-tokens 0",
                "`caption.max_tokens` must be between 1 and 4096",
            ],
        ),
        (
            &["--threshold", "3"],
            1,
            &["--threshold 3", "`select.change_threshold`"],
        ),
        (&["--set", "max_tokens=3"], 2, &["SECTION.KEY=VALUE"]),
        (&["--dtype", "f16"], 2, &["f16", "f32", "bf16"]),
        (&["--sample-fps", "fast"], 2, &["fast"]),
    ] {
        let mut args = extra.to_vec();
        args.extend(["-o", "out.json"]);
        let output = keyframes(dir.path(), &args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{extra:?}: {stderr}");
        for part in expected {
            assert!(stderr.contains(part), "{extra:?}: {part} in {stderr}");
        }
        if code == 1 {
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
        }
        assert_eq!(files_in(dir.path()), Vec::<String>::new(), "{extra:?}");
    }
}

#[test]
fn pipelines_list_and_show_the_built_in_ones() {
    let dir = tempfile::tempdir().unwrap();
    let output = keyscribe_in(dir.path(), &["pipelines", "list"], None);
    assert_ok(&output);
    let listed = text(&output.stdout);
    let names: Vec<&str> = listed
        .lines()
        .map(|line| line.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["default", "article-demo", "fast", "open"]);
    for (name, description) in [
        ("default", "The default pipeline: 2 samples per second"),
        ("article-demo", "eight keyframes"),
        ("fast", "one sample per second and short captions"),
        ("open", "Open models only"),
    ] {
        let line = listed.lines().find(|line| line.starts_with(name)).unwrap();
        assert!(line.contains(description), "{line}");
    }

    let output = keyscribe_in(dir.path(), &["pipelines", "list", "--json"], None);
    assert_ok(&output);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[2]["name"], "fast");

    let output = keyscribe_in(dir.path(), &["pipelines", "show", "fast"], None);
    assert_ok(&output);
    let shipped = std::fs::read_to_string(root().join("pipelines/fast.toml")).unwrap();
    assert_eq!(text(&output.stdout), shipped);

    let output = keyscribe_in(dir.path(), &["pipelines", "show", "quick"], None);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("quick") && stderr.contains("article-demo"),
        "{stderr}"
    );
}

#[test]
fn cache_dir_list_and_clear() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let output = keyscribe_in(dir.path(), &["cache", "dir"], None);
    assert_ok(&output);
    assert_eq!(text(&output.stdout).trim_end(), cache.display().to_string());

    let output = keyscribe_in(dir.path(), &["cache", "list"], None);
    assert_ok(&output);
    assert_eq!(text(&output.stdout), "");
    assert!(text(&output.stderr).contains("0 cached analyses"));

    // Two analyses with different settings, and model weights in the Hugging Face cache.
    assert_ok(&keyframes(dir.path(), &["-o", "a.json"]));
    assert_ok(&keyframes(
        dir.path(),
        &["--sample-fps", "1", "-o", "b.json"],
    ));
    let weights = dir.path().join("hf-home/hub/models--x/blobs/weights");
    std::fs::create_dir_all(weights.parent().unwrap()).unwrap();
    std::fs::write(&weights, "weights").unwrap();

    let output = keyscribe_in(dir.path(), &["cache", "list"], None);
    assert_ok(&output);
    let listed = text(&output.stdout);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    for line in listed.lines() {
        assert!(line.ends_with("scenes.mp4"), "{line}");
        assert!(line.contains(" UTC ") && line.contains("KiB"), "{line}");
    }
    assert!(text(&output.stderr).contains("2 cached analyses"));

    let output = keyscribe_in(dir.path(), &["cache", "list", "--json"], None);
    assert_ok(&output);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let bytes: u64 = rows.iter().map(|row| row["bytes"].as_u64().unwrap()).sum();
    assert!(bytes > 1000, "{rows:?}");

    let output = keyscribe_in(dir.path(), &["cache", "clear"], None);
    assert_ok(&output);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("removed 2 cached analyses"), "{stderr}");
    assert!(
        weights.is_file(),
        "model weights are not the cache's to clear"
    );
    let output = keyscribe_in(dir.path(), &["cache", "list", "--json"], None);
    assert_eq!(text(&output.stdout).trim(), "[]");
    // The documents written elsewhere stay.
    assert!(dir.path().join("a.json").is_file());

    let output = keyscribe_in(dir.path(), &["cache", "clear", "--help"], None);
    assert!(text(&output.stdout).contains("Hugging Face cache and are not touched"));
}

/// The document without what differs between two runs of the same analysis.
fn comparable(analysis: &Analysis) -> serde_json::Value {
    let mut value = serde_json::to_value(analysis).unwrap();
    value["timings"] = serde_json::Value::Null;
    value["video"]["path"] = serde_json::Value::Null;
    value["embeddings"]["path"] = serde_json::Value::Null;
    value
}

#[test]
fn run_reads_the_video_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(sample()).unwrap();
    let embedder = tiny_embedder();
    let output = keyscribe_in(
        dir.path(),
        &["keyframes", "-", "--embedder", arg(&embedder), "-q"],
        Some(&bytes),
    );
    assert_ok(&output);
    let from_stdin = Analysis::load(&dir.path().join("stdin.analysis.json")).unwrap();
    assert_eq!(from_stdin.video.path, "<stdin>");
    assert_ok(&keyframes(dir.path(), &["-o", "file.json"]));
    let from_file = Analysis::load(&dir.path().join("file.json")).unwrap();
    assert_eq!(comparable(&from_stdin), comparable(&from_file));
    // The spooled copy is gone.
    let spool = dir.path().join("cache/spool");
    assert_eq!(files_in(&spool), Vec::<String>::new());

    // `probe -` too; an empty stdin is named.
    let output = keyscribe_in(dir.path(), &["probe", "-", "--json"], Some(&bytes));
    assert_ok(&output);
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (info["path"].as_str(), info["width"].as_u64()),
        (Some("<stdin>"), Some(640))
    );
    let output = keyscribe_in(dir.path(), &["probe", "-"], Some(b""));
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("<stdin>: no video on stdin"));
}

#[test]
fn dash_o_writes_the_document_to_stdout_and_only_one_output_may() {
    let dir = tempfile::tempdir().unwrap();
    let output = keyframes(dir.path(), &["-o", "-"]);
    assert_ok(&output);
    let printed: Analysis = serde_json::from_slice(&output.stdout).unwrap();
    assert!(!printed.keyframes.is_empty());
    assert_eq!(
        files_in(dir.path()),
        Vec::<String>::new(),
        "no document file"
    );
    // Its embeddings are the cached ones: a plain file name, found beside the cache entry
    // that holds the same document.
    let record = printed.embeddings.as_ref().unwrap();
    assert!(!record.path.contains('/'), "{}", record.path);
    let cached = std::fs::read_dir(dir.path().join("cache/analyses"))
        .unwrap()
        .map(|entry| entry.unwrap().path().join("analysis.json"))
        .find(|document| document.is_file())
        .unwrap();
    assert!(printed.load_frames(&cached).is_ok());

    // The report to stdout, the document to a file (keyframes makes no subtitles).
    let output = keyframes(dir.path(), &["-o", "doc.json", "--html", "-"]);
    assert_ok(&output);
    assert!(text(&output.stdout).contains("<html"));
    assert!(dir.path().join("doc.json").is_file());

    for (extra, first, second) in [
        (&["-o", "-", "--srt", "-"][..], "-o -", "--srt -"),
        (&["--json", "--vtt", "-"], "--json", "--vtt -"),
        (
            &["-o", "x.json", "--srt", "-", "--html", "-"],
            "--srt -",
            "--html -",
        ),
    ] {
        let output = keyframes(dir.path(), extra);
        assert_eq!(output.status.code(), Some(1));
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(&format!("{first} and {second} both write to stdout")),
            "{stderr}"
        );
        assert!(!dir.path().join("x.json").exists());
    }

    // export and report write to stdout with `-o -`.
    let document = dir.path().join("doc.json");
    let output = keyscribe_in(
        dir.path(),
        &["export", arg(&document), "--format", "jsonl", "-o", "-"],
        None,
    );
    assert_ok(&output);
    assert_eq!(
        text(&output.stdout).lines().count(),
        printed.keyframes.len()
    );
}

#[test]
fn plain_run_prints_captions_on_stdout_and_files_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let sample = sample();
    let (embedder, captioner) = (tiny_embedder(), tiny_captioner());
    let output = keyscribe_in(
        dir.path(),
        &[
            "run",
            arg(&sample),
            "--embedder",
            arg(&embedder),
            "--captioner",
            arg(&captioner),
            "--max-tokens",
            "6",
            "-o",
            "a.json",
            "--srt",
            "a.srt",
        ],
        None,
    );
    assert_ok(&output);
    let analysis = Analysis::load(&dir.path().join("a.json")).unwrap();
    let expected: Vec<String> = analysis
        .keyframes
        .iter()
        .map(|keyframe| {
            let timecode = |s| keyscribe::time::MediaTime::from_seconds(s).timecode();
            format!(
                "[{} --> {}] {}",
                timecode(keyframe.scene.start_s),
                timecode(keyframe.scene.end_s),
                keyscribe::output::one_line(keyframe.caption.as_deref().unwrap())
            )
        })
        .collect();
    let stdout = text(&output.stdout);
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected, "{stdout}");
    // The stdout lines span what the SRT cues span.
    let srt = std::fs::read_to_string(dir.path().join("a.srt")).unwrap();
    let first_cue = srt.lines().nth(1).unwrap().replace(',', ".");
    assert!(
        expected[0].starts_with(&format!("[{first_cue}]")),
        "{first_cue}"
    );
    let stderr = text(&output.stderr);
    for keyframe in &analysis.keyframes {
        let logged = format!(
            "{}  {}",
            keyframe.timecode,
            keyframe.caption.as_deref().unwrap()
        );
        assert!(
            !stderr.contains(&logged),
            "captions are not repeated on stderr"
        );
    }
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with(&format!("{} keyframes in ", analysis.keyframes.len()))
            && last.contains("model loading included")
            && last.contains("wrote a.json, a.embeddings.")
            && last.ends_with(".safetensors, a.srt"),
        "{last}"
    );
    assert_eq!(analysis.pipeline["caption"]["max_tokens"], 6);

    // With the document on stdout the captions are logged on stderr instead.
    let output = keyscribe_in(
        dir.path(),
        &[
            "run",
            arg(&sample),
            "--embedder",
            arg(&embedder),
            "--captioner",
            arg(&captioner),
            "--max-tokens",
            "6",
            "-o",
            "-",
        ],
        None,
    );
    assert_ok(&output);
    let printed: Analysis = serde_json::from_slice(&output.stdout).unwrap();
    let stderr = text(&output.stderr);
    for keyframe in &printed.keyframes {
        let line = format!(
            "{}  {}",
            keyframe.timecode,
            keyframe.caption.as_deref().unwrap()
        );
        assert!(stderr.contains(&line), "{line} in {stderr}");
    }
}

fn image(name: &str) -> PathBuf {
    root().join("tests/fixtures/fastvlm-inputs").join(name)
}

#[test]
fn describe_takes_several_images_and_loads_the_model_once() {
    let dir = tempfile::tempdir().unwrap();
    let captioner = tiny_captioner();
    let (square, portrait) = (image("square.png"), image("portrait.png"));
    let describe = |images: &[&Path], extra: &[&str]| {
        let mut args = vec![
            "describe",
            "--captioner",
            arg(&captioner),
            "--max-tokens",
            "5",
        ];
        args.extend(images.iter().map(|path| arg(path)));
        args.extend_from_slice(extra);
        keyscribe_in(dir.path(), &args, None)
    };
    let output = describe(&[&square, &portrait], &["--json"]);
    assert_ok(&output);
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["image"], arg(&square));
    assert_eq!(lines[1]["image"], arg(&portrait));
    let stderr = text(&output.stderr);
    assert_eq!(
        stderr.matches("loading the captioner").count(),
        1,
        "{stderr}"
    );
    for path in [&square, &portrait] {
        assert!(
            stderr.contains(&format!("describing {}", path.display())),
            "{stderr}"
        );
    }
    assert!(
        stderr.trim_end().ends_with("model loading included"),
        "{stderr}"
    );

    // Each description is the one the image gets alone (greedy decoding).
    for (path, line) in [&square, &portrait].into_iter().zip(&lines) {
        let alone = describe(&[path], &["--json"]);
        assert_ok(&alone);
        let alone: serde_json::Value = serde_json::from_slice(&alone.stdout).unwrap();
        assert_eq!(alone["token_ids"], line["token_ids"]);
        assert!(line["token_ids"].as_array().unwrap().len() <= 5);
    }

    // Streamed text: one line per image, named; the second image from stdin.
    let bytes = std::fs::read(&portrait).unwrap();
    let mut args = vec![
        "describe",
        "--captioner",
        arg(&captioner),
        "--max-tokens",
        "5",
    ];
    args.extend([arg(&square), "-"]);
    let output = keyscribe_in(dir.path(), &args, Some(&bytes));
    assert_ok(&output);
    let stdout = text(&output.stdout);
    let streamed: Vec<&str> = stdout.lines().collect();
    assert_eq!(streamed.len(), 2, "{stdout}");
    // The tiny model's random tokens can end inside a UTF-8 character: the stream shows it
    // as U+FFFD, the final text leaves it out.
    let words = |text: &str| {
        let text = text.replace('\u{FFFD}', "");
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    for (line, (name, described)) in streamed.iter().zip([
        (square.display().to_string(), &lines[0]),
        ("<stdin>".to_string(), &lines[1]),
    ]) {
        let caption = line.strip_prefix(&format!("{name}: ")).expect(line);
        assert_eq!(
            words(caption),
            words(described["caption"].as_str().unwrap())
        );
    }

    // A missing image is named before the model is loaded.
    let output = describe(&[&square, Path::new("missing.png")], &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("missing.png") && !stderr.contains("loading"),
        "{stderr}"
    );
}

/// Embeds one text with `extra` choosing the model; the JSON document.
fn embed_text(dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["embed", "--text", "a red bar", "--json"];
    args.extend_from_slice(extra);
    keyscribe_in(dir, &args, None)
}

#[test]
fn embed_falls_back_to_the_pipeline_model_and_the_hub_cache() {
    let dir = tempfile::tempdir().unwrap();
    let embedder = tiny_embedder();
    let explicit = embed_text(dir.path(), &["--embedder", arg(&embedder)]);
    assert_ok(&explicit);
    let explicit: serde_json::Value = serde_json::from_slice(&explicit.stdout).unwrap();
    assert_eq!(explicit["dim"], 32);

    // Nothing given, nothing cached, offline: the error says how to get the model.
    let output = embed_text(dir.path(), &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("keyscribe models fetch MobileCLIP2-S0") && stderr.contains("--embedder"),
        "{stderr}"
    );

    // A pipeline that names the directory.
    std::fs::write(
        dir.path().join("tiny.toml"),
        format!("[embed]\ndir = {:?}\n", embedder.display().to_string()),
    )
    .unwrap();
    let output = embed_text(dir.path(), &["--pipeline", "tiny.toml"]);
    assert_ok(&output);
    let from_pipeline: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(from_pipeline, explicit);
    // ... or `--set` naming it.
    let setting = format!("embed.dir={}", embedder.display());
    let output = embed_text(dir.path(), &["--set", &setting]);
    assert_ok(&output);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap(),
        explicit
    );

    // The model in the Hugging Face cache at the manifest's pinned commit, as a download
    // leaves it.
    let repo = dir
        .path()
        .join("hf-home/hub/models--timm--MobileCLIP2-S0-OpenCLIP");
    let manifest = keyscribe::models::store::manifest("MobileCLIP2-S0").unwrap();
    let commit = manifest.revision.as_str();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join(commit), commit).unwrap();
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    for file in [
        "open_clip_config.json",
        "open_clip_model.safetensors",
        "tokenizer.json",
    ] {
        std::fs::copy(embedder.join(file), snapshot.join(file)).unwrap();
    }
    let output = embed_text(dir.path(), &[]);
    assert_ok(&output);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap(),
        explicit
    );
}

#[test]
fn frames_codec_keyframes_and_its_old_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let sample = sample();
    let mut counts = Vec::new();
    for flag in ["--codec-keyframes", "--keyframes-only"] {
        let out = dir.path().join(flag.trim_start_matches('-'));
        let output = keyscribe_in(
            dir.path(),
            &[
                "frames",
                arg(&sample),
                "--out",
                arg(&out),
                "--size",
                "64x36",
                flag,
            ],
            None,
        );
        assert_ok(&output);
        assert!(text(&output.stderr).contains("codec key frames"));
        counts.push(files_in(&out).len());
    }
    assert_eq!(counts[0], counts[1]);
    let all = dir.path().join("all");
    let output = keyscribe_in(
        dir.path(),
        &[
            "frames",
            arg(&sample),
            "--out",
            arg(&all),
            "--size",
            "64x36",
            "--sample-fps",
            "all",
        ],
        None,
    );
    assert_ok(&output);
    assert!(counts[0] < files_in(&all).len(), "key frames are a subset");

    let help = keyscribe_in(dir.path(), &["frames", "--help"], None);
    let help = text(&help.stdout);
    assert!(help.contains("--codec-keyframes") && help.contains("codec key frames"));
    assert!(
        !help.contains("keyframes-only"),
        "the old spelling is hidden"
    );
}

#[test]
fn a_forced_instruction_set_that_is_unknown_or_missing_stops_with_the_reason() {
    let output = common::keyscribe()
        .args(["pipelines", "list"])
        .env("KEYSCRIBE_ISA", "sse9")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("KEYSCRIBE_ISA=\"sse9\""), "{stderr}");
    assert!(output.stdout.is_empty());
    let output = common::keyscribe()
        .args(["pipelines", "list"])
        .env("KEYSCRIBE_ISA", "portable")
        .output()
        .unwrap();
    assert_ok(&output);
    let detected = keyscribe::kernels::Isa::detected();
    if detected < keyscribe::kernels::Isa::Avx512 {
        let output = common::keyscribe()
            .args(["pipelines", "list"])
            .env("KEYSCRIBE_ISA", "avx512")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("KEYSCRIBE_ISA=avx512")
                && stderr.contains(&format!("it has {}", detected.name())),
            "{stderr}"
        );
    }
}

/// `run` on the sample with the tiny models, `extra` arguments and `KEYSCRIBE_ISA` set to
/// `isa` (when given): the document it wrote.
fn run_with_isa(dir: &Path, isa: Option<&str>, extra: &[&str]) -> Analysis {
    let (sample, embedder, captioner) = (sample(), tiny_embedder(), tiny_captioner());
    let mut command = common::keyscribe();
    command
        .args(["run", arg(&sample), "--embedder", arg(&embedder)])
        .args(["--captioner", arg(&captioner), "--max-tokens", "6", "-q"])
        .args(["-o", "a.json"])
        .args(extra)
        .current_dir(dir)
        .env("KEYSCRIBE_CACHE_DIR", dir.join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.join("hf-home"));
    if let Some(isa) = isa {
        command.env("KEYSCRIBE_ISA", isa);
    }
    assert_ok(&command.output().unwrap());
    Analysis::load(&dir.join("a.json")).unwrap()
}

#[test]
fn dtype_auto_runs_and_records_the_dtype_of_the_cpu() {
    use keyscribe::kernels::Isa;
    // A directory (and cache) per run, so that no run reuses another's analysis.
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let captions = |analysis: &Analysis| -> Vec<Option<String>> {
        analysis
            .keyframes
            .iter()
            .map(|k| k.caption.clone())
            .collect()
    };
    // Where the variable forces a level, the CPU has it: this process runs at it too.
    let here = keyscribe::models::generation::auto_dtype(&candle_core::Device::Cpu).as_str();
    let auto = run_with_isa(dirs[0].path(), None, &[]);
    assert_eq!(auto.pipeline["caption"]["dtype"], here);
    let explicit = run_with_isa(dirs[1].path(), None, &["--dtype", here]);
    assert_eq!(explicit.pipeline["caption"]["dtype"], here);
    assert_eq!(captions(&auto), captions(&explicit), "auto ran {here}");
    // Below AVX-512 there are no bf16 dot products: auto is f32.
    if Isa::detected() >= Isa::Avx2 {
        let forced = run_with_isa(dirs[2].path(), Some("avx2"), &["--dtype", "auto"]);
        assert_eq!(forced.pipeline["caption"]["dtype"], "f32");
    }
}
