//! One query over several index files: a library split into index files (one per group of
//! shards) stays searchable as one.

use super::{SearchConfig, SearchError, SearchHit, SearchIndex};

/// The `top_k` best results of `indexes` together: each index's own first `top_k` (which
/// do not depend on `top_k`), merged by score, then video and start, as one index ranks
/// them. A video lives in one index file, so its ranges are never split between files;
/// caption scores are weighed against the captions of the file that holds the scene.
pub fn search_all(
    indexes: &[SearchIndex],
    text_embedding: &[f32],
    query_text: &str,
    top_k: usize,
    config: &SearchConfig,
) -> Result<Vec<SearchHit>, SearchError> {
    let mut hits = Vec::new();
    for index in indexes {
        hits.extend(index.search(text_embedding, query_text, top_k, config)?);
    }
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.video.cmp(&b.video))
            .then_with(|| a.start.seconds().total_cmp(&b.start.seconds()))
    });
    hits.truncate(top_k);
    Ok(hits)
}
