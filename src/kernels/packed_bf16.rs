//! bf16 weights packed for matrix products on the CPU.
//!
//! A `[features, inputs]` weight is stored in panels of [`PANEL`] features. Within a panel,
//! for each pair of inputs `(2k, 2k + 1)`, every feature's two values share one 32-bit word
//! (`w[f, 2k]` in the low half, `w[f, 2k + 1]` in the high half), the panel's features side
//! by side. That is the operand layout of AVX-512 BF16's `vdpbf16ps`, which multiplies 16
//! such words by one broadcast pair of inputs and adds both products to 16 f32 sums, and a
//! panel is read front to back, so a product with one input row streams the weight once.
//!
//! Two products read it: [`PackedBf16::product_block`] rounds the inputs to bf16 and uses
//! `vdpbf16ps` (a prefill or an image: many rows), and [`PackedBf16::widened_block`] widens
//! the weight to f32 in registers and multiplies f32 inputs exactly (decoding: a few rows;
//! or any row count on a processor without AVX-512 BF16).

use std::ops::Range;

use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

use super::memory::{assume_init, uninit_vec, SharedMut};
use super::simd::MulAdd;
use super::Isa;

/// Features per panel: two 16-lane registers of sums.
pub(super) const PANEL: usize = 32;

/// Input rows per register tile of the bf16 dot-product kernel (`ROWS x PANEL` sums).
const TILE_ROWS: usize = 12;

/// A bf16 weight `[features, inputs]` in the panel layout described in the module docs.
#[derive(Debug, Clone)]
pub struct PackedBf16 {
    /// Panel after panel; in a panel, input pair after input pair, [`PANEL`] words each.
    words: Vec<u32>,
    features: usize,
    inputs: usize,
}

/// Whether the bf16 products use AVX-512 BF16 dot products (`vdpbf16ps`): the active
/// level is [`Isa::Avx512`] and the processor has AVX-512 BF16 (with the BW and VL
/// instructions [`round_rows`] also uses; processors with AMX have them too). Without
/// them a bf16 model's products widen its weights to f32 and run no faster than f32.
pub fn bf16_dot_products_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Isa::active() == Isa::Avx512
            && std::is_x86_feature_detected!("avx512bf16")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// f32 input rows `[rows, inputs]` rounded to bf16 (to nearest, ties to even, as a bf16
/// model rounds its activations) and paired like the weight: `[rows, inputs.div_ceil(2)]`
/// words, an odd last input paired with zero.
///
/// # Safety
/// The processor must have AVX-512 BF16 ([`bf16_dot_products_available`]).
pub(super) unsafe fn round_rows(x: &[f32], inputs: usize) -> Vec<u32> {
    let pairs = inputs.div_ceil(2);
    let rows = x.len() / inputs.max(1);
    let mut words = uninit_vec::<u32>(rows * pairs);
    words
        .par_chunks_mut(pairs)
        .zip(x.par_chunks(inputs))
        // SAFETY: the caller checked the processor; each row's words are its own.
        .for_each(|(words, row)| unsafe { round_row(row, words.as_mut_ptr().cast()) });
    // SAFETY: `round_row` wrote every word.
    unsafe { assume_init(words) }
}

/// One row of [`round_rows`]: 16 values per instruction, the last few masked; an odd last
/// value is paired with zero.
///
/// # Safety
/// The processor must have AVX-512 BF16, and `to` must have room for
/// `row.len().div_ceil(2)` words.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
unsafe fn round_row(row: &[f32], to: *mut u16) {
    use std::arch::x86_64::*;
    for start in (0..row.len()).step_by(16) {
        let count = (row.len() - start).min(16);
        let mask = ((1u32 << count) - 1) as u16;
        // SAFETY: `count` values from `start` lie in `row`, and their bf16 halves in `to`.
        unsafe {
            let values = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(start));
            let rounded: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(values));
            _mm256_mask_storeu_epi16(to.add(start).cast(), mask, rounded);
        }
    }
    if row.len() % 2 == 1 {
        // SAFETY: the last word's high half is inside the row's words.
        unsafe { to.add(row.len()).write(0) };
    }
}

