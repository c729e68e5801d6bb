//! Caption search: BM25 over the scenes' captions.
//!
//! Captions and queries are cut into lower-case words (runs of letters and digits); a
//! trailing plural `s` is dropped from words longer than three letters (`dogs` -> `dog`, but
//! not `glass` or `bus`), so that "dogs on a beach" finds "A dog runs on the beach".

use std::collections::HashMap;

/// BM25 term-frequency saturation.
const K1: f32 = 1.2;
/// BM25 length normalisation.
const B: f32 = 0.75;

/// An inverted index over captions, one document per scene.
#[derive(Debug, Default)]
pub(crate) struct CaptionIndex {
    /// For each word, the scenes that use it and how often.
    postings: HashMap<String, Vec<(u32, u16)>>,
    /// Words per caption.
    lengths: Vec<u16>,
    average_length: f32,
}

impl CaptionIndex {
    /// Indexes `captions`; the i-th caption is scene `i`.
    pub fn new<'a>(captions: impl IntoIterator<Item = &'a str>) -> Self {
        let mut postings: HashMap<String, Vec<(u32, u16)>> = HashMap::new();
        let mut lengths = Vec::new();
        for (scene, caption) in captions.into_iter().enumerate() {
            let mut counts: HashMap<String, u16> = HashMap::new();
            let mut length = 0u16;
            for word in words(caption) {
                *counts.entry(word).or_default() += 1;
                length = length.saturating_add(1);
            }
            for (word, count) in counts {
                postings
                    .entry(word)
                    .or_default()
                    .push((scene as u32, count));
            }
            lengths.push(length);
        }
        let total: f64 = lengths.iter().map(|&l| f64::from(l)).sum();
        let average_length = if lengths.is_empty() {
            1.0
        } else {
            (total / lengths.len() as f64).max(1.0) as f32
        };
        CaptionIndex {
            postings,
            lengths,
            average_length,
        }
    }

    /// Every scene whose caption shares a word with `query`, with its score in `[0, 1]`: its
    /// BM25 score divided by that of a caption of average length holding every query word
    /// once, capped at 1. A caption with all of the query's words scores about 1, one with
    /// only its common words little.
    pub fn scores(&self, query: &str) -> HashMap<u32, f32> {
        let mut query_words: Vec<String> = words(query).collect();
        query_words.sort();
        query_words.dedup();
        let documents = self.lengths.len() as f32;
        let mut scores: HashMap<u32, f32> = HashMap::new();
        let mut most = 0.0;
        for word in &query_words {
            let postings = self.postings.get(word).map_or(&[][..], Vec::as_slice);
            let frequency = postings.len() as f32;
            let idf = ((documents - frequency + 0.5) / (frequency + 0.5) + 1.0).ln();
            most += idf;
            for &(scene, count) in postings {
                let count = f32::from(count);
                let length = f32::from(self.lengths[scene as usize]) / self.average_length;
                let weight = count * (K1 + 1.0) / (count + K1 * (1.0 - B + B * length));
                *scores.entry(scene).or_default() += idf * weight;
            }
        }
        if most > 0.0 {
            scores
                .values_mut()
                .for_each(|score| *score = (*score / most).min(1.0));
        }
        scores
    }
}

/// The words of a text, lower-cased, with plural `s` folded.
pub(crate) fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| {
            let mut word = word.to_lowercase();
            let plural = word.chars().count() > 3
                && word.ends_with('s')
                && !(word.ends_with("ss") || word.ends_with("us") || word.ends_with("is"));
            if plural {
                word.pop();
            }
            word
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lower_cased_and_plurals_folded() {
        let found: Vec<String> = words("Two DOGS, a bus & glass: it's 3D!").collect();
        assert_eq!(found, ["two", "dog", "a", "bus", "glass", "it", "s", "3d"]);
    }

    #[test]
    fn rare_words_outweigh_common_ones_and_a_full_match_scores_near_one() {
        let index = CaptionIndex::new([
            "a robot standing on the surface of mars",
            "a crowd watching a screen",
            "a man on a bicycle",
            "a dog on a beach",
        ]);
        let scores = index.scores("robot on mars");
        assert_eq!(scores.len(), 3);
        let robot = scores[&0];
        assert!(robot > 0.8 && robot <= 1.0, "{robot}");
        assert!(scores[&2] < 0.2 && scores[&3] < 0.2);
        assert!(!scores.contains_key(&1));
        // A word no caption has lowers every score but breaks nothing.
        assert!(index.scores("robot on mars tonight")[&0] < robot);
        assert!(index.scores("").is_empty());
    }

    #[test]
    fn an_empty_index_has_no_scores() {
        let index = CaptionIndex::new(std::iter::empty());
        assert!(index.scores("anything").is_empty());
    }
}
