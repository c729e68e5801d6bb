//! Scene-boundary accuracy of keyscribe's keyframe selection on the synthetic samples with
//! known cuts, with the same matching rule as `benches/reference/scenedetect_accuracy.py`
//! (PySceneDetect's ContentDetector on the same files).
//!
//! ```text
//! cargo bench --bench accuracy                       # tiny fixture embedder
//! KEYSCRIBE_EMBEDDER=DIR cargo bench --bench accuracy  # any embedder checkpoint
//! ```
//!
//! The files are `samples/scenes.mp4` and `transitions.mp4` (made by `samples/make_samples.sh
//! accuracy` into `target/accuracy-samples/` when missing). A detected boundary (the start of
//! every scene after the first) matches a true one when it is at most 0.5 s away, or for a
//! gradual transition within 0.5 s of its span; each true boundary matches at most one
//! detection. Prints one JSON line per file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::Device;
use serde_json::{json, Value};

use keyscribe::analysis::ModelSource;
use keyscribe::models::roles::load_embedder;
use keyscribe::pipeline::{analyse, AnalysisJob, Models, PipelineConfig, Progress, StopSignal};
use keyscribe::time::MediaTime;

const TOLERANCE_S: f64 = 0.5;

fn main() {
    keyscribe::allocator::reuse_freed_memory();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let embedder_dir = std::env::var_os("KEYSCRIBE_EMBEDDER")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("tests/fixtures/mobileclip-s0-tiny"));
    let pipeline = std::env::var("KEYSCRIBE_PIPELINE").unwrap_or_else(|_| "default".into());
    let config = PipelineConfig::load(&pipeline)
        .and_then(|config| config.with_overrides(&[]))
        .expect("pipeline");
    let samples = root.join("target/accuracy-samples");
    if !samples.join("transitions.json").is_file() {
        let status = Command::new("bash")
            .arg(root.join("samples/make_samples.sh"))
            .arg("accuracy")
            .arg(&samples)
            .status()
            .expect("run samples/make_samples.sh");
        assert!(status.success(), "make_samples.sh accuracy failed");
    }
    let truths = [
        root.join("samples/scenes.json"),
        samples.join("transitions.json"),
    ];
    let mut embedder = load_embedder(&embedder_dir, &Device::Cpu).expect("embedder");
    let name = embedder.name().to_string();
    for truth_path in truths {
        let truth: Value =
            serde_json::from_str(&std::fs::read_to_string(&truth_path).unwrap()).unwrap();
        let video = truth_path
            .parent()
            .unwrap()
            .join(truth["file"].as_str().unwrap());
        let job = AnalysisJob {
            config: config.clone(),
            video_sha256: String::new(),
            models: Models {
                embedder,
                embedder_source: ModelSource {
                    location: embedder_dir.display().to_string(),
                    revision: None,
                    weights_sha256: None,
                    licence: None,
                },
                captioner: None,
            },
        };
        let started = Instant::now();
        let progress = Progress::new("", MediaTime::from_seconds(1.0), true);
        let output = analyse(&video, job, StopSignal::new(), &progress, |_| {}).unwrap();
        let elapsed = started.elapsed().as_secs_f64();
        let detected: Vec<f64> = output
            .analysis
            .keyframes
            .iter()
            .skip(1)
            .map(|keyframe| keyframe.scene.start_s)
            .collect();
        let boundaries = truth["boundaries"].as_array().unwrap();
        let (hits, precision, recall) = score(boundaries, &detected);
        println!(
            "{}",
            json!({
                "file": truth["file"],
                "detector": format!("keyscribe ({name}, pipeline {pipeline})"),
                "detected_s": detected.iter().map(|t| (t * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
                "true_s": boundaries.iter().map(|b| b["time_s"].clone()).collect::<Vec<_>>(),
                "matched": hits,
                "precision": (precision * 1000.0).round() / 1000.0,
                "recall": (recall * 1000.0).round() / 1000.0,
                "seconds": (elapsed * 1000.0).round() / 1000.0,
            })
        );
        // The embedder comes back from the job for the next file.
        embedder = output.models.embedder;
    }
}

/// Greedy one-to-one matching: (true positives, precision, recall).
fn score(truth: &[Value], detected: &[f64]) -> (usize, f64, f64) {
    let mut unmatched: Vec<f64> = detected.to_vec();
    let mut hits = 0;
    for boundary in truth {
        let time = boundary["time_s"].as_f64().unwrap();
        let low = boundary["from_s"].as_f64().unwrap_or(time) - TOLERANCE_S;
        let high = boundary["to_s"].as_f64().unwrap_or(time) + TOLERANCE_S;
        let best = unmatched
            .iter()
            .enumerate()
            .filter(|(_, t)| (low..=high).contains(*t))
            .min_by(|a, b| (a.1 - time).abs().total_cmp(&(b.1 - time).abs()))
            .map(|(index, _)| index);
        if let Some(index) = best {
            unmatched.remove(index);
            hits += 1;
        }
    }
    let precision = if detected.is_empty() {
        1.0
    } else {
        hits as f64 / detected.len() as f64
    };
    let recall = if truth.is_empty() {
        1.0
    } else {
        hits as f64 / truth.len() as f64
    };
    (hits, precision, recall)
}
