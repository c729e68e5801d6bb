//! Self-attention with grouped key/value heads, causal (a language model) or not (an image
//! encoder), fused for the CPU.
//!
//! Composed from candle ops, attention costs a dozen passes over its scores (product,
//! scale, mask, softmax's three, product, transposes), most of them single-threaded: a
//! third of a 316-position prefill, much of each decoded token, and a seventh of
//! FastViTHD. Here each block of query rows computes its scores, their softmax and the
//! weighted sum of values in one pass, blocks in parallel, and writes the `[positions,
//! heads * head_dim]` layout the output projection reads.

use std::ops::Range;

use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

use super::math::exp_nonpositive;
use super::memory::{on_cpu_f32, with_f32};
use super::simd::{dot, MulAdd};

/// Softmax attention of `q` `[batch, heads, seq, head_dim]` over `k` and `v` `[batch,
/// kv_heads, total, head_dim]`, where the queries are the last `seq` of `total` positions
/// and each sees the keys up to its own position; query head `h` reads key/value head
/// `h / (heads / kv_heads)`. Scores are scaled by `scale`. Returns `[batch, seq, heads *
/// head_dim]`.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    fused_attention(q, k, v, scale, true)
}

/// [`causal_attention`] where every query sees every key (`seq` and `total` may differ).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    fused_attention(q, k, v, scale, false)
}

/// [`causal_attention`] or, unless `causal`, [`attention`].
fn fused_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, causal: bool) -> Result<Tensor> {
    let (batch, heads, seq, head_dim) = q.dims4()?;
    let (_, kv_heads, total, _) = k.dims4()?;
    if k.dims() != v.dims() || k.dim(0)? != batch || k.dim(3)? != head_dim {
        candle_core::bail!(
            "attention shapes do not fit: q {:?}, k {:?}, v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if kv_heads == 0 || heads % kv_heads != 0 || (causal && seq > total) {
        candle_core::bail!(
            "{heads} query heads over {kv_heads} key/value heads, {seq} of {total} positions"
        );
    }
    if !(on_cpu_f32(q) && on_cpu_f32(k) && on_cpu_f32(v)) {
        return candle_attention(q, k, v, scale, causal);
    }
    let shape = Shape {
        heads,
        kv_heads,
        seq,
        total,
        head_dim,
        keys_transposed: seq >= QUERY_BLOCK,
        causal,
    };
    // Keys transposed, `[batch, kv_heads, head_dim, total]`: blocks of query positions then
    // accumulate their scores over `head_dim` for many keys at once, in vector registers.
    // Fewer positions than a block (a decoded token) take dot products with the keys as
    // they are, which costs less than transposing them.
    let keys = if shape.keys_transposed {
        k.transpose(2, 3)?.contiguous()?
    } else {
        k.contiguous()?
    };
    let out = with_f32(q, |q| {
        with_f32(&keys, |k| {
            with_f32(v, |v| {
                let mut out = vec![0f32; batch * seq * heads * head_dim];
                let kv_len = kv_heads * total * head_dim;
                out.par_chunks_mut(seq * heads * head_dim)
                    .enumerate()
                    .for_each(|(item, out)| {
                        let item = Item {
                            q: &q[item * heads * seq * head_dim..][..heads * seq * head_dim],
                            k: &k[item * kv_len..][..kv_len],
                            v: &v[item * kv_len..][..kv_len],
                            shape,
                            scale: scale as f32,
                        };
                        let scratch = || vec![0f32; QUERY_BLOCK * total];
                        if seq < QUERY_BLOCK {
                            // Too few positions to share the work: one task per head.
                            out.par_chunks_mut(head_dim).enumerate().for_each_init(
                                scratch,
                                |scores, (index, out)| {
                                    let (position, head) = (index / heads, index % heads);
                                    let heads = head..head + 1;
                                    let at = (position, heads);
                                    attention_rows(&item, at, scores, out);
                                },
                            );
                        } else {
                            out.par_chunks_mut(QUERY_BLOCK * heads * head_dim)
                                .enumerate()
                                .for_each_init(scratch, |scores, (block, out)| {
                                    let at = (block * QUERY_BLOCK, 0..heads);
                                    attention_rows(&item, at, scores, out);
                                });
                        }
                    });
                Ok(out)
            })
        })
    })?;
    Tensor::from_vec(out, (batch, seq, heads * head_dim), &Device::Cpu)
}

/// The same attention composed from candle ops (other devices and dtypes).
fn candle_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    causal: bool,
) -> Result<Tensor> {
    let (batch, heads, seq, head_dim) = q.dims4()?;
    let (kv_heads, total) = (k.dim(1)?, k.dim(2)?);
    let groups = heads / kv_heads;
    // Queries of one group share a key/value head: fold the group into the query rows.
    let q = q.reshape((batch, kv_heads, groups * seq, head_dim))?;
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let scores = if causal && seq > 1 {
        let past = total - seq;
        let mask: Vec<f32> = (0..groups * seq)
            .flat_map(|row| {
                let i = row % seq;
                (0..total).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (groups * seq, total), q.device())?;
        scores.broadcast_add(&mask.to_dtype(scores.dtype())?)?
    } else {
        scores
    };
    let weights = candle_nn::ops::softmax_last_dim(&scores)?;
    weights
        .matmul(&v.contiguous()?)?
        .reshape((batch, heads, seq, head_dim))?
        .transpose(1, 2)?
        .reshape((batch, seq, heads * head_dim))
}

/// Query positions computed together, sharing the keys and values they read.
const QUERY_BLOCK: usize = 4;
/// Keys whose scores the query positions accumulate together in registers.
const KEY_BLOCK: usize = 32;

/// Output dimensions the query positions accumulate together in registers.
const VALUE_BLOCK: usize = 32;

/// The sizes of one batch item's attention.
#[derive(Debug, Clone, Copy)]
struct Shape {
    heads: usize,
    kv_heads: usize,
    seq: usize,
    total: usize,
    head_dim: usize,
    /// Whether the keys are `[kv_heads, head_dim, total]` rather than `[kv_heads, total,
    /// head_dim]`.
    keys_transposed: bool,
    /// Whether a query sees only the keys up to its own position.
    causal: bool,
}

/// One batch item's attention as the row kernels read it: the queries `q` (`[heads, seq,
/// head_dim]`), the keys `k` as [`Shape::keys_transposed`] says, the values `v`
/// (`[kv_heads, total, head_dim]`), the sizes and the scale of the scores.
#[derive(Clone, Copy)]
struct Item<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    shape: Shape,
    scale: f32,
}

