//! Synthetic video libraries for the search tests and benchmark.
//!
//! Uniformly random vectors would make any index look either useless or perfect, so these
//! imitate what MobileCLIP2 gives for real videos:
//!
//! - every image embedding shares a common direction (unrelated pictures are about 0.3
//!   similar), as CLIP image embeddings sit in a narrow cone;
//! - a video is a sequence of scenes (2 to about 40 frames at 2 per second); each scene is
//!   a mix of two visual concepts from a vocabulary of a few thousand, drawn from the 20
//!   concepts its video is about, plus a scene-specific part;
//! - frames of a scene drift slowly and carry per-frame noise (consecutive frames about 0.9
//!   similar);
//! - a text query is a concept plus a large direction shared by all text embeddings (the
//!   gap between CLIP's text and image embeddings), so the best frames score only about
//!   0.2, as text-to-image similarities do.
//!
//! Everything is derived from a seed and the video's number, so a library can be generated
//! again, video by video, without holding it in memory.

use keyscribe::search::SceneCaption;
use keyscribe::time::MediaTime;

/// Frames per second of the synthetic sampling.
pub const SAMPLE_FPS: f64 = 2.0;

/// A SplitMix64 stream with cheap approximately normal values.
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Self {
        Random(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n
    }

    /// Mean 0, variance 1: the sum of four 16-bit uniforms, rescaled (Irwin–Hall).
    pub fn normal(&mut self) -> f32 {
        let bits = self.next_u64();
        let sum: u64 = (0..4).map(|i| (bits >> (16 * i)) & 0xFFFF).sum();
        ((sum as f32 / 65535.0) - 2.0) * 3.0f32.sqrt()
    }

    /// A random vector of norm about `norm`.
    pub fn noise(&mut self, dim: usize, norm: f32) -> Vec<f32> {
        let scale = norm / (dim as f32).sqrt();
        (0..dim).map(|_| scale * self.normal()).collect()
    }
}

pub fn normalise(vector: &mut [f32]) {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    vector.iter_mut().for_each(|v| *v /= norm);
}

fn add(into: &mut [f32], weight: f32, vector: &[f32]) {
    into.iter_mut()
        .zip(vector)
        .for_each(|(a, b)| *a += weight * b);
}

/// One generated video.
pub struct Video {
    pub name: String,
    pub duration: MediaTime,
    pub times: Vec<MediaTime>,
    /// `[frames, dim]` row-major, L2-normalised.
    pub embeddings: Vec<f32>,
    pub scenes: Vec<SceneCaption>,
}

/// One generated text query.
pub struct Query {
    pub embedding: Vec<f32>,
    pub text: String,
}

/// The shared structure of a synthetic library.
pub struct Library {
    pub dim: usize,
    seed: u64,
    image_direction: Vec<f32>,
    text_direction: Vec<f32>,
    concepts: Vec<Vec<f32>>,
}

impl Library {
    pub fn new(dim: usize, concepts: usize, seed: u64) -> Self {
        let mut random = Random::new(seed);
        let unit = |random: &mut Random| {
            let mut v = random.noise(dim, 1.0);
            normalise(&mut v);
            v
        };
        let image_direction = unit(&mut random);
        let text_direction = unit(&mut random);
        let concepts = (0..concepts).map(|_| unit(&mut random)).collect();
        Library {
            dim,
            seed,
            image_direction,
            text_direction,
            concepts,
        }
    }

    /// The word captions use for a concept.
    pub fn word(concept: usize) -> String {
        format!("thing{concept}")
    }

    /// Video number `index`, `frames` frames long.
    pub fn video(&self, index: u64, frames: usize) -> Video {
        let mut random = Random::new(self.seed.wrapping_mul(31).wrapping_add(index + 1));
        let topics: Vec<usize> = (0..20).map(|_| random.below(self.concepts.len())).collect();
        let mut embeddings = Vec::with_capacity(frames * self.dim);
        let mut scenes = Vec::new();
        let mut frame = 0;
        while frame < frames {
            let length =
                (2 + (-10.0 * random.uniform().max(1e-12).ln()) as usize).min(frames - frame);
            let (first, second) = (topics[random.below(20)], topics[random.below(20)]);
            let mut scene = random.noise(self.dim, 0.45);
            add(&mut scene, 0.55, &self.image_direction);
            add(&mut scene, 0.5, &self.concepts[first]);
            add(&mut scene, 0.3, &self.concepts[second]);
            let drift = random.noise(self.dim, 0.02);
            for step in 0..length {
                let mut embedding = random.noise(self.dim, 0.2);
                add(&mut embedding, 1.0, &scene);
                add(&mut embedding, step as f32, &drift);
                normalise(&mut embedding);
                embeddings.extend_from_slice(&embedding);
            }
            scenes.push(SceneCaption {
                start: time(frame),
                end: time(frame + length),
                caption: format!("a {} next to a {}", Self::word(first), Self::word(second)),
            });
            frame += length;
        }
        Video {
            name: format!("video{index:05}.mp4"),
            duration: time(frames),
            times: (0..frames).map(time).collect(),
            embeddings,
            scenes,
        }
    }

    /// Query number `index`: a text embedding for one concept, and its word.
    pub fn query(&self, index: u64) -> Query {
        let mut random = Random::new(self.seed.wrapping_mul(7919).wrapping_add(!index));
        let concept = random.below(self.concepts.len());
        let mut embedding = random.noise(self.dim, 0.6);
        add(&mut embedding, 0.35, &self.concepts[concept]);
        add(&mut embedding, 0.9, &self.text_direction);
        normalise(&mut embedding);
        Query {
            embedding,
            text: Self::word(concept),
        }
    }
}

/// A frame's time at the synthetic sampling rate.
pub fn time(frame: usize) -> MediaTime {
    MediaTime::from_seconds(frame as f64 / SAMPLE_FPS)
}

/// The `k` rows of `embeddings` (`[rows, dim]`) most similar to `query`, exactly, as
/// (similarity, row + `first_row`), merged into `best` (kept sorted, best first).
pub fn exact_top(
    query: &[f32],
    embeddings: &[f32],
    first_row: usize,
    k: usize,
    best: &mut Vec<(f32, usize)>,
) {
    let dim = query.len();
    for (row, embedding) in embeddings.chunks_exact(dim).enumerate() {
        let similarity: f32 = embedding.iter().zip(query).map(|(a, b)| a * b).sum();
        if best.len() < k || similarity > best[best.len() - 1].0 {
            let at = best.partition_point(|(s, _)| *s >= similarity);
            best.insert(at, (similarity, first_row + row));
            best.truncate(k);
        }
    }
}
