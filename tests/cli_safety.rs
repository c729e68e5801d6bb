//! The binary facing pipes and paths as users meet them: a reader that closes stdout early
//! (`| head -1`) is a normal end, an output that is an input is refused before it is touched,
//! outputs are checked before any work, and settings and errors read as written.

mod common;

use common::{
    root, scenes_sample as sample, tiny_captioner as captioner, tiny_embedder as embedder,
};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

fn image() -> PathBuf {
    root().join("tests/fixtures/fastvlm-inputs/square.png")
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// keyscribe in `dir`, with a cache of its own and no network.
fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = common::keyscribe();
    command
        .args(args)
        .current_dir(dir)
        .env("KEYSCRIBE_CACHE_DIR", dir.join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.join("hf-home"));
    command
}

fn keyscribe(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().expect("keyscribe runs")
}

/// A directory holding `v.mp4` (the sample), its analysis `a.json` without captions and the
/// sidecar `a.embeddings.safetensors`, made once by `keyscribe keyframes`.
fn analysed_once() -> &'static Path {
    static MADE: OnceLock<PathBuf> = OnceLock::new();
    MADE.get_or_init(|| {
        // Made anew by each run of these tests, in one place, so runs leave no litter.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-safety-analysis");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(sample(), dir.join("v.mp4")).unwrap();
        let output = keyscribe(
            &dir,
            &[
                "keyframes",
                "v.mp4",
                "--embedder",
                arg(&embedder()),
                "-o",
                "a.json",
                "--quiet",
            ],
        );
        assert!(output.status.success(), "{}", text(&output.stderr));
        dir
    })
}

/// The name of the embeddings sidecar beside the document `STEM.json` in `dir` (sidecars are
/// named by their content: `STEM.embeddings.HASH.safetensors`).
fn sidecar_name(dir: &Path, stem: &str) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .find(|name| {
            name.starts_with(&format!("{stem}.embeddings.")) && name.ends_with(".safetensors")
        })
        .unwrap_or_else(|| panic!("no sidecar of {stem} in {}", dir.display()))
}

/// A copy of [`analysed_once`]'s directory for one test, its document naming the copy's
/// video.
fn analysed() -> tempfile::TempDir {
    let made = analysed_once();
    let dir = tempfile::tempdir().unwrap();
    for name in ["v.mp4".to_string(), sidecar_name(made, "a")] {
        std::fs::copy(made.join(&name), dir.path().join(&name)).unwrap();
    }
    let mut document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(made.join("a.json")).unwrap()).unwrap();
    document["video"]["path"] = dir.path().join("v.mp4").to_str().unwrap().into();
    let text = serde_json::to_string_pretty(&document).unwrap();
    std::fs::write(dir.path().join("a.json"), text).unwrap();
    dir
}