/// Up to [`QUERY_BLOCK`] neighbouring query positions from `first`, heads `heads` (`at` is
/// `(first, heads)`): `out` holds their rows (`[positions, heads.len() * head_dim]`), head
/// `h`'s weighted sum of the values it may see at `(h - heads.start) * head_dim`; `scores`
/// is scratch of `QUERY_BLOCK * total` values. A whole block of positions shares every key
/// and value it reads; the positions of a partial block (a decoded token) go one by one.
#[inline(always)]
fn attention_rows_generic<M: MulAdd>(
    item: &Item<'_>,
    (first, heads): (usize, Range<usize>),
    scores: &mut [f32],
    out: &mut [f32],
) {
    let row = heads.len() * item.shape.head_dim;
    if out.len() == QUERY_BLOCK * row {
        let at = (first, heads);
        attention_block::<M, QUERY_BLOCK>(item, at, scores, out);
    } else {
        for (r, out) in out.chunks_exact_mut(row).enumerate() {
            let at = (first + r, heads.clone());
            attention_block::<M, 1>(item, at, scores, out);
        }
    }
}

/// `POSITIONS` query positions from `first` of [`attention_rows_generic`].
#[inline(always)]
fn attention_block<M: MulAdd, const POSITIONS: usize>(
    item: &Item<'_>,
    (first, head_range): (usize, Range<usize>),
    scores: &mut [f32],
    out: &mut [f32],
) {
    let Item {
        q,
        k,
        v,
        shape,
        scale,
    } = *item;
    let Shape {
        heads,
        kv_heads,
        seq,
        total,
        head_dim,
        keys_transposed,
        causal,
    } = shape;
    let groups = heads / kv_heads;
    let position = |r: usize| first + r;
    let visible: [usize; POSITIONS] = std::array::from_fn(|r| {
        if causal {
            total - seq + position(r) + 1
        } else {
            total
        }
    });
    let longest = visible[POSITIONS - 1];
    let row = head_range.len() * head_dim;
    for head in head_range.clone() {
        let queries: [&[f32]; POSITIONS] =
            std::array::from_fn(|r| &q[(head * seq + position(r)) * head_dim..][..head_dim]);
        let kv_head = head / groups;
        let keys = &k[kv_head * head_dim * total..][..head_dim * total];
        let values = &v[kv_head * total * head_dim..][..longest * head_dim];
        // Scores of every position against the keys the last one sees.
        if keys_transposed {
            for start in (0..longest).step_by(KEY_BLOCK) {
                let width = KEY_BLOCK.min(longest - start);
                let mut sums = [[0f32; KEY_BLOCK]; POSITIONS];
                if width == KEY_BLOCK {
                    // A whole block: fixed sizes keep the sums in registers.
                    for d in 0..head_dim {
                        let keys: &[f32; KEY_BLOCK] = keys[d * total + start..][..KEY_BLOCK]
                            .try_into()
                            .expect("a block of keys");
                        for (sums, query) in sums.iter_mut().zip(&queries) {
                            for (sum, &key) in sums.iter_mut().zip(keys) {
                                *sum = M::mul_add(query[d], key, *sum);
                            }
                        }
                    }
                } else {
                    for d in 0..head_dim {
                        let keys = &keys[d * total + start..][..width];
                        for (sums, query) in sums.iter_mut().zip(&queries) {
                            for (sum, &key) in sums.iter_mut().zip(keys) {
                                *sum = M::mul_add(query[d], key, *sum);
                            }
                        }
                    }
                }
                for (r, sums) in sums.iter().enumerate() {
                    for (score, sum) in scores[r * total + start..][..width].iter_mut().zip(sums) {
                        *score = sum * scale;
                    }
                }
            }
        } else {
            for (j, key) in keys[..longest * head_dim]
                .chunks_exact(head_dim)
                .enumerate()
            {
                for (r, query) in queries.iter().enumerate() {
                    scores[r * total + j] = dot::<M, f32>(key, query) * scale;
                }
            }
        }
        // Softmax over each position's visible keys; the keys it may not see weigh zero.
        let mut inverse = [0f32; POSITIONS];
        for (r, inverse) in inverse.iter_mut().enumerate() {
            let row = &mut scores[r * total..][..longest];
            let (seen, unseen) = row.split_at_mut(visible[r]);
            let max = lane_reduce(seen, f32::NEG_INFINITY, f32::max);
            for score in seen.iter_mut() {
                *score = exp_nonpositive::<M>(*score - max);
            }
            unseen.fill(0.0);
            *inverse = 1.0 / lane_reduce(seen, 0.0, |a, b| a + b);
        }
        // The weighted sums of the values, `VALUE_BLOCK` dimensions at a time in registers.
        for start in (0..head_dim).step_by(VALUE_BLOCK) {
            let width = VALUE_BLOCK.min(head_dim - start);
            let mut sums = [[0f32; VALUE_BLOCK]; POSITIONS];
            let weights =
                |j: usize| -> [f32; POSITIONS] { std::array::from_fn(|r| scores[r * total + j]) };
            if width == VALUE_BLOCK {
                // A whole block: fixed sizes keep the sums in registers.
                for (j, value) in values.chunks_exact(head_dim).enumerate() {
                    let value: &[f32; VALUE_BLOCK] =
                        value[start..][..VALUE_BLOCK].try_into().expect("a block");
                    for (sums, weight) in sums.iter_mut().zip(weights(j)) {
                        for (sum, &x) in sums.iter_mut().zip(value) {
                            *sum = M::mul_add(weight, x, *sum);
                        }
                    }
                }
            } else {
                for (j, value) in values.chunks_exact(head_dim).enumerate() {
                    let value = &value[start..start + width];
                    for (sums, weight) in sums.iter_mut().zip(weights(j)) {
                        for (sum, &x) in sums.iter_mut().zip(value) {
                            *sum = M::mul_add(weight, x, *sum);
                        }
                    }
                }
            }
            for (r, out) in out.chunks_exact_mut(row).enumerate() {
                let out = &mut out[(head - head_range.start) * head_dim + start..][..width];
                for (o, sum) in out.iter_mut().zip(sums[r]) {
                    *o = sum * inverse[r];
                }
            }
        }
    }
}

