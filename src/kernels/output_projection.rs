//! A language model's output projection (hidden state -> one logit per vocabulary token),
//! and its greedy token found without reading every weight at full precision.
//!
//! Greedy decoding needs only the largest logit, yet the full product reads the whole
//! `[vocab, hidden]` weight for every token: for FastVLM-0.5B that is 272 MB in bf16 (a
//! quarter of what a decoded token reads) or 544 MB in f32. [`OutputProjection::argmax`]
//! first reads a copy of the weight rounded to int8 with one scale per row, which puts each
//! logit within a known distance of its int8 estimate. Only the rows whose upper bound
//! reaches the best lower bound can hold the largest logit; they are computed exactly, with
//! the same arithmetic as [`OutputProjection::forward`], so the token is always the one the
//! full logits' argmax picks. Typically a handful of rows remain, and a decoded token reads
//! the int8 copy (136 MB) instead of the weight.

use std::mem::MaybeUninit;
use std::sync::Arc;

use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

use super::memory::{assume_init, uninit_vec, with_data, with_f32};
use super::product::BF16_DIRECT_MAX_ROWS;
use super::simd::{dot, MulAdd, Widen};

/// Output features computed per parallel task.
const FEATURES_PER_TASK: usize = 256;

/// The int8 estimate of a logit is within `ESTIMATE_BOUND * scale * Σ|x|` of the exact
/// logit, as either is computed in f32. Rounding to the nearest int8 step moves each weight
/// by at most half a step (`scale / 2`); the rest (1/64) is a margin, more than 30 times
/// the f32 rounding of both dot products for hidden sizes up to 8192.
const ESTIMATE_BOUND: f32 = 0.5 + 1.0 / 64.0;

/// When more than this fraction of rows would have to be computed exactly, all are.
const MAX_CANDIDATE_FRACTION: usize = 16;

