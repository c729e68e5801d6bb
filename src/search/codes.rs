//! One-bit codes of frame embeddings, and the scan that ranks every code against a query.
//!
//! A frame embedding `x` is turned by a fixed random rotation `R` (random sign flips and a
//! fast Walsh–Hadamard transform, twice), which spreads its energy evenly over the
//! coordinates, and centred on the library's mean `m`. Its code keeps the sign of each
//! coordinate of `y = R(x - m)` (`P` bits, `P` the dimension rounded up to a power of two)
//! and one number, `f`.
//!
//! For a query `q`, with `z = R q`, the similarity is `q·x = (Rq)·(Rm) + y·z`, and `y·z` is estimated from the signs `s` as `f * Σ sᵢ zᵢ` with
//! `f = |y|² / |y|₁`. (This is the unbiased sign-code estimator: the normalised sign vector
//! `s/√P` has cosine `|y|₁ / (√P |y|)` with `y`, and dividing by that cosine corrects for it.)
//! The query side is quantised to 4 bits per coordinate, so `Σ sᵢ zᵢ` is a handful of
//! AND + popcount operations per 64 coordinates: the scan reads 64 bytes per 512-d frame.
//!
//! The estimate only chooses candidates; their scores are recomputed from the stored 16-bit
//! rotated vectors (see the module above).

use std::cmp::Ordering;

use bytemuck::{Pod, Zeroable};

/// Bits of query precision in the scan.
const QUERY_BITS: usize = 4;

/// The fixed random rotation applied to every stored embedding and every query: random sign
/// flips and a normalised Walsh–Hadamard transform, twice. It keeps inner products and
/// spreads each vector's energy evenly over the coordinates, so that a few large
/// coordinates (common in CLIP embeddings) neither dominate the sign codes nor coarsen the
/// 16-bit vectors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rotation {
    seed: u64,
    dim: usize,
    padded: usize,
    first_signs: Vec<f32>,
    second_signs: Vec<f32>,
}

impl Rotation {
    /// The rotation of `dim`-dimensional vectors drawn from `seed`; rotated vectors have
    /// `dim` rounded up to a power of two (at least 64) coordinates.
    pub fn new(dim: usize, seed: u64) -> Self {
        let padded = dim.next_power_of_two().max(64);
        let mut random = SplitMix64(seed);
        let mut signs = || {
            (0..padded)
                .map(|_| if random.next() & 1 == 0 { 1.0 } else { -1.0 })
                .collect::<Vec<f32>>()
        };
        let first_signs = signs();
        let second_signs = signs();
        Rotation {
            seed,
            dim,
            padded,
            first_signs,
            second_signs,
        }
    }

    /// Coordinates of a vector before rotation.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The seed the rotation was drawn from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Coordinates of a rotated vector.
    pub fn padded(&self) -> usize {
        self.padded
    }

    /// Rotates a `dim`-dimensional vector.
    pub fn apply(&self, vector: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; self.padded];
        out[..self.dim].copy_from_slice(&vector[..self.dim]);
        for (value, sign) in out.iter_mut().zip(&self.first_signs) {
            *value *= sign;
        }
        walsh_hadamard(&mut out);
        for (value, sign) in out.iter_mut().zip(&self.second_signs) {
            *value *= sign;
        }
        walsh_hadamard(&mut out);
        let normalise = 1.0 / self.padded as f32;
        out.iter_mut().for_each(|value| *value *= normalise);
        out
    }
}

/// The centre that rotated embeddings are measured from before taking their signs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CodeBasis {
    centre: Vec<f32>,
}

/// The numbers stored with each code.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub(crate) struct CodeFactors {
    /// `|y|² / |y|₁`: turns a sum of signed query coordinates into a similarity.
    pub scale: f32,
    /// How many sign bits are set.
    pub ones: u32,
}

/// A query prepared for scanning codes: its rotated coordinates as 4 bit planes.
#[derive(Debug, Clone)]
pub(crate) struct PreparedQuery {
    /// For each 64-bit word of a code, the query's bit planes (least significant first).
    planes: Vec<[u64; QUERY_BITS]>,
    /// The smallest rotated coordinate (quantisation offset).
    low: f32,
    /// The quantisation step.
    step: f32,
    /// Sum of the quantised rotated coordinates.
    total: f32,
    /// `q·m`, the part of every similarity that comes from the centre.
    centre_similarity: f32,
}