/// [`round_row`] where AVX-512 BF16 cannot exist (never called: see [`round_rows`]).
#[cfg(not(target_arch = "x86_64"))]
unsafe fn round_row(_row: &[f32], _to: *mut u16) {
    unreachable!("bf16 dot products are only used on x86-64");
}

impl PackedBf16 {
    /// Packs a `[features, inputs]` weight (any float dtype; rounded to bf16).
    pub fn pack(weight: &Tensor) -> Result<Self> {
        let (features, inputs) = weight.dims2()?;
        let values = weight
            .to_dtype(DType::BF16)?
            .flatten_all()?
            .to_vec1::<half::bf16>()?;
        let pairs = inputs.div_ceil(2);
        let len = features.div_ceil(PANEL) * pairs * PANEL;
        let mut words = vec![0u32; len];
        words
            .par_chunks_mut(pairs * PANEL)
            .enumerate()
            .for_each(|(panel, words)| {
                let first = panel * PANEL;
                for feature in 0..PANEL.min(features - first) {
                    let row = &values[(first + feature) * inputs..][..inputs];
                    for (pair, two) in row.chunks(2).enumerate() {
                        let high = two.get(1).map_or(0, |high| high.to_bits());
                        words[pair * PANEL + feature] =
                            u32::from(two[0].to_bits()) | u32::from(high) << 16;
                    }
                }
            });
        Ok(Self {
            words,
            features,
            inputs,
        })
    }

    /// Output features.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Input features.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Input pairs per panel.
    fn pairs(&self) -> usize {
        self.inputs.div_ceil(2)
    }

    /// The words of panel `panel`.
    fn panel(&self, panel: usize) -> &[u32] {
        let size = self.pairs() * PANEL;
        &self.words[panel * size..][..size]
    }

    /// Features of panel `panel` that exist (the last panel may be partly padding).
    fn panel_width(&self, panel: usize) -> usize {
        PANEL.min(self.features - panel * PANEL)
    }