/// A row-major `[features, inputs]` weight in one of the element types it may have.
#[derive(Clone, Copy)]
enum RowMajor<'a> {
    F32(&'a [f32]),
    Bf16(&'a [half::bf16]),
    Int8(&'a [i8]),
}

impl<'a> RowMajor<'a> {
    /// Row `index` alone, as a weight of one feature.
    fn row(self, index: usize, inputs: usize) -> Self {
        let range = index * inputs..(index + 1) * inputs;
        match self {
            Self::F32(w) => Self::F32(&w[range]),
            Self::Bf16(w) => Self::Bf16(&w[range]),
            Self::Int8(w) => Self::Int8(&w[range]),
        }
    }
}

/// Features `first..first + out[row].len()` of `weight` (rows of `inputs`) times each
/// input row of `x`: `out[row][feature - first]`.
#[inline(always)]
fn feature_rows<M: MulAdd, W: Widen>(
    weight: &[W],
    inputs: usize,
    x: &[f32],
    first: usize,
    out: &mut [&mut [MaybeUninit<f32>]],
) {
    let count = out.first().map_or(0, |row| row.len());
    for feature in first..first + count {
        let w = &weight[feature * inputs..(feature + 1) * inputs];
        for (row, out) in out.iter_mut().enumerate() {
            let value = dot::<M, W>(w, &x[row * inputs..(row + 1) * inputs]);
            out[feature - first].write(value);
        }
    }
}

/// [`feature_rows`] for whichever element type `weight` holds.
#[inline(always)]
fn dot_rows_generic<M: MulAdd>(
    weight: RowMajor<'_>,
    inputs: usize,
    x: &[f32],
    first: usize,
    out: &mut [&mut [MaybeUninit<f32>]],
) {
    match weight {
        RowMajor::F32(w) => feature_rows::<M, _>(w, inputs, x, first, out),
        RowMajor::Bf16(w) => feature_rows::<M, _>(w, inputs, x, first, out),
        RowMajor::Int8(w) => feature_rows::<M, _>(w, inputs, x, first, out),
    }
}

dispatch! {
    /// [`dot_rows_generic`] at the active instruction set.
    fn dot_rows => dot_rows_generic(
        weight: RowMajor<'_>,
        inputs: usize,
        x: &[f32],
        first: usize,
        out: &mut [&mut [MaybeUninit<f32>]],
    )
}

/// The dot product of a one-feature `weight` with the input row `x`.
#[inline(always)]
fn row_dot_generic<M: MulAdd>(weight: RowMajor<'_>, x: &[f32]) -> f32 {
    match weight {
        RowMajor::F32(w) => dot::<M, _>(w, x),
        RowMajor::Bf16(w) => dot::<M, _>(w, x),
        RowMajor::Int8(w) => dot::<M, _>(w, x),
    }
}

dispatch! {
    /// [`row_dot_generic`] at the active instruction set.
    fn row_dot => row_dot_generic(weight: RowMajor<'_>, x: &[f32]) -> f32
}

/// Every feature of `weight` (`features` rows of `inputs`) times each row of `x`, in
/// parallel tasks of [`FEATURES_PER_TASK`] features: `[rows, features]`.
fn all_features(weight: RowMajor<'_>, features: usize, inputs: usize, x: &[f32]) -> Vec<f32> {
    let rows = x.len() / inputs.max(1);
    let mut out = uninit_vec::<f32>(rows * features);
    // A task's features are a slice of every row: gathered per task, the slices are
    // disjoint by construction.
    let mut tasks: Vec<Vec<&mut [MaybeUninit<f32>]>> = (0..features.div_ceil(FEATURES_PER_TASK))
        .map(|_| Vec::with_capacity(rows))
        .collect();
    for row in out.chunks_mut(features.max(1)) {
        for (task, part) in tasks.iter_mut().zip(row.chunks_mut(FEATURES_PER_TASK)) {
            task.push(part);
        }
    }
    tasks
        .into_par_iter()
        .enumerate()
        .for_each(|(task, mut out)| {
            dot_rows(weight, inputs, x, task * FEATURES_PER_TASK, &mut out);
        });
    // SAFETY: the tasks covered every feature of every row.
    unsafe { assume_init(out) }
}

/// The index of the largest value, the first of equal ones; NaN never wins.
fn first_max(values: impl IntoIterator<Item = (usize, f32)>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (index, value) in values {
        if value > best.1 {
            best = (index, value);
        }
    }
    best.0
}

/// A weight rounded to int8, one scale per row: row `j` is `scales[j] * values[j, ..]`.
#[derive(Debug)]
struct Int8Rows {
    values: Vec<i8>,
    scales: Vec<f32>,
}

impl Int8Rows {
    /// Rounds each row of `weight` (`features` rows of `inputs`) to the int8 step that
    /// maps its largest magnitude to 127.
    fn quantize(weight: RowMajor<'_>, inputs: usize) -> Self {
        match weight {
            RowMajor::F32(w) => Self::quantize_rows(w, inputs),
            RowMajor::Bf16(w) => Self::quantize_rows(w, inputs),
            RowMajor::Int8(w) => Self::quantize_rows(w, inputs),
        }
    }

    /// [`Self::quantize`] for one element type.
    fn quantize_rows<W: Widen + Sync>(weight: &[W], inputs: usize) -> Self {
        let features = weight.len() / inputs.max(1);
        let mut values = vec![0i8; features * inputs];
        let mut scales = vec![0f32; features];
        values
            .par_chunks_mut(inputs.max(1))
            .zip(scales.par_iter_mut())
            .zip(weight.par_chunks(inputs.max(1)))
            .for_each(|((quantized, scale), row)| {
                let largest = row.iter().fold(0f32, |m, w| m.max(w.widen().abs()));
                *scale = largest / 127.0;
                if largest > 0.0 && largest.is_finite() {
                    let inverse = 127.0 / largest;
                    for (q, w) in quantized.iter_mut().zip(row) {
                        *q = (w.widen() * inverse).round().clamp(-127.0, 127.0) as i8;
                    }
                }
            });
        Self { values, scales }
    }
}

/// A row-major `[vocab, hidden]` output projection, as a language model's last layer uses
/// it (often the embedding table itself): logits, or just the greedy token.
#[derive(Debug, Clone)]
pub struct OutputProjection {
    weight: Tensor,
    /// The int8 copy [`Self::argmax`] screens rows with (CPU f32 or bf16 weights only).
    screen: Option<Arc<Int8Rows>>,
}

impl OutputProjection {
    /// Wraps a `[vocab, hidden]` weight. On the CPU this also makes the int8 copy (a
    /// quarter of an f32 weight's bytes, half of a bf16 one's) that [`Self::argmax`] reads.
    pub fn new(weight: Tensor) -> Result<Self> {
        let (_, inputs) = weight.dims2()?;
        let weight = weight.contiguous()?;
        let screened =
            weight.device().is_cpu() && matches!(weight.dtype(), DType::F32 | DType::BF16);
        let screen = if screened {
            Some(Arc::new(weight_rows(&weight, |rows| {
                Int8Rows::quantize(rows, inputs)
            })?))
        } else {
            None
        };
        Ok(Self { weight, screen })
    }

    /// The logits of `x` (`[.., hidden]`, f32): `[.., vocab]`, in f32.
    ///
    /// A few rows (decoding) read the weight directly, widening bf16 in registers; more
    /// rows use the matrix product of the weight widened to f32. On other devices or dtypes
    /// it is candle's matmul.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (features, inputs) = self.weight.dims2()?;
        let rows = x.elem_count() / inputs.max(1);
        let direct = x.device().is_cpu()
            && x.dtype() == DType::F32
            && matches!(self.weight.dtype(), DType::F32 | DType::BF16);
        if !direct || rows > BF16_DIRECT_MAX_ROWS {
            let weight = self.weight.to_dtype(x.dtype())?;
            return x.broadcast_matmul(&weight.t()?);
        }
        let mut shape = x.dims().to_vec();
        *shape.last_mut().expect("a linear input has dimensions") = features;
        let output = weight_rows(&self.weight, |weight| {
            with_f32(x, |x| Ok(all_features(weight, features, inputs, x)))
        })??;
        Tensor::from_vec(output, shape, x.device())
    }

    /// The greedy token of each row of `x` (`[.., hidden]`): the index of its largest
    /// logit in [`Self::forward`] (the first of equal ones; NaN never wins).
    pub fn argmax(&self, x: &Tensor) -> Result<Vec<u32>> {
        let (features, inputs) = self.weight.dims2()?;
        let screen = match &self.screen {
            Some(screen) if x.device().is_cpu() && x.dtype() == DType::F32 => screen,
            _ => return self.full_argmax(x),
        };
        let rows = x.elem_count() / inputs.max(1);
        with_f32(x, |x| {
            let int8_dots = all_features(RowMajor::Int8(&screen.values), features, inputs, x);
            let mut tokens = Vec::with_capacity(rows);
            for (row, int8_dots) in x.chunks_exact(inputs).zip(int8_dots.chunks_exact(features)) {
                let logit =
                    match candidates(row, int8_dots, &screen.scales) {
                        Some(candidates) => weight_rows(&self.weight, |weight| {
                            first_max(candidates.into_iter().map(|feature| {
                                (feature, row_dot(weight.row(feature, inputs), row))
                            }))
                        })?,
                        None => weight_rows(&self.weight, |weight| {
                            first_max(
                                all_features(weight, features, inputs, row)
                                    .into_iter()
                                    .enumerate(),
                            )
                        })?,
                    };
                tokens.push(logit as u32);
            }
            Ok(tokens)
        })
    }

    /// [`Self::argmax`] from the full logits.
    fn full_argmax(&self, x: &Tensor) -> Result<Vec<u32>> {
        let features = self.weight.dim(0)?;
        let logits = self.forward(x)?.to_dtype(DType::F32)?.flatten_all()?;
        Ok(logits
            .to_vec1::<f32>()?
            .chunks_exact(features)
            .map(|row| first_max(row.iter().copied().enumerate()) as u32)
            .collect())
    }
}

/// Runs `f` over the CPU data of an f32 or bf16 weight.
fn weight_rows<R>(weight: &Tensor, f: impl FnOnce(RowMajor<'_>) -> R) -> Result<R> {
    match weight.dtype() {
        DType::F32 => with_data(weight, |w| Ok(f(RowMajor::F32(w)))),
        DType::BF16 => with_data(weight, |w| Ok(f(RowMajor::Bf16(w)))),
        other => candle_core::bail!("no direct output projection for {other:?} weights"),
    }
}

/// The rows that may hold the largest logit of input `x`, given each row's int8 dot
/// product with `x` and its scale; `None` when too many do (or an input or estimate is not
/// a finite number), and every row must be computed.
fn candidates(x: &[f32], int8_dots: &[f32], scales: &[f32]) -> Option<Vec<usize>> {
    let magnitude: f32 = x.iter().map(|value| value.abs()).sum();
    if !magnitude.is_finite() {
        return None;
    }
    let width = ESTIMATE_BOUND * magnitude;
    let mut best_lower = f32::NEG_INFINITY;
    for (dot, scale) in int8_dots.iter().zip(scales) {
        let estimate = dot * scale;
        if !estimate.is_finite() {
            return None;
        }
        best_lower = best_lower.max(estimate - scale * width);
    }
    let limit = int8_dots.len() / MAX_CANDIDATE_FRACTION + 1;
    let mut candidates = Vec::new();
    for (feature, (dot, scale)) in int8_dots.iter().zip(scales).enumerate() {
        if dot * scale + scale * width >= best_lower {
            if candidates.len() == limit {
                return None;
            }
            candidates.push(feature);
        }
    }
    Some(candidates)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{max_abs_diff, random};
    use super::*;
    use candle_core::Device;

    /// The largest logit's index from candle's own matrix product and argmax.
    fn reference_argmax(x: &Tensor, weight: &Tensor) -> Vec<u32> {
        let weight = weight.to_dtype(DType::F32).unwrap();
        let logits = x.matmul(&weight.t().unwrap()).unwrap();
        logits
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .map(|row| first_max(row.iter().copied().enumerate()) as u32)
            .collect()
    }

    #[test]
    fn logits_match_candles_product_for_f32_and_bf16_weights() {
        for dtype in [DType::F32, DType::BF16] {
            let weight = random(&[70, 45], 11).to_dtype(dtype).unwrap();
            let widened = weight.to_dtype(DType::F32).unwrap();
            let projection = OutputProjection::new(weight).unwrap();
            for rows in [1, 3, BF16_DIRECT_MAX_ROWS + 1, 11] {
                let x = random(&[1, rows, 45], 12 + rows as u64);
                let ours = projection.forward(&x).unwrap();
                let expected = x.broadcast_matmul(&widened.t().unwrap()).unwrap();
                assert_eq!(ours.dims(), &[1, rows, 70]);
                let diff = max_abs_diff(&ours, &expected);
                assert!(diff < 1e-5, "{dtype:?}, {rows} rows differ by {diff}");
            }
        }
    }

    #[test]
    fn greedy_tokens_are_the_argmax_of_the_full_logits() {
        for dtype in [DType::F32, DType::BF16] {
            let weight = random(&[3000, 96], 5).to_dtype(dtype).unwrap();
            let projection = OutputProjection::new(weight.clone()).unwrap();
            for seed in 0..40 {
                let x = random(&[2, 96], 100 + seed);
                let full = projection.forward(&x).unwrap();
                let expected: Vec<u32> = full
                    .to_vec2::<f32>()
                    .unwrap()
                    .iter()
                    .map(|row| first_max(row.iter().copied().enumerate()) as u32)
                    .collect();
                assert_eq!(projection.argmax(&x).unwrap(), expected, "{dtype:?} {seed}");
                assert_eq!(expected, reference_argmax(&x, &weight), "{dtype:?} {seed}");
            }
        }
    }

    #[test]
    fn the_int8_screen_leaves_few_rows_to_compute_exactly() {
        let weight = random(&[3000, 96], 5);
        let projection = OutputProjection::new(weight).unwrap();
        let screen = projection.screen.as_ref().unwrap();
        let x = random(&[1, 96], 7);
        let x = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let int8_dots = all_features(RowMajor::Int8(&screen.values), 3000, 96, &x);
        let candidates = candidates(&x, &int8_dots, &screen.scales).unwrap();
        assert!(!candidates.is_empty());
        assert!(candidates.len() < 30, "{} candidates", candidates.len());
    }

    #[test]
    fn near_ties_and_exact_ties_pick_the_full_logits_first_largest() {
        // Rows 10..20 are copies of row 3, some nudged by 1/128: the
        // int8 estimates cannot tell them apart, the exact products must.
        let base = random(&[200, 64], 9).to_vec2::<f32>().unwrap();
        for nudge in [0.0f32, 1.0 / 128.0, -1.0 / 128.0] {
            let mut rows = base.clone();
            for (offset, row) in rows[10..20].iter_mut().enumerate() {
                *row = base[3].clone();
                if offset % 3 == 1 {
                    row[offset] += nudge;
                }
            }
            let flat: Vec<f32> = rows.concat();
            let weight = Tensor::from_vec(flat, (200, 64), &Device::Cpu).unwrap();
            let projection = OutputProjection::new(weight.clone()).unwrap();
            // Inputs aligned with row 3 make it and its copies the largest logits.
            let x = Tensor::new(&base[3][..], &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let full = projection.forward(&x).unwrap().to_vec2::<f32>().unwrap();
            let expected = first_max(full[0].iter().copied().enumerate()) as u32;
            assert_eq!(
                projection.argmax(&x).unwrap(),
                vec![expected],
                "nudge {nudge}"
            );
            if nudge == 0.0 {
                assert_eq!(expected, 3);
            }
        }
    }

    #[test]
    fn inputs_that_are_not_numbers_fall_back_to_the_full_logits() {
        let weight = random(&[100, 32], 3).to_dtype(DType::BF16).unwrap();
        let projection = OutputProjection::new(weight).unwrap();
        let mut x = random(&[1, 32], 4)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        x[5] = f32::INFINITY;
        let x = Tensor::from_vec(x, (1, 32), &Device::Cpu).unwrap();
        let full = projection.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        let expected = first_max(full[0].iter().copied().enumerate()) as u32;
        assert_eq!(projection.argmax(&x).unwrap(), vec![expected]);
    }
}