impl CodeBasis {
    /// A basis centred on `centre`, a rotated vector (the library's mean, rotated).
    pub fn new(centre: Vec<f32>) -> Self {
        CodeBasis { centre }
    }

    /// 64-bit words per code.
    pub fn words(&self) -> usize {
        self.centre.len() / 64
    }

    /// The centre, rotated.
    pub fn centre(&self) -> &[f32] {
        &self.centre
    }

    /// Encodes one rotated embedding into `code` (`words()` words).
    pub fn encode(&self, rotated: &[f32], code: &mut [u64]) -> CodeFactors {
        code.fill(0);
        let (mut squares, mut absolute) = (0.0f32, 0.0f32);
        for (index, (value, centre)) in rotated.iter().zip(&self.centre).enumerate() {
            let centred = value - centre;
            if centred > 0.0 {
                code[index / 64] |= 1 << (index % 64);
            }
            squares += centred * centred;
            absolute += centred.abs();
        }
        CodeFactors {
            ones: code.iter().map(|word| word.count_ones()).sum::<u32>(),
            scale: if absolute > 0.0 {
                squares / absolute
            } else {
                0.0
            },
        }
    }

    /// Prepares a rotated query for [`scan`].
    pub fn prepare(&self, rotated: &[f32]) -> PreparedQuery {
        let low = rotated.iter().copied().fold(f32::INFINITY, f32::min);
        let high = rotated.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let levels = ((1 << QUERY_BITS) - 1) as f32;
        let step = if high > low {
            (high - low) / levels
        } else {
            1.0
        };
        let mut planes = vec![[0u64; QUERY_BITS]; self.words()];
        let mut total = 0.0;
        for (index, value) in rotated.iter().enumerate() {
            let level = ((value - low) / step).round().clamp(0.0, levels) as u64;
            total += low + step * level as f32;
            for (bit, plane) in planes[index / 64].iter_mut().enumerate() {
                *plane |= ((level >> bit) & 1) << (index % 64);
            }
        }
        PreparedQuery {
            planes,
            low,
            step,
            total,
            centre_similarity: rotated.iter().zip(&self.centre).map(|(q, m)| q * m).sum(),
        }
    }
}

/// In-place fast Walsh–Hadamard transform (unnormalised); the length is a power of two.
fn walsh_hadamard(values: &mut [f32]) {
    let mut half = 1;
    while half < values.len() {
        for block in values.chunks_exact_mut(2 * half) {
            let (left, right) = block.split_at_mut(half);
            for (a, b) in left.iter_mut().zip(right.iter_mut()) {
                let (x, y) = (*a, *b);
                *a = x + y;
                *b = x - y;
            }
        }
        half *= 2;
    }
}

/// A candidate from the scan: estimated similarity and row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Estimate {
    pub similarity: f32,
    pub row: u32,
}

impl Eq for Estimate {}

impl PartialOrd for Estimate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Estimate {
    /// Best first: higher similarity, then lower row.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .similarity
            .total_cmp(&self.similarity)
            .then(self.row.cmp(&other.row))
    }
}

crate::kernels::dispatch! {
    /// The `keep` rows of `first_row..` with the highest estimated similarity to `query`, best
    /// first. `codes` holds `words` words per row; `factors` one entry per row. Compiled for
    /// each instruction-set level ([`crate::kernels::Isa`]): both x86 levels count bits with
    /// the POPCNT instruction.
    pub(crate) fn scan(
        query: &PreparedQuery,
        codes: &[u64],
        factors: &[CodeFactors],
        first_row: usize,
        keep: usize,
    ) -> Vec<Estimate> {
        avx512: scan_any_width,
        avx2: scan_any_width,
        portable: scan_any_width,
    }
}

/// Dispatches to a kernel unrolled for the common code widths (512 and 1024 bits).
#[inline(always)]
fn scan_any_width(
    query: &PreparedQuery,
    codes: &[u64],
    factors: &[CodeFactors],
    first_row: usize,
    keep: usize,
) -> Vec<Estimate> {
    match query.planes.len() {
        8 => scan_fixed::<8>(query, codes, factors, first_row, keep),
        16 => scan_fixed::<16>(query, codes, factors, first_row, keep),
        _ => scan_rows(query, codes, factors, first_row, keep, weighted_count),
    }
}