    /// `out[r, f] = Σ_k a[r, k] · w[f, k]` (added to `out` when `accumulate`) for the rows
    /// `rows` of the bf16 inputs `a` (from [`round_rows`]) and the features of the panels
    /// `panels`, with AVX-512 BF16 dot products; `out` points at row 0, feature 0 of an
    /// output whose rows are `out_stride` apart.
    ///
    /// # Safety
    /// [`bf16_dot_products_available`] must hold, and `out` must cover every row of `rows`
    /// and feature of `panels`, with no other thread touching them.
    pub(super) unsafe fn product_block(
        &self,
        a: &[u32],
        rows: Range<usize>,
        panels: Range<usize>,
        out: *mut f32,
        out_stride: usize,
        accumulate: bool,
    ) {
        let pairs = self.pairs();
        assert!(a.len() >= rows.end * pairs && panels.end * PANEL < self.features + PANEL);
        #[cfg(target_arch = "x86_64")]
        for panel in panels {
            let weights = self.panel(panel).as_ptr();
            let width = self.panel_width(panel);
            let mut row = rows.start;
            while row < rows.end {
                let tile = (rows.end - row).min(TILE_ROWS);
                // SAFETY: the tile's rows and features lie inside `a`, the panel and `out`.
                unsafe {
                    let a = a.as_ptr().add(row * pairs);
                    let out = out.add(row * out_stride + panel * PANEL);
                    let tile_args = DotTile {
                        a,
                        pairs,
                        weights,
                        out,
                        out_stride,
                        width,
                        accumulate,
                    };
                    let done = match tile {
                        TILE_ROWS => dot_tile::<TILE_ROWS>(tile_args),
                        8..TILE_ROWS => dot_tile::<8>(tile_args),
                        4..8 => dot_tile::<4>(tile_args),
                        2..4 => dot_tile::<2>(tile_args),
                        _ => dot_tile::<1>(tile_args),
                    };
                    row += done;
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (a, rows, panels, out, out_stride, accumulate);
            unreachable!("bf16 dot products are only used on x86-64");
        }
    }

    /// `out[r, f] = Σ_k x[r, k] · w[f, k]` (added to `out` when `accumulate`) for the f32
    /// input rows `rows` of `x` (`[.., inputs]`) and the features of `panels`, the weight
    /// widened to f32 in registers so every product is exact; `out` as for
    /// [`Self::product_block`].
    ///
    /// # Safety
    /// `out` must cover every row of `rows` and feature of `panels`, with no other thread
    /// touching them.
    pub(super) unsafe fn widened_block(
        &self,
        x: &[f32],
        rows: Range<usize>,
        panels: Range<usize>,
        out: *mut f32,
        out_stride: usize,
        accumulate: bool,
    ) {
        assert!(x.len() >= rows.end * self.inputs && panels.end * PANEL < self.features + PANEL);
        let block = WidenedBlock {
            weight: self,
            x,
            out: SharedMut(out),
            out_stride,
            accumulate,
        };
        widened_rows(&block, rows, panels);
    }
}

/// The arguments of [`dot_tile`].
#[derive(Clone, Copy)]
struct DotTile {
    /// The tile's first row of bf16 input words; rows are `pairs` words apart.
    a: *const u32,
    pairs: usize,
    /// The panel's words.
    weights: *const u32,
    /// The tile's first output row; rows are `out_stride` values apart.
    out: *mut f32,
    out_stride: usize,
    /// The panel's real width (features that exist).
    width: usize,
    /// Whether the sums are added to `out` rather than stored.
    accumulate: bool,
}

/// One `ROWS x PANEL` tile of [`PackedBf16::product_block`]: the sums stay in 2 * `ROWS`
/// registers over all input pairs, then are stored (masked to the panel's real width).
/// Returns `ROWS`.
///
/// # Safety
/// The processor must have AVX-512 BF16, and the pointers must cover the tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
unsafe fn dot_tile<const ROWS: usize>(tile: DotTile) -> usize {
    let DotTile {
        a,
        pairs,
        weights,
        out,
        out_stride,
        width,
        accumulate,
    } = tile;
    use std::arch::x86_64::*;
    let mut sums = [[_mm512_setzero_ps(); 2]; ROWS];
    for pair in 0..pairs {
        // SAFETY (loads): the panel holds `pairs * PANEL` words and `a` `ROWS` rows of
        // `pairs` words.
        // The same 512 bits, read as 32 bf16 values.
        let as_bf16 = |bits: __m512i| unsafe { std::mem::transmute::<__m512i, __m512bh>(bits) };
        let (low, high) = unsafe {
            let words = weights.add(pair * PANEL);
            (
                as_bf16(_mm512_loadu_si512(words.cast())),
                as_bf16(_mm512_loadu_si512(words.add(16).cast())),
            )
        };
        for (row, sums) in sums.iter_mut().enumerate() {
            let input = unsafe { a.add(row * pairs + pair).read() };
            let input = as_bf16(_mm512_set1_epi32(input as i32));
            sums[0] = _mm512_dpbf16_ps(sums[0], input, low);
            sums[1] = _mm512_dpbf16_ps(sums[1], input, high);
        }
    }
    let mask = |lanes: usize| -> __mmask16 { ((1u32 << lanes.min(16)) - 1) as __mmask16 };
    let masks = [mask(width), mask(width.saturating_sub(16))];
    for (row, sums) in sums.iter().enumerate() {
        for (half, (&sum, &mask)) in sums.iter().zip(&masks).enumerate() {
            // SAFETY: the masked lanes are the tile's real features, inside `out`.
            unsafe {
                let to = out.add(row * out_stride + half * 16);
                let value = if accumulate {
                    _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask, to))
                } else {
                    sum
                };
                _mm512_mask_storeu_ps(to, mask, value);
            }
        }
    }
    ROWS
}