/// Runs keyscribe with a stdout whose reader is already gone.
fn with_closed_stdout(dir: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    command(dir, args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("keyscribe runs")
}

#[test]
fn a_closed_stdout_ends_every_printing_command_successfully() {
    let dir = analysed();
    let frames = dir.path().join("frames");
    let (embedder, captioner, image) = (embedder(), captioner(), image());
    let (embedder, captioner, image) = (arg(&embedder), arg(&captioner), arg(&image));
    let cases: Vec<Vec<&str>> = vec![
        vec!["models", "list"],
        vec!["models", "list", "--json"],
        vec!["probe", "v.mp4"],
        vec!["probe", "--json", "v.mp4"],
        vec!["export", "a.json", "--format", "csv"],
        vec!["frames", "v.mp4", "--out", arg(&frames), "--json"],
        vec![
            "search",
            "a.json",
            "colour bars",
            "--embedder",
            embedder,
            "--json",
        ],
        vec!["search", "a.json", "colour bars", "--embedder", embedder],
        vec!["embed", "--embedder", embedder, "--json", "--text", "a cat"],
        vec!["embed", "--embedder", embedder, image],
        vec![
            "keyframes",
            "v.mp4",
            "--embedder",
            embedder,
            "-o",
            "b.json",
            "--json",
        ],
        vec![
            "describe",
            image,
            "--captioner",
            captioner,
            "--max-tokens",
            "4",
        ],
    ];
    for args in cases {
        let output = with_closed_stdout(dir.path(), &args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_closed_stderr_loses_the_notes_not_the_work() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(sample(), dir.path().join("v.mp4")).unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    // Not quiet: a line per keyframe and a closing note go to stderr.
    let output = command(
        dir.path(),
        &[
            "keyframes",
            "v.mp4",
            "--embedder",
            arg(&embedder()),
            "-o",
            "a.json",
        ],
    )
    .stderr(writer)
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(0));
    keyscribe::analysis::Analysis::load(&dir.path().join("a.json")).unwrap();
}

#[test]
fn a_pipe_closed_by_head_is_a_normal_end() {
    let dir = analysed();
    let script = format!(
        "'{}' models list | head -1 >/dev/null; echo $?; \
         '{}' probe --json v.mp4 | true",
        env!("CARGO_BIN_EXE_keyscribe"),
        env!("CARGO_BIN_EXE_keyscribe")
    );
    let output = Command::new("bash")
        .args(["-o", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(text(&output.stdout).trim(), "0");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Asserts a refused command: exit 1, one error line that contains every piece of `named`,
/// and the files in `untouched` keep their bytes.
fn assert_refused(output: &Output, named: &[&str], untouched: &[(&Path, &[u8])]) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("keyscribe: error: "), "{stderr}");
    for piece in named {
        assert!(stderr.contains(piece), "{piece} in {stderr}");
    }
    for (path, bytes) in untouched {
        assert!(
            std::fs::read(path).unwrap() == *bytes,
            "{} was changed",
            path.display()
        );
    }
}

#[test]
fn an_output_that_is_the_video_is_refused_and_the_video_kept() {
    let dir = analysed();
    let video = dir.path().join("v.mp4");
    let bytes = std::fs::read(&video).unwrap();
    std::os::unix::fs::symlink("v.mp4", dir.path().join("link.json")).unwrap();
    std::fs::hard_link(&video, dir.path().join("hard.json")).unwrap();
    std::fs::copy(&video, dir.path().join("x.embeddings.safetensors")).unwrap();
    let sidecar_bytes = std::fs::read(dir.path().join("x.embeddings.safetensors")).unwrap();
    let no_models = dir.path().join("no-such-model");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["keyframes", "v.mp4", "-o", "v.mp4"],
            vec!["analysis document v.mp4", "video v.mp4"],
        ),
        (
            vec!["keyframes", "v.mp4", "-o", "link.json"],
            vec!["analysis document link.json", "video v.mp4"],
        ),
        (
            vec!["keyframes", "v.mp4", "-o", "hard.json"],
            vec!["analysis document hard.json", "video v.mp4"],
        ),
        (
            vec!["keyframes", "./v.mp4", "-o", "b.json", "--html", "v.mp4"],
            vec!["--html file v.mp4", "video ./v.mp4"],
        ),
        (
            vec!["run", "v.mp4", "-o", "b.json", "--srt", "v.mp4"],
            vec!["--srt file v.mp4", "video v.mp4"],
        ),
        (
            vec!["run", "v.mp4", "-o", "b.json", "--vtt", "hard.json"],
            vec!["--vtt file hard.json", "video v.mp4"],
        ),
    ];
    for (args, named) in cases {
        let mut args = args;
        args.extend([
            "--embedder",
            arg(&no_models),
            "--captioner",
            arg(&no_models),
        ]);
        let output = keyscribe(dir.path(), &args);
        assert_refused(
            &output,
            &named,
            &[
                (&video, &bytes),
                (&dir.path().join("x.embeddings.safetensors"), &sidecar_bytes),
            ],
        );
        assert!(!dir.path().join("b.json").exists(), "{args:?}");
        assert!(
            !dir.path().join("cache").exists(),
            "{args:?}: nothing analysed"
        );
    }
}

#[test]
fn outputs_that_are_the_same_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(sample(), dir.path().join("v.mp4")).unwrap();
    let output = keyscribe(
        dir.path(),
        &[
            "keyframes",
            "v.mp4",
            "--embedder",
            arg(&embedder()),
            "--html",
            "a.json",
            "-o",
            "./a.json",
        ],
    );
    assert_refused(
        &output,
        &["./a.json", "--html file a.json", "same file"],
        &[],
    );
    assert!(!dir.path().join("a.json").exists());
}

#[test]
fn report_and_export_refuse_to_overwrite_what_they_read() {
    let dir = analysed();
    let document = dir.path().join("a.json");
    let document_bytes = std::fs::read(&document).unwrap();
    let video = dir.path().join("v.mp4");
    let video_bytes = std::fs::read(&video).unwrap();
    let sidecar_file = sidecar_name(dir.path(), "a");
    let sidecar = dir.path().join(&sidecar_file);
    let report_sidecar = format!("report {sidecar_file}");
    let sidecar_bytes = std::fs::read(&sidecar).unwrap();
    let untouched: [(&Path, &[u8]); 3] = [
        (&document, &document_bytes),
        (&video, &video_bytes),
        (&sidecar, &sidecar_bytes),
    ];
    for (args, named) in [
        (
            vec!["report", "a.json", "-o", "a.json"],
            vec!["report a.json", "analysis document a.json"],
        ),
        (
            vec!["report", "a.json", "-o", "v.mp4"],
            vec!["report v.mp4", "analysed video /", "/v.mp4"],
        ),
        (
            vec!["report", "a.json", "-o", sidecar_file.as_str()],
            vec![report_sidecar.as_str(), "embeddings sidecar"],
        ),
        (
            vec!["export", "a.json", "-f", "csv", "-o", "a.json"],
            vec!["export file a.json", "analysis document a.json"],
        ),
        (
            vec!["export", "./a.json", "-f", "json", "-o", "a.json"],
            vec!["export file a.json", "analysis document ./a.json"],
        ),
    ] {
        let output = keyscribe(dir.path(), &args);
        assert_refused(&output, &named, &untouched);
    }
}

