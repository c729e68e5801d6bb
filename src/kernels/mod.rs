//! CPU kernels for the operations candle is slow at, with a candle fallback on other devices.
//!
//! The FastViT towers spend their time in three kinds of convolution: 1x1 (94% of the
//! arithmetic), depthwise kxk, and one dense 3x3 in the stem. candle runs a grouped
//! convolution 20–160x slower than PyTorch, and its element-wise ops are single-threaded,
//! so activations here are NHWC (`[batch, height, width, channels]`): a 1x1 convolution is
//! then one matrix product over all pixels of the batch, a depthwise convolution runs along
//! contiguous channels (vectorised), and bias, activation and residual additions happen in
//! one pass over the product's output.
//!
//! Every function takes and returns candle tensors. On a CPU with f32 data it runs the
//! direct kernels below (rayon over rows; AVX-512 or AVX2+FMA code when the processor has
//! them; matrix products through the `gemm` crate that candle itself uses, called directly
//! so that bias, activation and residual are applied to each block of rows while it is in
//! cache, and outputs are written once, never zero-filled first); on any other device or
//! dtype it composes candle ops, so the models stay device-generic.
//!
//! One file per job: `simd` (the multiply-add and dot-product building blocks), `math`
//! (exp and GELU polynomials), `memory` (tensor data as slices, uninitialised buffers),
//! `activation` (GELU and SwiGLU over tensors), `conv` (depthwise and dense convolutions,
//! spatial means), `product` (1x1 convolutions and linear layers), [`PackedBf16`] (bf16
//! weights and their products: AVX-512 BF16 dot products for many rows, weights widened in
//! registers for a decoded token), the fused attention ([`causal_attention`],
//! [`attention`]), and a language model's [`OutputProjection`] (logits, or the greedy token
//! screened with an int8 copy).

use candle_core::{DType, Device};

/// The dtype activations flow in for weights stored in `weights` on `device`: f32 on the
/// CPU (bf16 weights are packed or widened as they are read; see [`ProductWeight`]), the
/// weights' own dtype elsewhere.
pub fn activation_dtype(weights: DType, device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        weights
    }
}

/// Runs `f` on a thread of rayon's pool (right here when this is one).
///
/// A model's forward pass runs hundreds of parallel kernels, some of a few microseconds (a
/// decoded token's). Started from a pool thread, each splits its work with the other
/// threads; started from outside, each wakes the pool and sleeps until the work is done.
pub fn on_thread_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}
/// The widest vector instructions the processor offers (checked once, cached by std).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Simd {
    /// AVX-512 (512-bit vectors, FMA).
    Avx512,
    /// AVX2 with FMA.
    Avx2,
    /// Whatever the build target guarantees.
    Portable,
}

#[inline]
fn simd() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
            return Simd::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Simd::Avx2;
        }
    }
    Simd::Portable
}

/// Defines `$name(args)` that runs `$generic::<Fused>` compiled for AVX-512 or AVX2+FMA
/// when the processor has them, and `$generic::<Plain>` otherwise.
macro_rules! dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident => $generic:ident ($($arg:ident : $ty:ty),* $(,)?)) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $generic::<Fused>($($arg),*)
                }
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $generic::<Fused>($($arg),*)
                }
                match simd() {
                    // SAFETY: the processor supports the features each variant is compiled for.
                    Simd::Avx512 => return unsafe { avx512($($arg),*) },
                    Simd::Avx2 => return unsafe { avx2($($arg),*) },
                    Simd::Portable => {}
                }
            }
            $generic::<Plain>($($arg),*)
        }
    };
}
mod activation;
mod attention;
mod conv;
mod math;
mod memory;
mod output_projection;
mod packed_bf16;
mod product;
mod simd;

pub use activation::{gelu, swiglu, Activation};
pub use attention::{attention, causal_attention};
pub use conv::{dense_conv2d, depthwise_conv2d, spatial_mean};
pub use output_projection::OutputProjection;
pub use packed_bf16::PackedBf16;
pub use product::{
    pointwise_conv, pointwise_conv_residual, Linear, ProductWeight, BF16_DIRECT_MAX_ROWS,
};

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    /// A tensor of pseudo-random values in [-1, 1), the same for the same seed.
    pub(super) fn random(shape: &[usize], seed: u64) -> Tensor {
        let count: usize = shape.iter().product();
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let data: Vec<f32> = (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    /// The largest absolute difference between two tensors of one shape.
    pub(super) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }
}