#[inline(always)]
fn scan_fixed<const WORDS: usize>(
    query: &PreparedQuery,
    codes: &[u64],
    factors: &[CodeFactors],
    first_row: usize,
    keep: usize,
) -> Vec<Estimate> {
    scan_rows(
        query,
        codes,
        factors,
        first_row,
        keep,
        |code, planes| match (
            <&[u64; WORDS]>::try_from(code),
            <&[[u64; QUERY_BITS]; WORDS]>::try_from(planes),
        ) {
            (Ok(code), Ok(planes)) => weighted_count(code, planes),
            _ => weighted_count(code, planes),
        },
    )
}

/// `Σ_bits 2^bit · popcount(code & plane_bit)`: the sum of the quantised query coordinates
/// where the code's sign bit is set.
#[inline(always)]
fn weighted_count(code: &[u64], planes: &[[u64; QUERY_BITS]]) -> u32 {
    let mut weighted = 0;
    for (word, planes) in code.iter().zip(planes) {
        weighted += (word & planes[0]).count_ones()
            + 2 * (word & planes[1]).count_ones()
            + 4 * (word & planes[2]).count_ones()
            + 8 * (word & planes[3]).count_ones();
    }
    weighted
}

#[inline(always)]
fn scan_rows(
    query: &PreparedQuery,
    codes: &[u64],
    factors: &[CodeFactors],
    first_row: usize,
    keep: usize,
    count: impl Fn(&[u64], &[[u64; QUERY_BITS]]) -> u32,
) -> Vec<Estimate> {
    let words = query.planes.len();
    if keep == 0 || words == 0 {
        return Vec::new();
    }
    // Estimates above `floor` collect in `kept`; when it holds twice `keep`, the best `keep`
    // stay and `floor` rises to the worst of them.
    let mut kept: Vec<Estimate> = Vec::with_capacity(2 * keep);
    let mut floor = f32::NEG_INFINITY;
    let twice_step = 2.0 * query.step;
    let twice_low = 2.0 * query.low;
    for (offset, (code, factor)) in codes.chunks_exact(words).zip(factors).enumerate() {
        let weighted = count(code, &query.planes);
        // Σ sᵢ zᵢ = 2 Σ_{sᵢ=+1} zᵢ - Σ zᵢ, with Σ_{sᵢ=+1} zᵢ = low·ones + step·weighted.
        let signed_sum =
            twice_low * factor.ones as f32 + twice_step * weighted as f32 - query.total;
        let similarity = query.centre_similarity + factor.scale * signed_sum;
        if similarity > floor {
            kept.push(Estimate {
                similarity,
                row: (first_row + offset) as u32,
            });
            if kept.len() == 2 * keep {
                floor = keep_best(&mut kept, keep);
            }
        }
    }
    keep_best(&mut kept, keep);
    kept.sort_unstable();
    kept
}

/// Truncates `estimates` to its `keep` best (in no particular order) and returns the worst
/// similarity kept.
fn keep_best(estimates: &mut Vec<Estimate>, keep: usize) -> f32 {
    if estimates.len() > keep {
        estimates.select_nth_unstable(keep - 1);
        estimates.truncate(keep);
    }
    estimates
        .iter()
        .map(|estimate| estimate.similarity)
        .fold(f32::INFINITY, f32::min)
}

