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
//! Three submodules hold the rest: [`PackedBf16`] (bf16 weights and their products: AVX-512
//! BF16 dot products for many rows, weights widened in registers for a decoded token), the
//! fused attention ([`causal_attention`], [`attention`]), and a language model's
//! [`OutputProjection`] (logits, or the greedy token screened with an int8 copy).

use std::mem::MaybeUninit;
use std::sync::Arc;

use candle_core::{DType, Device, Module, Result, Storage, Tensor, WithDType, D};
use gemm::Parallelism;
use rayon::prelude::*;

/// The activation applied right after a convolution's bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// No activation.
    Identity,
    /// GELU with the exact (erf) formulation, as PyTorch's `nn.GELU()`.
    Gelu,
}

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

/// The activation applied with candle ops (the generic path).
fn activate(x: &Tensor, activation: Activation) -> Result<Tensor> {
    match activation {
        Activation::Identity => Ok(x.clone()),
        Activation::Gelu => x.gelu_erf(),
    }
}

/// Whether the direct CPU kernels apply to this tensor.
fn on_cpu_f32(tensor: &Tensor) -> bool {
    tensor.device().is_cpu() && tensor.dtype() == DType::F32
}

/// Runs `f` over the tensor's data as one contiguous f32 slice (CPU only).
fn with_f32<R>(tensor: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    with_data(tensor, f)
}

/// Runs `f` over the tensor's data as one contiguous slice of its dtype `T` (CPU only).
fn with_data<T: WithDType, R>(tensor: &Tensor, f: impl FnOnce(&[T]) -> Result<R>) -> Result<R> {
    let tensor = tensor.contiguous()?;
    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("expected a CPU tensor");
    };
    let data = cpu.as_slice::<T>()?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("expected a contiguous tensor");
    };
    f(&data[start..end])
}

/// `a * b + c`, fused where the instruction exists.
///
/// The kernels are generic over it so that the AVX2 build uses FMA instructions while the
/// portable build does not call the (slow) software `fmaf`.
trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// Hardware fused multiply-add (only instantiated inside `target_feature(enable = "fma")`).
struct Fused;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// Separate multiply and add.
struct Plain;

impl MulAdd for Plain {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// The weight element types the dot products read, widened to f32 in registers.
trait Widen: Copy {
    fn widen(self) -> f32;
}

impl Widen for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl Widen for half::bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        // bf16 is the top half of an f32: widening is a shift.
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
}

impl Widen for i8 {
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from(self)
    }
}

