//! Element-wise activations over tensors: the activation fused into convolutions and
//! products, GELU and SwiGLU (one parallel pass on the CPU in f32, candle ops elsewhere).

use candle_core::{Device, Result, Tensor, D};
use rayon::prelude::*;

use super::math::{exp_nonpositive, gelu_dispatch};
use super::memory::{on_cpu_f32, with_f32};
use super::simd::MulAdd;

/// The activation applied right after a convolution's bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// No activation.
    Identity,
    /// GELU with the exact (erf) formulation, as PyTorch's `nn.GELU()`.
    Gelu,
}

/// The activation applied with candle ops (the generic path).
pub(super) fn activate(x: &Tensor, activation: Activation) -> Result<Tensor> {
    match activation {
        Activation::Identity => Ok(x.clone()),
        Activation::Gelu => x.gelu_erf(),
    }
}

/// GELU (exact erf form) of every element.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if !on_cpu_f32(x) {
        return x.gelu_erf();
    }
    let mut out = with_f32(x, |data| Ok(data.to_vec()))?;
    let chunk = out
        .len()
        .div_ceil(rayon::current_num_threads() * 4)
        .max(4096);
    out.par_chunks_mut(chunk).for_each(gelu_dispatch);
    Tensor::from_vec(out, x.dims(), &Device::Cpu)
}

/// `silu(gate) * up` for one row: `x / (1 + e^-x)` with the exponent of `-|x|` only, so it
/// never overflows.
#[inline(always)]
fn swiglu_row<M: MulAdd>(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((out, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        let e = exp_nonpositive::<M>(-g.abs());
        let sigmoid = if g >= 0.0 {
            1.0 / (1.0 + e)
        } else {
            e / (1.0 + e)
        };
        *out = g * sigmoid * u;
    }
}

dispatch! {
    /// [`swiglu_row`] with the processor's widest vector instructions.
    fn swiglu_row_dispatch => swiglu_row(gate: &[f32], up: &[f32], out: &mut [f32])
}

/// The SwiGLU activation of a fused gate/up projection: for `[.., 2 * width]` holding the
/// gate then the up projection, `silu(gate) * up`: `[.., width]`. One parallel pass on the
/// CPU in f32; candle ops elsewhere.
pub fn swiglu(gate_up: &Tensor, width: usize) -> Result<Tensor> {
    if !on_cpu_f32(gate_up) {
        let gate = gate_up.narrow(D::Minus1, 0, width)?;
        let up = gate_up.narrow(D::Minus1, width, width)?;
        return candle_nn::ops::silu(&gate)? * up;
    }
    let mut dims = gate_up.dims().to_vec();
    let last = dims.last_mut().expect("a projection has dimensions");
    if *last != 2 * width {
        candle_core::bail!(
            "expected {} gate/up values per row, found {last}",
            2 * width
        );
    }
    *last = width;
    let out = with_f32(gate_up, |data| {
        let mut out = vec![0f32; data.len() / 2];
        out.par_chunks_mut(width)
            .zip(data.par_chunks(2 * width))
            .for_each(|(out, row)| swiglu_row_dispatch(&row[..width], &row[width..], out));
        Ok(out)
    })?;
    Tensor::from_vec(out, dims, &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{max_abs_diff, random};
    use super::*;

    #[test]
    fn gelu_matches_the_erf_definition() {
        let values: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.005).collect();
        let x = Tensor::new(values.as_slice(), &Device::Cpu).unwrap();
        let fast = gelu(&x).unwrap();
        let reference = x.gelu_erf().unwrap();
        assert!(max_abs_diff(&fast, &reference) < 1e-6);
        let big = Tensor::new(&[-100f32, -30.0, 30.0, 100.0], &Device::Cpu).unwrap();
        let out = gelu(&big).unwrap().to_vec1::<f32>().unwrap();
        assert!(out[0].abs() < 1e-30 && out[1].abs() < 1e-30, "{out:?}");
        assert_eq!(&out[2..], &[30.0, 100.0]);
    }

    #[test]
    fn swiglu_matches_candle_ops() {
        let gate_up = (random(&[3, 5, 2 * 37], 21) * 8.0).unwrap();
        let ours = swiglu(&gate_up, 37).unwrap();
        let gate = gate_up.narrow(2, 0, 37).unwrap();
        let up = gate_up.narrow(2, 37, 37).unwrap();
        let expected = (candle_nn::ops::silu(&gate).unwrap() * up).unwrap();
        assert_eq!(ours.dims(), &[3, 5, 37]);
        let diff = max_abs_diff(&ours, &expected);
        assert!(diff < 1e-5, "differs by {diff}");
        assert!(swiglu(&gate_up, 36).is_err());
    }
}
