//! MobileCLIP2's text tokens against open_clip's own tokenizer, on the strings of
//! `tests/fixtures/clip-tokens.json` (made by `tests/fixtures/make_clip_tokens.py`), and the
//! text embeddings of a few of them through the reduced MobileCLIP2-S0.

use std::path::{Path, PathBuf};

use candle_core::Device;
use keyscribe::models::clip_tokenizer::ClipTokenizer;
use keyscribe::models::mobileclip::MobileClip;
use serde::Deserialize;
use serde_json::json;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The Hub's tokenizer file of the tiny MobileCLIP2-S0 fixture (open_clip's vocabulary).
fn hub_tokenizer_json() -> PathBuf {
    fixtures().join("mobileclip-s0-tiny/tokenizer.json")
}

/// `clip-tokens.json`: strings and the ids open_clip gives them, zero padding left off, and
/// open_clip's embeddings of a few texts with a reduced model.
#[derive(Deserialize)]
struct TokenFixture {
    versions: serde_json::Map<String, serde_json::Value>,
    context_length: usize,
    text_embeddings: EmbeddedTexts,
    cases: Vec<TokenCase>,
}

/// open_clip's normalised text embeddings by the model in `tests/fixtures/{model_dir}`.
#[derive(Deserialize)]
struct EmbeddedTexts {
    model_dir: String,
    texts: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct TokenCase {
    text: String,
    ids: Vec<u32>,
}

fn token_fixture() -> TokenFixture {
    let path = fixtures().join("clip-tokens.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The ids without the trailing zero padding (the last id kept is the end-of-text id).
fn trim_padding(ids: &[u32]) -> &[u32] {
    let end = ids
        .iter()
        .rposition(|&id| id != 0)
        .map_or(0, |last| last + 1);
    &ids[..end]
}

/// Tokenizes every fixture string with the tokenizer read from `tokenizer_json` and fails
/// naming the first strings whose ids differ from open_clip's, and how many do.
fn assert_open_clips_ids(tokenizer_json: &Path) {
    let fixture = token_fixture();
    assert!(fixture.cases.len() >= 500, "too few strings in the fixture");
    assert!(fixture.versions.contains_key("open_clip_torch"));
    let tokenizer = ClipTokenizer::from_file(tokenizer_json, fixture.context_length).unwrap();
    let mut mismatches = Vec::new();
    for case in &fixture.cases {
        let mut expected = case.ids.clone();
        expected.resize(fixture.context_length, 0);
        let found = tokenizer.encode(&case.text).unwrap();
        if found != expected {
            mismatches.push(format!(
                "{:?}\n  open_clip: {:?}\n  keyscribe: {:?}",
                case.text,
                case.ids,
                trim_padding(&found)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} strings get other ids than open_clip's; the first:\n{}",
        mismatches.len(),
        fixture.cases.len(),
        mismatches[..mismatches.len().min(12)].join("\n")
    );
}

#[test]
fn every_fixture_string_gets_open_clips_ids() {
    assert_open_clips_ids(&hub_tokenizer_json());
}

/// keyscribe cleans and splits text as open_clip does, whatever normaliser and pre-tokenizer
/// the file carries: here none, and one that splits every punctuation mark off alone (so
/// `'!` would become two words), change no id.
#[test]
fn ids_do_not_depend_on_the_files_normaliser_or_pre_tokenizer() {
    let text = std::fs::read_to_string(hub_tokenizer_json()).unwrap();
    let mut tokenizer: serde_json::Value = serde_json::from_str(&text).unwrap();
    tokenizer["normalizer"] = serde_json::Value::Null;
    tokenizer["pre_tokenizer"] = json!({
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": r"\p{L}+|\p{N}|[^\s\p{L}\p{N}]"},
                "behavior": "Removed",
                "invert": true
            },
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, serde_json::to_string(&tokenizer).unwrap()).unwrap();
    assert_open_clips_ids(&path);
}

#[test]
fn a_file_without_clips_word_ends_is_refused() {
    let text = std::fs::read_to_string(hub_tokenizer_json()).unwrap();
    let mut tokenizer: serde_json::Value = serde_json::from_str(&text).unwrap();
    tokenizer["model"]["end_of_word_suffix"] = serde_json::Value::Null;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, serde_json::to_string(&tokenizer).unwrap()).unwrap();
    let error = ClipTokenizer::from_file(&path, 77).unwrap_err().to_string();
    assert!(
        error.contains("tokenizer.json") && error.contains("</w>"),
        "{error}"
    );
}

/// Cosine similarity of two vectors.
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Rows minus their mean row: what depends on the text.
fn centred(rows: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let count = rows.len() as f32;
    let mean: Vec<f32> = (0..rows[0].len())
        .map(|j| rows.iter().map(|row| row[j]).sum::<f32>() / count)
        .collect();
    rows.iter()
        .map(|row| row.iter().zip(&mean).map(|(v, m)| v - m).collect())
        .collect()
}

/// The texts whose ids the Hub's tokenizer file gets wrong (punctuation runs, open_clip's
/// `<end_of_text>`, HTML 5 entities, `'ſ`) embed as open_clip embeds them.
#[test]
fn text_embeddings_of_hard_texts_match_open_clip() {
    let expected = token_fixture().text_embeddings;
    let model = MobileClip::load(&fixtures().join(&expected.model_dir), &Device::Cpu).unwrap();
    let texts: Vec<&str> = expected.texts.iter().map(String::as_str).collect();
    let found = model.embed_texts(&texts).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(found.len(), expected.embeddings.len());
    let (found_centred, expected_centred) = (centred(&found), centred(&expected.embeddings));
    let figures: Vec<(f64, f64)> = (0..texts.len())
        .map(|index| {
            (
                cosine(&found[index], &expected.embeddings[index]),
                cosine(&found_centred[index], &expected_centred[index]),
            )
        })
        .collect();
    let report: Vec<String> = texts
        .iter()
        .zip(&figures)
        .map(|(text, (raw, centred))| format!("{text:?}: cosine {raw:.6}, centred {centred:.6}"))
        .collect();
    assert!(
        figures
            .iter()
            .all(|&(raw, centred)| raw >= 0.9999 && centred >= 0.9999),
        "text embeddings differ from open_clip's:\n{}",
        report.join("\n")
    );
}