/// `Σ_k w[k] * x[k]` in 32 independent lanes that the compiler keeps in vector registers,
/// then summed in a fixed order: the same inputs always give the same bits.
#[inline(always)]
fn dot<M: MulAdd, W: Widen>(weight: &[W], x: &[f32]) -> f32 {
    const LANES: usize = 32;
    let mut lanes = [0f32; LANES];
    let full = weight.len() / LANES * LANES;
    for (w, x) in weight[..full]
        .chunks_exact(LANES)
        .zip(x[..full].chunks_exact(LANES))
    {
        for lane in 0..LANES {
            lanes[lane] = M::mul_add(w[lane].widen(), x[lane], lanes[lane]);
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for (w, x) in weight[full..].iter().zip(&x[full..]) {
        sum = M::mul_add(w.widen(), *x, sum);
    }
    sum
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
    ($(#[$meta:meta])* fn $name:ident => $generic:ident ($($arg:ident : $ty:ty),* $(,)?)) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) {
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

mod attention;
mod output_projection;
mod packed_bf16;

pub use attention::{attention, causal_attention};
pub use output_projection::OutputProjection;
pub use packed_bf16::PackedBf16;
use packed_bf16::{bf16_dot_products_available, PANEL};

/// A vector of `len` values to be written before being read.
fn uninit_vec<T>(len: usize) -> Vec<MaybeUninit<T>> {
    let mut data = Vec::with_capacity(len);
    // SAFETY: `MaybeUninit` needs no initialisation.
    unsafe { data.set_len(len) };
    data
}

/// The values of a vector every element of which has been written.
///
/// # Safety
/// Every element must be initialised.
unsafe fn assume_init<T>(data: Vec<MaybeUninit<T>>) -> Vec<T> {
    let mut data = std::mem::ManuallyDrop::new(data);
    // SAFETY: same layout, length and capacity; the caller guarantees initialisation.
    unsafe { Vec::from_raw_parts(data.as_mut_ptr().cast::<T>(), data.len(), data.capacity()) }
}

/// A raw pointer that parallel tasks share to write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);

// SAFETY: the tasks holding it write disjoint elements and finish before the buffer is used.
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer `count` elements further.
    fn offset(self, count: usize) -> Self {
        Self(self.0.wrapping_add(count))
    }

    /// The raw pointer.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Output channels processed together in registers by the dense convolution.
const LANES: usize = 32;

/// Geometry of a 2D convolution over NHWC data.
#[derive(Debug, Clone, Copy)]
struct ConvGeometry {
    height: usize,
    width: usize,
    out_height: usize,
    out_width: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl ConvGeometry {
    fn new(height: usize, width: usize, kernel: usize, stride: usize, padding: usize) -> Self {
        let out = |size: usize| (size + 2 * padding - kernel) / stride + 1;
        Self {
            height,
            width,
            out_height: out(height),
            out_width: out(width),
            kernel,
            stride,
            padding,
        }
    }

    /// The kernel taps (first, end) that fall inside the input for output position `out`.
    #[inline(always)]
    fn taps(&self, out: usize, size: usize) -> (usize, usize) {
        let origin = (out * self.stride) as isize - self.padding as isize;
        let first = (-origin).max(0) as usize;
        let end = (size as isize - origin).clamp(0, self.kernel as isize) as usize;
        (first, end.max(first))
    }
}

/// One output pixel of a depthwise convolution, channels from `first_channel` on, taps
/// clipped at the borders.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn depthwise_pixel<M: MulAdd, const LANES: usize>(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    pixel: &mut [f32],
    geometry: ConvGeometry,
    out_y: usize,
    out_x: usize,
    first_channel: usize,
    activation: Activation,
) {
    let channels = bias.len();
    let k = geometry.kernel;
    let (ky0, ky1) = geometry.taps(out_y, geometry.height);
    let (kx0, kx1) = geometry.taps(out_x, geometry.width);
    let row_origin = (out_y * geometry.stride) as isize - geometry.padding as isize;
    let col_origin = (out_x * geometry.stride) as isize - geometry.padding as isize;
    let mut c0 = first_channel;
    while c0 < channels {
        let lanes = LANES.min(channels - c0);
        let mut acc = [0f32; LANES];
        acc[..lanes].copy_from_slice(&bias[c0..c0 + lanes]);
        for ky in ky0..ky1 {
            let iy = (row_origin + ky as isize) as usize;
            let first = (iy * geometry.width) as isize + col_origin;
            let taps = &input[(first + kx0 as isize) as usize * channels..]
                [..(kx1 - kx0 - 1) * channels + c0 + lanes];
            let weights =
                &weight[(ky * k + kx0) * channels..][..(kx1 - kx0 - 1) * channels + c0 + lanes];
            if lanes == LANES {
                // Whole vectors: one bounds check per row of taps, none per tap.
                for tap in 0..kx1 - kx0 {
                    let at = tap * channels + c0;
                    // SAFETY: `at + LANES` is within both slices (their lengths above).
                    let (v, w) = unsafe {
                        (
                            &*taps.as_ptr().add(at).cast::<[f32; LANES]>(),
                            &*weights.as_ptr().add(at).cast::<[f32; LANES]>(),
                        )
                    };
                    for j in 0..LANES {
                        acc[j] = M::mul_add(w[j], v[j], acc[j]);
                    }
                }
            } else {
                for tap in 0..kx1 - kx0 {
                    let at = tap * channels + c0;
                    let (v, w) = (&taps[at..at + lanes], &weights[at..at + lanes]);
                    for j in 0..lanes {
                        acc[j] = M::mul_add(w[j], v[j], acc[j]);
                    }
                }
            }
        }
        if activation == Activation::Gelu {
            for v in acc[..lanes].iter_mut() {
                *v = gelu_scalar::<M>(*v);
            }
        }
        pixel[c0..c0 + lanes].copy_from_slice(&acc[..lanes]);
        c0 += lanes;
    }
}

/// One output row of a depthwise convolution: `out[x, c] = bias[c] + Σ w[ky, kx, c] *
/// in[y*s - p + ky, x*s - p + kx, c]`, the input already expanded to the output channels.
///
/// Away from the left and right borders, `PX` neighbouring pixels are computed together,
/// `LANES` channels at a time, so that each weight vector loaded serves `PX` accumulators
/// kept in registers (with `AVX512`, by [`depthwise_block_avx512`]).
#[inline(always)]
fn depthwise_row<M: MulAdd, const LANES: usize, const PX: usize, const AVX512: bool>(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    out_row: &mut [f32],
    geometry: ConvGeometry,
    out_y: usize,
    activation: Activation,
) {
    let channels = bias.len();
    let (k, stride, padding, width) = (
        geometry.kernel,
        geometry.stride,
        geometry.padding,
        geometry.width,
    );
    let (ky0, ky1) = geometry.taps(out_y, geometry.height);
    let row_origin = (out_y * stride) as isize - padding as isize;
    let full = channels / LANES * LANES;
    // Output columns whose taps all fall inside the input: [interior_start, interior_end).
    let interior_start = padding.div_ceil(stride);
    let interior_end = if width + padding >= k {
        ((width + padding - k) / stride + 1).min(geometry.out_width)
    } else {
        0
    };
    let mut out_x = 0;
    while out_x < geometry.out_width {
        if full > 0 && out_x >= interior_start && out_x + PX <= interior_end {
            let first_column = out_x * stride - padding;
            if AVX512 && LANES == 16 && PX == 8 {
                // SAFETY: only the AVX-512 variant is instantiated with `AVX512`.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    depthwise_blocks_avx512::<M>(
                        input, weight, bias, out_row, geometry, out_y, out_x, activation,
                    )
                };
            } else {
                for c0 in (0..full).step_by(LANES) {
                    let mut acc = [[0f32; LANES]; PX];
                    for a in acc.iter_mut() {
                        a.copy_from_slice(&bias[c0..c0 + LANES]);
                    }
                    for ky in ky0..ky1 {
                        let iy = (row_origin + ky as isize) as usize;
                        let row = &input[iy * width * channels..(iy + 1) * width * channels];
                        for kx in 0..k {
                            let w: &[f32; LANES] = weight[(ky * k + kx) * channels + c0..][..LANES]
                                .try_into()
                                .expect("LANES values");
                            for (px, a) in acc.iter_mut().enumerate() {
                                let ix = first_column + px * stride + kx;
                                let v: &[f32; LANES] = row[ix * channels + c0..][..LANES]
                                    .try_into()
                                    .expect("LANES values");
                                for j in 0..LANES {
                                    a[j] = M::mul_add(w[j], v[j], a[j]);
                                }
                            }
                        }
                    }
                    for (px, a) in acc.iter_mut().enumerate() {
                        if activation == Activation::Gelu {
                            for v in a.iter_mut() {
                                *v = gelu_scalar::<M>(*v);
                            }
                        }
                        out_row[(out_x + px) * channels + c0..][..LANES].copy_from_slice(a);
                    }
                }
            }
            for px in 0..PX {
                let x = out_x + px;
                let pixel = &mut out_row[x * channels..(x + 1) * channels];
                depthwise_pixel::<M, LANES>(
                    input, weight, bias, pixel, geometry, out_y, x, full, activation,
                );
            }
            out_x += PX;
        } else {
            let pixel = &mut out_row[out_x * channels..(out_x + 1) * channels];
            depthwise_pixel::<M, LANES>(
                input, weight, bias, pixel, geometry, out_y, out_x, 0, activation,
            );
            out_x += 1;
        }
    }
}

/// The vector channels of eight interior output pixels from `out_x` on, 16 channels per
/// [`depthwise_block_avx512`] call.
///
/// # Safety
///
/// The processor has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn depthwise_blocks_avx512<M: MulAdd>(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    out_row: &mut [f32],
    geometry: ConvGeometry,
    out_y: usize,
    out_x: usize,
    activation: Activation,
) {
    const LANES: usize = 16;
    const PX: usize = 8;
    let channels = bias.len();
    let (k, stride, width) = (geometry.kernel, geometry.stride, geometry.width);
    let (ky0, ky1) = geometry.taps(out_y, geometry.height);
    let first_row = (out_y * stride + ky0) - geometry.padding;
    let first_column = out_x * stride - geometry.padding;
    // Every tap the blocks read lies inside `input` and `weight`.
    assert!(
        ky1 <= k
            && (first_row + ky1 - ky0) * width * channels <= input.len()
            && first_column + (PX - 1) * stride + k <= width
            && weight.len() >= k * k * channels
    );
    for c0 in (0..channels / LANES * LANES).step_by(LANES) {
        let pixels = &mut out_row[out_x * channels + c0..][..(PX - 1) * channels + LANES];
        // SAFETY: the caller guarantees AVX-512F; the taps are in bounds (asserted above).
        unsafe {
            depthwise_block_avx512(
                input[(first_row * width + first_column) * channels + c0..].as_ptr(),
                width * channels,
                ky1 - ky0,
                weight[ky0 * k * channels + c0..].as_ptr(),
                k,
                channels,
                stride,
                &bias[c0..c0 + LANES],
                pixels,
            )
        };
        if activation == Activation::Gelu {
            for px in 0..PX {
                for v in &mut pixels[px * channels..px * channels + LANES] {
                    *v = gelu_scalar::<M>(*v);
                }
            }
        }
    }
}

/// Eight neighbouring output pixels of a depthwise convolution, 16 channels, all taps
/// inside the input: `out[px * channels + j] = bias[j] + Σ_ky Σ_kx weight[(ky * kernel +
/// kx) * channels + j] * input[ky * row_stride + (px * stride + kx) * channels + j]` for
/// `ky < rows`, with the accumulators in AVX-512 registers.
///
/// # Safety
///
/// The processor has AVX-512F, and `input` and `weight` hold every element the formula
/// reads.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn depthwise_block_avx512(
    input: *const f32,
    row_stride: usize,
    rows: usize,
    weight: *const f32,
    kernel: usize,
    channels: usize,
    stride: usize,
    bias: &[f32],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!(bias.len() >= 16 && out.len() >= 7 * channels + 16);
    // SAFETY: the caller guarantees every address read; `out` holds every address written.
    unsafe {
        let mut acc = [_mm512_loadu_ps(bias.as_ptr()); 8];
        for ky in 0..rows {
            let row = input.add(ky * row_stride);
            let weights = weight.add(ky * kernel * channels);
            for kx in 0..kernel {
                let w = _mm512_loadu_ps(weights.add(kx * channels));
                for (px, a) in acc.iter_mut().enumerate() {
                    let v = _mm512_loadu_ps(row.add((px * stride + kx) * channels));
                    *a = _mm512_fmadd_ps(w, v, *a);
                }
            }
        }
        for (px, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(out.as_mut_ptr().add(px * channels), *a);
        }
    }
}

#[inline(always)]
fn depthwise_rows<M: MulAdd, const LANES: usize, const PX: usize, const AVX512: bool>(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    out_rows: &mut [f32],
    geometry: ConvGeometry,
    first_row: usize,
    activation: Activation,
) {
    let row_len = geometry.out_width * bias.len();
    for (i, out_row) in out_rows.chunks_mut(row_len).enumerate() {
        depthwise_row::<M, LANES, PX, AVX512>(
            input,
            weight,
            bias,
            out_row,
            geometry,
            first_row + i,
            activation,
        );
    }
}

/// Depthwise convolution rows with the register blocking that suits the processor: 16
/// channels by 8 pixels in AVX-512 registers, by 4 pixels in AVX2 registers.
fn depthwise_rows_dispatch(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    out_rows: &mut [f32],
    geometry: ConvGeometry,
    first_row: usize,
    activation: Activation,
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512(
            input: &[f32],
            weight: &[f32],
            bias: &[f32],
            out_rows: &mut [f32],
            geometry: ConvGeometry,
            first_row: usize,
            activation: Activation,
        ) {
            depthwise_rows::<Fused, 16, 8, true>(
                input, weight, bias, out_rows, geometry, first_row, activation,
            )
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(
            input: &[f32],
            weight: &[f32],
            bias: &[f32],
            out_rows: &mut [f32],
            geometry: ConvGeometry,
            first_row: usize,
            activation: Activation,
        ) {
            depthwise_rows::<Fused, 16, 4, false>(
                input, weight, bias, out_rows, geometry, first_row, activation,
            )
        }
        // SAFETY: the processor supports the features each variant is compiled for.
        match simd() {
            Simd::Avx512 => {
                return unsafe {
                    avx512(
                        input, weight, bias, out_rows, geometry, first_row, activation,
                    )
                }
            }
            Simd::Avx2 => {
                return unsafe {
                    avx2(
                        input, weight, bias, out_rows, geometry, first_row, activation,
                    )
                }
            }
            Simd::Portable => {}
        }
    }
    depthwise_rows::<Plain, 16, 2, false>(
        input, weight, bias, out_rows, geometry, first_row, activation,
    )
}

/// Repeats every channel of NHWC data `multiplier` times (channel `c` becomes output
/// channels `c*m .. c*m + m`), the input layout of a grouped convolution with one input
/// channel per group and `m` outputs each.
fn repeat_channels(data: &[f32], channels: usize, multiplier: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len() * multiplier];
    out.par_chunks_mut(channels * multiplier * 64)
        .zip(data.par_chunks(channels * 64))
        .for_each(|(out, data)| {
            for (out_px, px) in out
                .chunks_mut(channels * multiplier)
                .zip(data.chunks(channels))
            {
                for (out_c, &v) in out_px.chunks_mut(multiplier).zip(px) {
                    out_c.fill(v);
                }
            }
        });
    out
}