/// `values` folded with `f` in 16 independent lanes (so that the compiler vectorises it),
/// then across the lanes.
#[inline(always)]
fn lane_reduce(values: &[f32], identity: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [identity; LANES];
    let whole = values.len() / LANES * LANES;
    for chunk in values[..whole].chunks_exact(LANES) {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane = f(*lane, value);
        }
    }
    let partial = values[whole..].iter().fold(identity, |a, &b| f(a, b));
    lanes.iter().fold(partial, |a, &b| f(a, b))
}

dispatch! {
    /// [`attention_rows_generic`] with the processor's widest vector instructions.
    fn attention_rows => attention_rows_generic(
        item: &Item<'_>,
        at: (usize, Range<usize>),
        scores: &mut [f32],
        out: &mut [f32],
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{max_abs_diff, random};
    use super::*;

    #[test]
    fn fused_attention_matches_candle_ops() {
        // A prefill from scratch, a prefill after cached positions, and one decoded token,
        // shorter and longer than a block of keys, heads narrower and wider than a block of
        // values; 6 query heads over 2 key/value heads, 2 batch items.
        for (seq, total, head_dim) in [
            (7, 7, 16),
            (5, 12, 16),
            (1, 9, 16),
            (40, 40, 64),
            (3, 75, 80),
            (1, 97, 64),
        ] {
            let q = random(&[2, 6, seq, head_dim], seq as u64);
            let k = random(&[2, 2, total, head_dim], 100 + total as u64);
            let v = random(&[2, 2, total, head_dim], 200 + total as u64);
            let fused = causal_attention(&q, &k, &v, 0.25).unwrap();
            let reference = candle_attention(&q, &k, &v, 0.25, true).unwrap();
            assert_eq!(fused.dims(), &[2, seq, 6 * head_dim]);
            assert_eq!(reference.dims(), fused.dims());
            let diff = max_abs_diff(&fused, &reference);
            assert!(diff < 1e-5, "{seq} of {total} positions differ by {diff}");
        }
    }

    #[test]
    fn full_attention_matches_candle_ops() {
        // An image encoder's: every position sees every other; more and fewer positions
        // than a block; as many queries as keys, fewer, and more.
        for (seq, total, head_dim) in [(70, 70, 64), (3, 3, 16), (5, 40, 32), (6, 3, 16)] {
            let q = random(&[1, 4, seq, head_dim], 7);
            let k = random(&[1, 4, total, head_dim], 8);
            let v = random(&[1, 4, total, head_dim], 9);
            let fused = attention(&q, &k, &v, 0.125).unwrap();
            let reference = candle_attention(&q, &k, &v, 0.125, false).unwrap();
            assert_eq!(fused.dims(), &[1, seq, 4 * head_dim]);
            let diff = max_abs_diff(&fused, &reference);
            assert!(diff < 1e-5, "{seq} over {total} positions differ by {diff}");
        }
    }

    #[test]
    fn a_query_sees_only_earlier_positions() {
        // Changing the last key and value must not change any earlier query's output.
        let q = random(&[1, 2, 4, 8], 1);
        let k = random(&[1, 1, 4, 8], 2);
        let v = random(&[1, 1, 4, 8], 3);
        let before = causal_attention(&q, &k, &v, 0.5).unwrap();
        let changed = |t: &Tensor| {
            let head = t.narrow(2, 0, 3).unwrap();
            Tensor::cat(&[&head, &(t.narrow(2, 3, 1).unwrap() + 5.0).unwrap()], 2).unwrap()
        };
        let after = causal_attention(&q, &changed(&k), &changed(&v), 0.5).unwrap();
        let rows = |t: &Tensor, n| {
            t.narrow(1, 0, n)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(rows(&before, 3), rows(&after, 3));
        assert_ne!(rows(&before, 4), rows(&after, 4));
    }
}