/// The operands of [`PackedBf16::widened_block`]: the weight, the f32 input rows `x`, the
/// output (row 0, feature 0; rows `out_stride` apart) and whether to add to it.
struct WidenedBlock<'a> {
    weight: &'a PackedBf16,
    x: &'a [f32],
    out: SharedMut,
    out_stride: usize,
    accumulate: bool,
}

/// One panel of [`PackedBf16::widened_block`] for the `ROWS` input rows from `row`: the
/// panel's 32 sums per row stay in registers over all input pairs. Returns `ROWS`.
#[inline(always)]
fn widened_tile<M: MulAdd, const ROWS: usize>(
    block: &WidenedBlock<'_>,
    row: usize,
    panel: usize,
) -> usize {
    let WidenedBlock {
        weight,
        x,
        out,
        out_stride,
        accumulate,
    } = *block;
    let inputs = weight.inputs;
    let x: [&[f32]; ROWS] = std::array::from_fn(|r| &x[(row + r) * inputs..][..inputs]);
    // Separate sums for the even and the odd inputs: twice the independent additions.
    let mut sums = [[[0f32; PANEL]; 2]; ROWS];
    let mut multiply = |words: &[u32], even: [f32; ROWS], odd: [f32; ROWS]| {
        for (lane, &word) in words.iter().enumerate() {
            // bf16 is the top half of an f32: widening is a shift or a mask.
            let low = f32::from_bits(word << 16);
            let high = f32::from_bits(word & 0xffff_0000);
            for r in 0..ROWS {
                sums[r][0][lane] = M::mul_add(low, even[r], sums[r][0][lane]);
                sums[r][1][lane] = M::mul_add(high, odd[r], sums[r][1][lane]);
            }
        }
    };
    let words = weight.panel(panel);
    let whole = inputs / 2;
    for (pair, words) in words.chunks_exact(PANEL).take(whole).enumerate() {
        multiply(
            words,
            std::array::from_fn(|r| x[r][2 * pair]),
            std::array::from_fn(|r| x[r][2 * pair + 1]),
        );
    }
    if whole * 2 < inputs {
        // The odd last input, paired with zero.
        let words = &words[whole * PANEL..][..PANEL];
        multiply(
            words,
            std::array::from_fn(|r| x[r][inputs - 1]),
            [0.0; ROWS],
        );
    }
    let width = weight.panel_width(panel);
    for (r, sums) in sums.iter().enumerate() {
        let at = (row + r) * out_stride + panel * PANEL;
        // SAFETY: the caller owns these `width` outputs of the row.
        let to = unsafe { std::slice::from_raw_parts_mut(out.offset(at).ptr(), width) };
        for ((to, &even), &odd) in to.iter_mut().zip(&sums[0]).zip(&sums[1]) {
            let sum = even + odd;
            *to = if accumulate { *to + sum } else { sum };
        }
    }
    ROWS
}

/// [`PackedBf16::widened_block`], generic over the multiply-add instruction: up to four
/// input rows share each pass over a panel.
#[inline(always)]
fn widened_rows_generic<M: MulAdd>(
    block: &WidenedBlock<'_>,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    for panel in panels {
        let mut row = rows.start;
        while row < rows.end {
            row += match rows.end - row {
                1 => widened_tile::<M, 1>(block, row, panel),
                2 => widened_tile::<M, 2>(block, row, panel),
                3 => widened_tile::<M, 3>(block, row, panel),
                _ => widened_tile::<M, 4>(block, row, panel),
            };
        }
    }
}

dispatch! {
    /// [`widened_rows_generic`] at the active instruction set.
    fn widened_rows => widened_rows_generic(
        block: &WidenedBlock<'_>,
        rows: Range<usize>,
        panels: Range<usize>,
    )
}