/// Depthwise convolution over NHWC data, with `multiplier = out_channels / in_channels`
/// outputs per input channel (`groups = in_channels`, as timm's `group_size=1` convs).
///
/// `x`: `[batch, height, width, in_channels]`; `weight`: `[kernel, kernel, out_channels]`;
/// `bias`: `[out_channels]`. Returns `[batch, out_height, out_width, out_channels]`.
pub fn depthwise_conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    activation: Activation,
) -> Result<Tensor> {
    let (batch, height, width, in_channels) = x.dims4()?;
    let (kernel, kernel_w, out_channels) = weight.dims3()?;
    if kernel != kernel_w || out_channels % in_channels != 0 || bias.dims1()? != out_channels {
        candle_core::bail!(
            "depthwise_conv2d: input {:?}, weight {:?}, bias {:?} do not fit",
            x.dims(),
            weight.dims(),
            bias.dims()
        );
    }
    let multiplier = out_channels / in_channels;
    if !(on_cpu_f32(x) && on_cpu_f32(weight) && on_cpu_f32(bias)) {
        let weight = weight.permute((2, 0, 1))?.unsqueeze(1)?;
        let out = x
            .permute((0, 3, 1, 2))?
            .conv2d(&weight, padding, stride, 1, in_channels)?
            .permute((0, 2, 3, 1))?
            .broadcast_add(bias)?;
        return activate(&out, activation)?.contiguous();
    }
    let geometry = ConvGeometry::new(height, width, kernel, stride, padding);
    let image_len = height * width * out_channels;
    let out_image_len = geometry.out_height * geometry.out_width * out_channels;
    let mut out = uninit_vec::<f32>(batch * out_image_len);
    with_f32(x, |input| {
        with_f32(weight, |weight| {
            with_f32(bias, |bias| {
                let expanded;
                let input = if multiplier == 1 {
                    input
                } else {
                    expanded = repeat_channels(input, in_channels, multiplier);
                    &expanded
                };
                let row_len = geometry.out_width * out_channels;
                out.par_chunks_mut(row_len)
                    .enumerate()
                    .for_each(|(row, out_row)| {
                        // SAFETY: the kernel writes every element of its row before it reads
                        // any (an activation reads back what it wrote).
                        let out_row = unsafe {
                            std::slice::from_raw_parts_mut(
                                out_row.as_mut_ptr().cast::<f32>(),
                                out_row.len(),
                            )
                        };
                        let image = row / geometry.out_height;
                        let y = row % geometry.out_height;
                        let input = &input[image * image_len..(image + 1) * image_len];
                        depthwise_rows_dispatch(
                            input, weight, bias, out_row, geometry, y, activation,
                        );
                    });
                Ok(())
            })
        })
    })?;
    // SAFETY: the rows cover every element.
    let out = unsafe { assume_init(out) };
    Tensor::from_vec(
        out,
        (batch, geometry.out_height, geometry.out_width, out_channels),
        &Device::Cpu,
    )
}