/// A small deterministic generator (SplitMix64) for the rotation's signs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIM: usize = 512;

    fn random_unit(random: &mut SplitMix64, dim: usize) -> Vec<f32> {
        let vector: Vec<f32> = (0..dim)
            .map(|_| (random.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            .collect();
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        vector.iter().map(|v| v / norm).collect()
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    /// Embeddings that share a common direction, as image embeddings do.
    fn library(random: &mut SplitMix64, rows: usize) -> Vec<Vec<f32>> {
        let common = random_unit(random, DIM);
        (0..rows)
            .map(|_| {
                let own = random_unit(random, DIM);
                let mixed: Vec<f32> = common
                    .iter()
                    .zip(&own)
                    .map(|(c, o)| 0.6 * c + 0.8 * o)
                    .collect();
                let norm = dot(&mixed, &mixed).sqrt();
                mixed.iter().map(|v| v / norm).collect()
            })
            .collect()
    }

    fn encode_all(basis: &CodeBasis, rows: &[Vec<f32>]) -> (Vec<u64>, Vec<CodeFactors>) {
        let mut codes = vec![0u64; rows.len() * basis.words()];
        let factors = rows
            .iter()
            .zip(codes.chunks_exact_mut(basis.words()))
            .map(|(row, code)| basis.encode(row, code))
            .collect();
        (codes, factors)
    }

    #[test]
    fn the_rotation_preserves_lengths_and_inner_products() {
        let mut random = SplitMix64(1);
        for dim in [512, 300] {
            let rotation = Rotation::new(dim, 7);
            let (a, b) = (random_unit(&mut random, dim), random_unit(&mut random, dim));
            let (ra, rb) = (rotation.apply(&a), rotation.apply(&b));
            assert_eq!(ra.len(), dim.next_power_of_two());
            assert!((dot(&ra, &ra) - 1.0).abs() < 1e-5);
            assert!((dot(&ra, &rb) - dot(&a, &b)).abs() < 1e-5);
            assert!(ra.iter().zip(&a).any(|(x, y)| (x - y).abs() > 1e-3));
        }
    }

    #[test]
    fn estimates_are_unbiased_and_as_precise_as_sign_codes_allow() {
        let mut random = SplitMix64(2);
        let rotation = Rotation::new(DIM, 11);
        let rows: Vec<Vec<f32>> = library(&mut random, 2000)
            .iter()
            .map(|row| rotation.apply(row))
            .collect();
        let mut centre = vec![0.0f32; DIM];
        for row in &rows {
            centre
                .iter_mut()
                .zip(row)
                .for_each(|(c, v)| *c += v / rows.len() as f32);
        }
        let basis = CodeBasis::new(centre.clone());
        let (codes, factors) = encode_all(&basis, &rows);
        let query = rotation.apply(&random_unit(&mut random, DIM));
        let prepared = basis.prepare(&query);
        let estimates = scan(&prepared, &codes, &factors, 0, rows.len());
        assert_eq!(estimates.len(), rows.len());

        // With y Gaussian-like, the sign vector's cosine with y is about
        // sqrt(2/π), and the estimate of y·z has a standard deviation of about
        // |y| |z| sqrt(1 - 2/π) / sqrt(2/π) / sqrt(P).
        let alignment = (2.0 / std::f32::consts::PI).sqrt();
        let (mut bias, mut squared, mut predicted) = (0.0f32, 0.0f32, 0.0f32);
        for estimate in &estimates {
            let row = &rows[estimate.row as usize];
            let exact = dot(&query, row);
            let centred: Vec<f32> = row.iter().zip(&centre).map(|(x, m)| x - m).collect();
            let spread = dot(&centred, &centred).sqrt() * (1.0 - alignment * alignment).sqrt()
                / alignment
                / (DIM as f32).sqrt();
            bias += estimate.similarity - exact;
            squared += (estimate.similarity - exact).powi(2);
            predicted += spread * spread;
        }
        let n = rows.len() as f32;
        let (bias, error, predicted) = (bias / n, (squared / n).sqrt(), (predicted / n).sqrt());
        assert!(
            bias.abs() < 0.1 * predicted,
            "bias {bias}, predicted spread {predicted}"
        );
        // 4-bit query quantisation adds a little on top of the sign codes' own error.
        assert!(
            error < 1.2 * predicted,
            "error {error}, predicted {predicted}"
        );
        assert!(
            error > 0.5 * predicted,
            "error {error}, predicted {predicted}"
        );
    }

    #[test]
    fn the_scan_keeps_the_best_estimates_best_first() {
        let mut random = SplitMix64(3);
        let rows = library(&mut random, 3000);
        let basis = CodeBasis::new(vec![0.0; DIM]);
        let (codes, factors) = encode_all(&basis, &rows);
        let prepared = basis.prepare(&random_unit(&mut random, DIM));
        let all = scan(&prepared, &codes, &factors, 100, rows.len());
        assert!(all
            .windows(2)
            .all(|pair| pair[0].similarity >= pair[1].similarity));
        for keep in [1, 10, 700] {
            assert_eq!(scan(&prepared, &codes, &factors, 100, keep), all[..keep]);
        }
        assert_eq!(all.iter().map(|e| e.row).min(), Some(100));
        assert!(scan(&prepared, &codes, &factors, 0, 0).is_empty());
    }
}
