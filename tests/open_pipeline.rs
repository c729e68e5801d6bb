//! The `open` pipeline end to end: SigLIP2 keyframes and SmolVLM captions from the Hugging
//! Face cache at the manifests' pinned commits (the tiny fixtures stand in for the real
//! weights), with licences in `models list`, in the document, and in the one line a
//! research-only model prints.

mod common;

use std::path::Path;

use common::{arg, assert_ok, keyscribe_in, root, scenes_sample, text, tiny_captioner};
use keyscribe::models::store::manifest;

/// Puts the fixture `fixture` into `dir`'s Hugging Face cache as the snapshot of `model`'s
/// pinned commit, as a download by revision leaves it.
fn cache_as(dir: &Path, model: &str, fixture: &str) {
    let manifest = manifest(model).unwrap();
    let repo = format!("models--{}", manifest.repo.replace('/', "--"));
    let snapshot = dir
        .join("hf-home/hub")
        .join(repo)
        .join("snapshots")
        .join(&manifest.revision);
    std::fs::create_dir_all(&snapshot).unwrap();
    for entry in std::fs::read_dir(root().join("tests/fixtures").join(fixture)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, snapshot.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn run_with_the_open_pipeline_records_open_licences_and_prints_no_research_notice() {
    let dir = tempfile::tempdir().unwrap();
    cache_as(dir.path(), "SigLIP2-base-224", "siglip-tiny");
    cache_as(dir.path(), "SmolVLM-256M", "smolvlm-tiny");
    let sample = scenes_sample();
    let output = keyscribe_in(
        dir.path(),
        &[
            "run",
            arg(&sample),
            "--pipeline",
            "open",
            "--max-tokens",
            "6",
            "-o",
            "open.analysis.json",
        ],
        None,
    );
    assert_ok(&output);
    let stderr = text(&output.stderr);
    assert!(!stderr.contains("research only"), "{stderr}");

    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("open.analysis.json")).unwrap())
            .unwrap();
    let models = &document["models"];
    for (role, model) in [
        ("embedder", "SigLIP2-base-224"),
        ("captioner", "SmolVLM-256M"),
    ] {
        let manifest = manifest(model).unwrap();
        assert_eq!(models[role]["licence"], "Apache-2.0", "{role}: {models}");
        assert_eq!(
            models[role]["revision"],
            manifest.revision.as_str(),
            "{role}"
        );
        assert_eq!(
            models[role]["source"],
            format!("hf://{}@{}", manifest.repo, manifest.revision).as_str()
        );
    }
    let keyframes = document["keyframes"].as_array().unwrap();
    assert!(keyframes.len() >= 2, "{keyframes:?}");
    for keyframe in keyframes {
        assert!(keyframe["caption"].is_string(), "{keyframe}");
    }
    // The embeddings are SigLIP's: 768-d in the real model, the tiny one's width here.
    assert!(models["embedder"]["name"]
        .as_str()
        .unwrap()
        .contains("SigLIP"));
    assert!(models["captioner"]["name"]
        .as_str()
        .unwrap()
        .contains("SmolVLM"));
}

#[test]
fn a_research_only_model_prints_one_line_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let captioner = tiny_captioner();
    let output = keyscribe_in(
        dir.path(),
        &[
            "describe",
            arg(&root().join("tests/fixtures/fastvlm-inputs/square.png")),
            "--captioner",
            arg(&captioner),
            "--max-tokens",
            "4",
        ],
        None,
    );
    assert_ok(&output);
    let stderr = text(&output.stderr);
    let notes: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("research only"))
        .collect();
    assert_eq!(notes.len(), 1, "{stderr}");
    assert!(notes[0].contains("apple-amlr"), "{}", notes[0]);
}

#[test]
fn models_list_shows_every_licence() {
    let dir = tempfile::tempdir().unwrap();
    let output = keyscribe_in(dir.path(), &["models", "list"], None);
    assert_ok(&output);
    let listed = text(&output.stdout);
    let line = |name: &str| {
        listed
            .lines()
            .find(|line| line.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {listed}"))
            .to_string()
    };
    for open in [
        "SigLIP2-base-224",
        "SigLIP2-base-256",
        "SigLIP2-base-384",
        "SmolVLM-256M",
        "SmolVLM-500M",
    ] {
        let line = line(open);
        assert!(line.contains("Apache-2.0"), "{line}");
        assert!(!line.contains("research only"), "{line}");
    }
    for apple in ["MobileCLIP2-S0", "FastVLM-0.5B", "FastVLM-7B"] {
        let line = line(apple);
        assert!(line.contains("apple-amlr (research only)"), "{line}");
    }

    let output = keyscribe_in(dir.path(), &["models", "list", "--json"], None);
    assert_ok(&output);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let smolvlm = rows
        .iter()
        .find(|row| row["name"] == "SmolVLM-256M")
        .unwrap();
    assert_eq!(smolvlm["licence"], "Apache-2.0");
    assert_eq!(smolvlm["research_only"], false);
    assert_eq!(
        smolvlm["revision"],
        manifest("SmolVLM-256M").unwrap().revision.as_str()
    );
}