/// One output row of a dense convolution: `out[x, o] = bias[o] + Σ w[ky, kx, i, o] *
/// in[.., .., i]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dense_row<M: MulAdd>(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    in_channels: usize,
    out_row: &mut [f32],
    geometry: ConvGeometry,
    out_y: usize,
    activation: Activation,
) {
    let out_channels = bias.len();
    let k = geometry.kernel;
    let (ky0, ky1) = geometry.taps(out_y, geometry.height);
    let row_origin = (out_y * geometry.stride) as isize - geometry.padding as isize;
    for out_x in 0..geometry.out_width {
        let (kx0, kx1) = geometry.taps(out_x, geometry.width);
        let col_origin = (out_x * geometry.stride) as isize - geometry.padding as isize;
        let pixel = &mut out_row[out_x * out_channels..(out_x + 1) * out_channels];
        let mut c0 = 0;
        while c0 < out_channels {
            let lanes = LANES.min(out_channels - c0);
            let mut acc = [0f32; LANES];
            acc[..lanes].copy_from_slice(&bias[c0..c0 + lanes]);
            for ky in ky0..ky1 {
                let iy = (row_origin + ky as isize) as usize;
                for kx in kx0..kx1 {
                    let ix = (col_origin + kx as isize) as usize;
                    let start = (iy * geometry.width + ix) * in_channels;
                    for (i, &v) in input[start..start + in_channels].iter().enumerate() {
                        let tap = ((ky * k + kx) * in_channels + i) * out_channels + c0;
                        let w = &weight[tap..tap + lanes];
                        for j in 0..lanes {
                            acc[j] = M::mul_add(w[j], v, acc[j]);
                        }
                    }
                }
            }
            if activation == Activation::Gelu {
                for v in acc[..lanes].iter_mut() {
                    *v = gelu_scalar::<M>(*v);
                }
            }
            pixel[c0..c0 + lanes].copy_from_slice(&acc[..lanes]);
            c0 += lanes;
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dense_rows<M: MulAdd>(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    in_channels: usize,
    out_rows: &mut [f32],
    geometry: ConvGeometry,
    first_row: usize,
    activation: Activation,
) {
    let row_len = geometry.out_width * bias.len();
    for (i, out_row) in out_rows.chunks_mut(row_len).enumerate() {
        dense_row::<M>(
            input,
            weight,
            bias,
            in_channels,
            out_row,
            geometry,
            first_row + i,
            activation,
        );
    }
}

dispatch! {
    /// Dense convolution rows, dispatched on the processor's features.
    fn dense_rows_dispatch => dense_rows(
        input: &[f32],
        weight: &[f32],
        bias: &[f32],
        in_channels: usize,
        out_rows: &mut [f32],
        geometry: ConvGeometry,
        first_row: usize,
        activation: Activation,
    )
}

/// Dense (ungrouped) convolution over NHWC data, meant for layers with few input channels
/// such as a stem's first convolution (the work is done directly, without im2col).
///
/// `x`: `[batch, height, width, in_channels]`; `weight`: `[kernel, kernel, in_channels,
/// out_channels]`; `bias`: `[out_channels]`.
pub fn dense_conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    activation: Activation,
) -> Result<Tensor> {
    let (batch, height, width, in_channels) = x.dims4()?;
    let (kernel, kernel_w, weight_in, out_channels) = weight.dims4()?;
    if kernel != kernel_w || weight_in != in_channels || bias.dims1()? != out_channels {
        candle_core::bail!(
            "dense_conv2d: input {:?}, weight {:?}, bias {:?} do not fit",
            x.dims(),
            weight.dims(),
            bias.dims()
        );
    }
    if !(on_cpu_f32(x) && on_cpu_f32(weight) && on_cpu_f32(bias)) {
        let weight = weight.permute((3, 2, 0, 1))?;
        let out = x
            .permute((0, 3, 1, 2))?
            .conv2d(&weight, padding, stride, 1, 1)?
            .permute((0, 2, 3, 1))?
            .broadcast_add(bias)?;
        return activate(&out, activation)?.contiguous();
    }
    let geometry = ConvGeometry::new(height, width, kernel, stride, padding);
    let image_len = height * width * in_channels;
    let out_image_len = geometry.out_height * geometry.out_width * out_channels;
    let mut out = vec![0f32; batch * out_image_len];
    with_f32(x, |input| {
        with_f32(weight, |weight| {
            with_f32(bias, |bias| {
                let row_len = geometry.out_width * out_channels;
                out.par_chunks_mut(row_len)
                    .enumerate()
                    .for_each(|(row, out_row)| {
                        let image = row / geometry.out_height;
                        let y = row % geometry.out_height;
                        let input = &input[image * image_len..(image + 1) * image_len];
                        dense_rows_dispatch(
                            input,
                            weight,
                            bias,
                            in_channels,
                            out_row,
                            geometry,
                            y,
                            activation,
                        );
                    });
                Ok(())
            })
        })
    })?;
    Tensor::from_vec(
        out,
        (batch, geometry.out_height, geometry.out_width, out_channels),
        &Device::Cpu,
    )
}

/// `2^n` for integer `n` in the normal range, built from the exponent bits.
#[inline(always)]
fn exp2_int(n: i32) -> f32 {
    f32::from_bits(((n + 127) as u32) << 23)
}

/// `e^x` for `x <= 0`, to f32 precision, in a form the compiler vectorises (no calls, no
/// branches): `x = n ln2 + r` with `|r| <= ln2/2`, then `2^n` times a degree-7 Taylor
/// polynomial of `e^r`.
#[inline(always)]
fn exp_nonpositive<M: MulAdd>(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5 * 2^23 rounds to the nearest integer, which lands in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let shifted = M::mul_add(x, LOG2_E, ROUND);
    let n = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let nf = shifted - ROUND;
    let r = M::mul_add(-nf, LN2_LO, M::mul_add(-nf, LN2_HI, x));
    let mut p = 1.0 / 5040.0;
    p = M::mul_add(p, r, 1.0 / 720.0);
    p = M::mul_add(p, r, 1.0 / 120.0);
    p = M::mul_add(p, r, 1.0 / 24.0);
    p = M::mul_add(p, r, 1.0 / 6.0);
    p = M::mul_add(p, r, 0.5);
    p = M::mul_add(p, r, 1.0);
    p = M::mul_add(p, r, 1.0);
    p * exp2_int(n)
}

/// Exact-form GELU, `x/2 * (1 + erf(x/√2))`, with erfc from Abramowitz & Stegun 7.1.26
/// (absolute error below 1.5e-7), evaluated on `|x|` so that large negative inputs keep
/// their relative precision.
#[inline(always)]
fn gelu_scalar<M: MulAdd>(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_8;
    const A4: f32 = -1.453_152;
    const A5: f32 = 1.061_405_4;
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / M::mul_add(P, z, 1.0);
    let mut poly = A5;
    poly = M::mul_add(poly, t, A4);
    poly = M::mul_add(poly, t, A3);
    poly = M::mul_add(poly, t, A2);
    poly = M::mul_add(poly, t, A1);
    let erfc = poly * t * exp_nonpositive::<M>(-z * z);
    // For x >= 0: 1 + erf = 2 - erfc; for x < 0: 1 + erf(x) = erfc(|x|).
    let one_plus_erf = if x >= 0.0 { 2.0 - erfc } else { erfc };
    0.5 * x * one_plus_erf
}

/// GELU of every element, in place.
#[inline(always)]
fn gelu_slice<M: MulAdd>(data: &mut [f32]) {
    for v in data.iter_mut() {
        *v = gelu_scalar::<M>(*v);
    }
}

dispatch! {
    /// GELU in place, dispatched on the processor's features.
    fn gelu_dispatch => gelu_slice(data: &mut [f32])
}

/// The epilogue of a product block: `act(x + bias)` over `rows` rows of `width` values,
/// `stride` apart (`bias`, when there is one, has `width` values).
#[inline(always)]
fn finish_block<M: MulAdd>(
    block: SharedMut,
    rows: usize,
    width: usize,
    stride: usize,
    bias: Option<&[f32]>,
    activation: Activation,
) {
    for row in 0..rows {
        // SAFETY: the caller owns these `width` values of every row of the block.
        let values = unsafe { std::slice::from_raw_parts_mut(block.0.add(row * stride), width) };
        match (bias, activation) {
            (None, Activation::Identity) => return,
            (Some(bias), Activation::Identity) => {
                for (v, &b) in values.iter_mut().zip(bias) {
                    *v += b;
                }
            }
            (Some(bias), Activation::Gelu) => {
                for (v, &b) in values.iter_mut().zip(bias) {
                    *v = gelu_scalar::<M>(*v + b);
                }
            }
            (None, Activation::Gelu) => {
                for v in values.iter_mut() {
                    *v = gelu_scalar::<M>(*v);
                }
            }
        }
    }
}

dispatch! {
    /// The product epilogue, dispatched on the processor's features.
    fn finish_block_dispatch => finish_block(
        block: SharedMut,
        rows: usize,
        width: usize,
        stride: usize,
        bias: Option<&[f32]>,
        activation: Activation,
    )
}

/// Fills a product block with `residual + bias` before the product is accumulated onto it.
#[inline(always)]
fn prefill_block<M: MulAdd>(
    block: SharedMut,
    residual: &[f32],
    rows: usize,
    width: usize,
    stride: usize,
    bias: Option<&[f32]>,
) {
    for row in 0..rows {
        // SAFETY: the caller owns these `width` values of every row of the block.
        let values = unsafe { std::slice::from_raw_parts_mut(block.0.add(row * stride), width) };
        let res = &residual[row * stride..][..width];
        match bias {
            Some(bias) => {
                for ((v, &b), &r) in values.iter_mut().zip(bias).zip(res) {
                    *v = r + b;
                }
            }
            None => values.copy_from_slice(res),
        }
    }
}

dispatch! {
    /// The residual prefill, dispatched on the processor's features.
    fn prefill_block_dispatch => prefill_block(
        block: SharedMut,
        residual: &[f32],
        rows: usize,
        width: usize,
        stride: usize,
        bias: Option<&[f32]>,
    )
}

/// The weight of a 1x1 convolution or linear layer, stored the way its product reads it.
#[derive(Debug, Clone)]
pub enum ProductWeight {
    /// `[inputs, outputs]`, in the activations' dtype: f32 on the CPU runs the `gemm`
    /// crate's kernels (this layout is the one they read fastest), anything else candle's
    /// matmul.
    Plain(Tensor),
    /// PyTorch's `[outputs, inputs]` as loaded, otherwise like [`Self::Plain`]: a language
    /// model's weights, which a transposed copy at load would double in memory for a while
    /// and scatter over the heap (the image encoder, run next, then faults in fresh pages).
    AsLoaded(Tensor),
    /// bf16 in the panel layout of [`PackedBf16`], multiplied with f32 activations (CPU).
    PackedBf16(Arc<PackedBf16>),
}

impl ProductWeight {
    /// Stores PyTorch's `[outputs, inputs]` weight: packed when it is bf16 on the CPU
    /// (bf16 products, f32 activations), else transposed.
    pub fn from_torch(weight: &Tensor) -> Result<Self> {
        match Self::packed(weight)? {
            Some(packed) => Ok(packed),
            None => Ok(Self::Plain(weight.t()?.contiguous()?)),
        }
    }

    /// Like [`Self::from_torch`], but an unpacked weight stays as it was loaded.
    pub fn from_torch_as_loaded(weight: &Tensor) -> Result<Self> {
        match Self::packed(weight)? {
            Some(packed) => Ok(packed),
            None => Ok(Self::AsLoaded(weight.contiguous()?)),
        }
    }

    /// The packed form of a bf16 weight on the CPU.
    fn packed(weight: &Tensor) -> Result<Option<Self>> {
        if weight.device().is_cpu() && weight.dtype() == DType::BF16 {
            Ok(Some(Self::PackedBf16(Arc::new(PackedBf16::pack(weight)?))))
        } else {
            Ok(None)
        }
    }

    /// `(inputs, outputs)`.
    pub fn dims(&self) -> Result<(usize, usize)> {
        match self {
            Self::Plain(weight) => weight.dims2(),
            Self::AsLoaded(weight) => {
                let (outputs, inputs) = weight.dims2()?;
                Ok((inputs, outputs))
            }
            Self::PackedBf16(weight) => Ok((weight.inputs(), weight.features())),
        }
    }

    /// `x @ weight + bias` with candle ops (the generic path).
    fn candle_product(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let product = match self {
            Self::Plain(weight) => x.broadcast_matmul(weight)?,
            Self::AsLoaded(weight) => x.broadcast_matmul(&weight.t()?)?,
            Self::PackedBf16(_) => candle_core::bail!("packed bf16 weights need the CPU kernels"),
        };
        match bias {
            Some(bias) => product.broadcast_add(bias),
            None => Ok(product),
        }
    }
}

/// Which product the CPU kernels run for a weight and a row count.
#[derive(Clone, Copy)]
enum Product<'a> {
    /// f32 `[inner, cols]` (`[cols, inner]` when `as_loaded`) through the `gemm` crate.
    F32 { weight: &'a [f32], as_loaded: bool },
    /// Packed bf16 with bf16-rounded inputs (from [`packed_bf16::round_rows`]) and
    /// AVX-512 BF16 dot products.
    Bf16Dots(&'a PackedBf16, &'a [u32]),
    /// Packed bf16 widened to f32 in registers: exact products of the f32 inputs.
    Bf16Widened(&'a PackedBf16),
}

/// Rows below which a product is split by columns instead of rows.
const MIN_ROWS_PER_TASK: usize = 96;
/// Rows of one row block (its output stays in L2 cache for the epilogue).
const MAX_ROWS_PER_TASK: usize = 384;
/// Up to this many rows (decoding a token) a packed bf16 product widens the weight and
/// keeps the inputs in f32; more rows round the inputs to bf16 and use bf16 dot products
/// where the processor has them.
pub const BF16_DIRECT_MAX_ROWS: usize = 4;

/// `out = act(x @ weight + bias)` or `out = residual + x @ weight + bias` for row-major
/// `x: [rows, inner]`, split over the thread pool by blocks of rows (or of columns when
/// there are few rows), each block finished right after its product.
#[allow(clippy::too_many_arguments)]
fn fused_product(
    x: &[f32],
    weight: &ProductWeight,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    activation: Activation,
    rows: usize,
    inner: usize,
    cols: usize,
) -> Result<Vec<f32>> {
    let rounded;
    let product = match weight {
        ProductWeight::Plain(tensor) | ProductWeight::AsLoaded(tensor) => {
            let as_loaded = matches!(weight, ProductWeight::AsLoaded(_));
            return with_f32(tensor, |weight| {
                let product = Product::F32 { weight, as_loaded };
                Ok(run_product(
                    x, product, bias, residual, activation, rows, inner, cols,
                ))
            });
        }
        ProductWeight::PackedBf16(weight)
            if rows > BF16_DIRECT_MAX_ROWS && bf16_dot_products_available() =>
        {
            // SAFETY: the processor has AVX-512 BF16 (checked just above).
            rounded = unsafe { packed_bf16::round_rows(x, inner) };
            Product::Bf16Dots(weight, &rounded)
        }
        ProductWeight::PackedBf16(weight) => Product::Bf16Widened(weight),
    };
    Ok(run_product(
        x, product, bias, residual, activation, rows, inner, cols,
    ))
}

/// The task split and per-block work of [`fused_product`].
#[allow(clippy::too_many_arguments)]
fn run_product(
    x: &[f32],
    product: Product,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    activation: Activation,
    rows: usize,
    inner: usize,
    cols: usize,
) -> Vec<f32> {
    let mut out = uninit_vec::<f32>(rows * cols);
    let dst = SharedMut(out.as_mut_ptr().cast::<f32>());
    let threads = rayon::current_num_threads().max(1);
    // A weight as loaded is packed by `gemm` for every task that reads it, transposing it
    // on the way: one task, parallel inside `gemm`, packs it once.
    let shared_packing = matches!(
        product,
        Product::F32 {
            as_loaded: true,
            ..
        }
    );
    let parallelism = if shared_packing {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // One task: rows [r0, r1) x columns [c0, c1).
    let task = |r0: usize, r1: usize, c0: usize, c1: usize| {
        let block = dst.offset(r0 * cols + c0);
        let (m, n) = (r1 - r0, c1 - c0);
        let bias = bias.map(|bias| &bias[c0..c1]);
        if let Some(residual) = residual {
            prefill_block_dispatch(block, &residual[r0 * cols + c0..], m, n, cols, bias);
        }
        let accumulate = residual.is_some();
        let panels = c0 / PANEL..c1.div_ceil(PANEL);
        // SAFETY: the pointers and strides describe `x[r0..r1]`, the weight's columns
        // `c0..c1` (whole panels for packed weights: `c0` is a multiple of `PANEL`) and the
        // task's own block of `out`; when not accumulating the block may be uninitialised.
        unsafe {
            match product {
                Product::F32 { weight, as_loaded } => gemm::gemm(
                    m,
                    n,
                    inner,
                    block.ptr(),
                    1,
                    cols as isize,
                    accumulate,
                    x.as_ptr().add(r0 * inner),
                    1,
                    inner as isize,
                    weight.as_ptr().add(if as_loaded { c0 * inner } else { c0 }),
                    if as_loaded { inner as isize } else { 1 },
                    if as_loaded { 1 } else { cols as isize },
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                ),
                Product::Bf16Dots(weight, a) => {
                    weight.product_block(a, r0..r1, panels, dst.ptr(), cols, accumulate)
                }
                Product::Bf16Widened(weight) => {
                    weight.widened_block(x, r0..r1, panels, dst.ptr(), cols, accumulate)
                }
            }
        }
        if residual.is_none() {
            finish_block_dispatch(block, m, n, cols, bias, activation);
        }
    };
    // Column splits fall on whole registers (f32) or whole panels (packed bf16).
    let column_step = match product {
        Product::F32 { .. } => 16,
        Product::Bf16Dots(..) | Product::Bf16Widened(_) => PANEL,
    };
    if threads == 1 || shared_packing || rows * cols * inner < 1 << 16 {
        task(0, rows, 0, cols);
    } else if rows >= threads * MIN_ROWS_PER_TASK
        && !(matches!(product, Product::Bf16Dots(..)) && rows <= MAX_ROWS_PER_TASK)
    {
        // Blocks of rows, their count a multiple of the threads so that none idles at the end.
        let blocks = rows.div_ceil(MAX_ROWS_PER_TASK).max(threads * 2);
        let per_task = rows.div_ceil(blocks.next_multiple_of(threads));
        (0..rows.div_ceil(per_task))
            .into_par_iter()
            .for_each(|i| task(i * per_task, ((i + 1) * per_task).min(rows), 0, cols));
    } else {
        // Few rows (or a packed weight that one block of rows covers): split the columns,
        // so that each weight value is read once.
        let per_task = cols.div_ceil(threads).next_multiple_of(column_step);
        (0..cols.div_ceil(per_task))
            .into_par_iter()
            .for_each(|i| task(0, rows, i * per_task, ((i + 1) * per_task).min(cols)));
    }
    // SAFETY: the tasks covered every row and column of `out`.
    unsafe { assume_init(out) }
}

/// Checks `x: [..., in]` against a weight of `inputs` inputs and `outputs` outputs and
/// returns (rows, out dims).
fn product_shape(x: &Tensor, (inputs, outputs): (usize, usize)) -> Result<(usize, Vec<usize>)> {
    let dims = x.dims();
    let Some((&last, leading)) = dims.split_last() else {
        candle_core::bail!("a 1x1 convolution needs at least one dimension");
    };
    if last != inputs {
        candle_core::bail!("input {dims:?} does not fit a weight of {inputs} inputs");
    }
    let mut out_dims = leading.to_vec();
    out_dims.push(outputs);
    Ok((leading.iter().product(), out_dims))
}

/// Runs `f` over the bias's f32 data, or `None`.
fn with_optional_f32<R>(
    tensor: Option<&Tensor>,
    f: impl FnOnce(Option<&[f32]>) -> Result<R>,
) -> Result<R> {
    match tensor {
        Some(tensor) => with_f32(tensor, |data| f(Some(data))),
        None => f(None),
    }
}

/// Whether the direct CPU kernels apply to a product of `x` with `weight`.
fn direct_product(x: &Tensor, weight: &ProductWeight, others: &[Option<&Tensor>]) -> bool {
    let weight_direct = match weight {
        ProductWeight::Plain(weight) | ProductWeight::AsLoaded(weight) => on_cpu_f32(weight),
        ProductWeight::PackedBf16(_) => true,
    };
    weight_direct && on_cpu_f32(x) && others.iter().flatten().all(|t| on_cpu_f32(t))
}

/// A 1x1 convolution (or linear layer) over the last dimension: `act(x @ weight + bias)`.
pub fn pointwise_conv(
    x: &Tensor,
    weight: &ProductWeight,
    bias: Option<&Tensor>,
    activation: Activation,
) -> Result<Tensor> {
    let (inner, cols) = weight.dims()?;
    let (rows, out_dims) = product_shape(x, (inner, cols))?;
    if !direct_product(x, weight, &[bias]) {
        return activate(&weight.candle_product(x, bias)?, activation);
    }
    let out = with_f32(x, |x| {
        with_optional_f32(bias, |b| {
            fused_product(x, weight, b, None, activation, rows, inner, cols)
        })
    })?;
    Tensor::from_vec(out, out_dims, &Device::Cpu)
}

/// A 1x1 convolution added to a residual: `residual + x @ weight + bias`.
pub fn pointwise_conv_residual(
    x: &Tensor,
    weight: &ProductWeight,
    bias: Option<&Tensor>,
    residual: &Tensor,
) -> Result<Tensor> {
    let (inner, cols) = weight.dims()?;
    let (rows, out_dims) = product_shape(x, (inner, cols))?;
    if residual.dims() != out_dims.as_slice() {
        candle_core::bail!(
            "output {:?} and residual {:?} differ",
            out_dims,
            residual.dims()
        );
    }
    if !direct_product(x, weight, &[bias, Some(residual)]) {
        return weight.candle_product(x, bias)? + residual;
    }
    let out = with_f32(x, |x| {
        with_optional_f32(bias, |b| {
            with_f32(residual, |r| {
                let activation = Activation::Identity;
                fused_product(x, weight, b, Some(r), activation, rows, inner, cols)
            })
        })
    })?;
    Tensor::from_vec(out, out_dims, &Device::Cpu)
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

/// A linear layer `act(x @ weight + bias)`, as candle [`Module`]: the transformers'
/// projections. bf16 weights on the CPU are packed for the bf16 products and the layer
/// takes and returns f32 activations; elsewhere the layer runs in its weight's dtype.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: ProductWeight,
    bias: Option<Tensor>,
    activation: Activation,
}

impl Linear {
    /// A linear layer from PyTorch's `[out, in]` weight and its bias (converted to the
    /// activations' dtype, see [`activation_dtype`]).
    pub fn from_torch(
        weight: &Tensor,
        bias: Option<&Tensor>,
        activation: Activation,
    ) -> Result<Self> {
        Self::new(ProductWeight::from_torch(weight)?, weight, bias, activation)
    }

    /// Like [`Self::from_torch`], but an unpacked weight stays as it was loaded (see
    /// [`ProductWeight::AsLoaded`]).
    pub fn from_torch_as_loaded(
        weight: &Tensor,
        bias: Option<&Tensor>,
        activation: Activation,
    ) -> Result<Self> {
        Self::new(
            ProductWeight::from_torch_as_loaded(weight)?,
            weight,
            bias,
            activation,
        )
    }

    /// The layer with `stored`, the form of `weight` it multiplies with.
    fn new(
        stored: ProductWeight,
        weight: &Tensor,
        bias: Option<&Tensor>,
        activation: Activation,
    ) -> Result<Self> {
        let activations = activation_dtype(weight.dtype(), weight.device());
        Ok(Self {
            weight: stored,
            bias: bias.map(|bias| bias.to_dtype(activations)).transpose()?,
            activation,
        })
    }

    /// The layer's output added to `residual`.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        debug_assert_eq!(self.activation, Activation::Identity);
        pointwise_conv_residual(x, &self.weight, self.bias.as_ref(), residual)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        pointwise_conv(x, &self.weight, self.bias.as_ref(), self.activation)
    }
}

/// Mean over every dimension but the first and last: `[batch, ..., channels]` ->
/// `[batch, channels]` (global average pooling of NHWC data).
pub fn spatial_mean(x: &Tensor) -> Result<Tensor> {
    let (batch, channels) = (x.dim(0)?, x.dim(D::Minus1)?);
    x.reshape((batch, (), channels))?.mean(1)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The reference: candle's own grouped convolution on NCHW data.
    fn candle_depthwise(
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
        padding: usize,
    ) -> Tensor {
        let in_channels = x.dim(3).unwrap();
        let weight = weight.permute((2, 0, 1)).unwrap().unsqueeze(1).unwrap();
        x.permute((0, 3, 1, 2))
            .unwrap()
            .conv2d(&weight, padding, stride, 1, in_channels)
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap()
            .broadcast_add(bias)
            .unwrap()
    }

    #[test]
    fn depthwise_matches_candle_for_strides_kernels_and_multipliers() {
        for &(channels, multiplier, kernel, stride, size) in &[
            (8usize, 1usize, 3usize, 1usize, 9usize),
            (40, 1, 7, 1, 11),
            (33, 1, 7, 2, 12),
            (16, 2, 7, 2, 13),
            (35, 2, 3, 2, 8),
            (64, 1, 3, 2, 6),
            // Wide enough for blocks of 8 interior pixels (vector channels plus a tail).
            (40, 1, 7, 1, 20),
            (48, 1, 3, 1, 18),
            (32, 1, 3, 2, 24),
            (16, 2, 7, 2, 30),
        ] {
            let x = random(&[2, size, size + 1, channels], 1);
            let weight = random(&[kernel, kernel, channels * multiplier], 2);
            let bias = random(&[channels * multiplier], 3);
            let padding = kernel / 2;
            let fast = depthwise_conv2d(&x, &weight, &bias, stride, padding, Activation::Identity)
                .unwrap();
            let reference = candle_depthwise(&x, &weight, &bias, stride, padding);
            assert_eq!(fast.dims(), reference.dims());
            let diff = max_abs_diff(&fast, &reference);
            assert!(
                diff < 1e-4,
                "{channels}x{multiplier} k{kernel} s{stride}: {diff}"
            );
        }
    }

    #[test]
    fn dense_matches_candle() {
        let x = random(&[2, 9, 10, 3], 4);
        let weight = random(&[3, 3, 3, 40], 5);
        let bias = random(&[40], 6);
        let fast = dense_conv2d(&x, &weight, &bias, 2, 1, Activation::Identity).unwrap();
        let reference = x
            .permute((0, 3, 1, 2))
            .unwrap()
            .conv2d(&weight.permute((3, 2, 0, 1)).unwrap(), 1, 2, 1, 1)
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
        assert_eq!(fast.dims(), reference.dims());
        assert!(max_abs_diff(&fast, &reference) < 1e-4);
    }

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
    fn pointwise_fuses_bias_activation_and_residual() {
        // Small, split by rows, split by columns.
        for (rows, inner, cols) in [(30, 16, 24), (1000, 64, 40), (40, 96, 200)] {
            check_pointwise(rows, inner, cols);
        }
    }

    #[test]
    fn fused_gelu_matches_a_separate_one() {
        let x = random(&[1, 9, 8, 40], 11);
        let weight = random(&[3, 3, 40], 12);
        let bias = random(&[40], 13);
        let fused = depthwise_conv2d(&x, &weight, &bias, 2, 1, Activation::Gelu).unwrap();
        let separate =
            gelu(&depthwise_conv2d(&x, &weight, &bias, 2, 1, Activation::Identity).unwrap())
                .unwrap();
        assert!(max_abs_diff(&fused, &separate) < 1e-6);
        // Blocks of 8 interior pixels.
        let wide = random(&[1, 6, 24, 40], 16);
        let fused = depthwise_conv2d(&wide, &weight, &bias, 1, 1, Activation::Gelu).unwrap();
        let separate =
            gelu(&depthwise_conv2d(&wide, &weight, &bias, 1, 1, Activation::Identity).unwrap())
                .unwrap();
        assert!(max_abs_diff(&fused, &separate) < 1e-6);
        let weight = random(&[3, 3, 40, 8], 14);
        let bias = random(&[8], 15);
        let fused = dense_conv2d(&x, &weight, &bias, 1, 1, Activation::Gelu).unwrap();
        let separate =
            gelu(&dense_conv2d(&x, &weight, &bias, 1, 1, Activation::Identity).unwrap()).unwrap();
        assert!(max_abs_diff(&fused, &separate) < 1e-6);
    }

    fn check_pointwise(rows: usize, inner: usize, cols: usize) {
        let x = random(&[rows, inner], 7);
        let weight = random(&[inner, cols], 8);
        let bias = random(&[cols], 9);
        let plain = x.matmul(&weight).unwrap().broadcast_add(&bias).unwrap();
        let torch_weight = weight.t().unwrap();
        let stored = [
            ProductWeight::from_torch(&torch_weight).unwrap(),
            ProductWeight::from_torch_as_loaded(&torch_weight).unwrap(),
        ];
        for weight in &stored {
            let shape = format!("{rows}x{inner}x{cols} {weight:?}");
            assert_eq!(weight.dims().unwrap(), (inner, cols));
            let fused = pointwise_conv(&x, weight, Some(&bias), Activation::Gelu).unwrap();
            let diff = max_abs_diff(&fused, &plain.gelu_erf().unwrap());
            assert!(diff < 1e-4, "{shape}: {diff}");
            let residual = random(&[rows, cols], 10);
            let summed = pointwise_conv_residual(&x, weight, Some(&bias), &residual).unwrap();
            let diff = max_abs_diff(&summed, &(&plain + &residual).unwrap());
            assert!(diff < 1e-4, "{shape} with residual: {diff}");
        }
    }

    /// The inputs as a packed bf16 product of `rows` rows multiplies them: rounded to bf16
    /// when it uses bf16 dot products.
    fn as_multiplied(x: &Tensor, rows: usize) -> Tensor {
        if rows > BF16_DIRECT_MAX_ROWS && bf16_dot_products_available() {
            x.to_dtype(DType::BF16)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
        } else {
            x.clone()
        }
    }

    #[test]
    fn packed_bf16_products_match_f32_products_of_the_rounded_values() {
        // Decode-sized, tiles of every height, split by rows and by columns; odd inputs and
        // features that fill part of the last panel.
        for (rows, inner, cols) in [
            (1, 45, 70),
            (3, 64, 96),
            (5, 45, 70),
            (27, 33, 32),
            (1000, 64, 40),
            (40, 96, 200),
        ] {
            let torch_weight = random(&[cols, inner], 31).to_dtype(DType::BF16).unwrap();
            let weight = ProductWeight::from_torch(&torch_weight).unwrap();
            assert!(matches!(weight, ProductWeight::PackedBf16(_)));
            assert_eq!(weight.dims().unwrap(), (inner, cols));
            let widened = torch_weight.to_dtype(DType::F32).unwrap().t().unwrap();
            let x = random(&[rows, inner], 32);
            let bias = random(&[cols], 33);
            let plain = as_multiplied(&x, rows)
                .matmul(&widened)
                .unwrap()
                .broadcast_add(&bias)
                .unwrap();
            let shape = format!("{rows}x{inner}x{cols}");
            let fused = pointwise_conv(&x, &weight, Some(&bias), Activation::Gelu).unwrap();
            let diff = max_abs_diff(&fused, &plain.gelu_erf().unwrap());
            assert!(diff < 1e-4, "{shape}: {diff}");
            let unbiased = pointwise_conv(&x, &weight, None, Activation::Identity).unwrap();
            let diff = max_abs_diff(&unbiased, &(plain.broadcast_sub(&bias).unwrap()));
            assert!(diff < 1e-4, "{shape} without bias: {diff}");
            let residual = random(&[rows, cols], 34);
            let summed = pointwise_conv_residual(&x, &weight, Some(&bias), &residual).unwrap();
            let diff = max_abs_diff(&summed, &(plain + &residual).unwrap());
            assert!(diff < 1e-4, "{shape} with residual: {diff}");
        }
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