#[test]
fn an_unwritable_output_fails_before_models_load_or_the_video_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(sample(), dir.path().join("v.mp4")).unwrap();
    std::fs::write(dir.path().join("a-file"), b"not a directory").unwrap();
    // The model directories do not exist: an error about them would mean they were
    // looked for before the outputs were checked.
    let no_models = dir.path().join("no-such-model");
    for (args, named) in [
        (
            vec!["keyframes", "v.mp4", "-o", "a-file/out.json"],
            "a-file/out.json",
        ),
        (
            vec!["run", "v.mp4", "-o", "out.json", "--srt", "a-file/x.srt"],
            "a-file/x.srt",
        ),
        (
            vec!["run", "v.mp4", "-o", "out.json", "--html", "a-file/x.html"],
            "a-file/x.html",
        ),
        (vec!["keyframes", "v.mp4", "-o", "."], "it is a directory"),
    ] {
        let mut args = args;
        args.extend([
            "--embedder",
            arg(&no_models),
            "--captioner",
            arg(&no_models),
        ]);
        let output = keyscribe(dir.path(), &args);
        assert_refused(&output, &[named], &[]);
        assert!(!text(&output.stderr).contains("no-such-model"));
        assert!(!dir.path().join("out.json").exists());
        assert!(
            !dir.path().join("cache").exists(),
            "{args:?}: nothing analysed"
        );
    }
}

#[test]
fn missing_output_directories_are_made() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(sample(), dir.path().join("v.mp4")).unwrap();
    let output = keyscribe(
        dir.path(),
        &[
            "keyframes",
            "v.mp4",
            "--embedder",
            arg(&embedder()),
            "-o",
            "docs/a.json",
            "--html",
            "pages/deeper/a.html",
            "--quiet",
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(dir.path().join("docs/a.json").is_file());
    assert!(dir
        .path()
        .join("docs")
        .join(sidecar_name(&dir.path().join("docs"), "a"))
        .is_file());
    assert!(dir.path().join("pages/deeper/a.html").is_file());
}

#[test]
fn keyframes_refuses_subtitles_it_cannot_fill() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(sample(), dir.path().join("v.mp4")).unwrap();
    std::fs::write(
        dir.path().join("no-captions.toml"),
        "[caption]\nenabled = false\n",
    )
    .unwrap();
    let embedder = embedder();
    for args in [
        vec!["keyframes", "v.mp4", "--srt", "v.srt"],
        vec!["keyframes", "v.mp4", "--vtt", "v.vtt"],
        vec![
            "run",
            "v.mp4",
            "--pipeline",
            "no-captions.toml",
            "--srt",
            "v.srt",
        ],
    ] {
        let mut args = args;
        args.extend(["--embedder", arg(&embedder)]);
        let output = keyscribe(dir.path(), &args);
        let named = if args[0] == "keyframes" {
            "keyscribe run"
        } else {
            "no-captions.toml"
        };
        assert_refused(&output, &[named, "empty"], &[]);
        for name in ["v.srt", "v.vtt", "v.analysis.json"] {
            assert!(!dir.path().join(name).exists(), "{args:?} wrote {name}");
        }
    }
}

#[test]
fn the_document_records_settings_as_written() {
    let document = std::fs::read_to_string(analysed_once().join("a.json")).unwrap();
    for setting in ["\"noise_window_s\": 30.0,", "\"persistence_s\": 1.0,"] {
        assert!(document.contains(setting), "{setting} in {document}");
    }
    assert!(!document.contains("0.20000000298023224"), "{document}");
}

#[test]
fn export_and_report_of_a_video_say_to_run_it_first() {
    let dir = analysed();
    for args in [
        vec!["export", "v.mp4", "--format", "srt"],
        vec!["report", "v.mp4", "-o", "r.html"],
    ] {
        let output = keyscribe(dir.path(), &args);
        assert_refused(
            &output,
            &["v.mp4", "is a video", "keyscribe run v.mp4"],
            &[],
        );
        assert!(output.stdout.is_empty());
        assert!(!dir.path().join("r.html").exists());
    }
}

#[test]
fn a_bad_pipeline_value_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(sample(), dir.path().join("v.mp4")).unwrap();
    std::fs::write(
        dir.path().join("mine.toml"),
        "# my settings\n[select]\nmin_scene_s = 1.0\nchange_threshold = 3.0\n",
    )
    .unwrap();
    let output = keyscribe(
        dir.path(),
        &[
            "keyframes",
            "v.mp4",
            "--pipeline",
            "mine.toml",
            "--embedder",
            arg(&embedder()),
        ],
    );
    assert_refused(
        &output,
        &["mine.toml: line 4: `select.change_threshold`"],
        &[],
    );
}
