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
//! direct kernels below (rayon over rows, AVX2+FMA when the processor has them); on any
//! other device or dtype it composes candle ops, so the models stay device-generic.

use candle_core::{
    CpuStorage, DType, Device, InplaceOp1, InplaceOp2, Layout, Module, Result, Storage, Tensor, D,
};
use rayon::prelude::*;

/// The activation applied right after a convolution's bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// No activation.
    Identity,
    /// GELU with the exact (erf) formulation, as PyTorch's `nn.GELU()`.
    Gelu,
}

/// Whether the direct CPU kernels apply to this tensor.
fn on_cpu_f32(tensor: &Tensor) -> bool {
    tensor.device().is_cpu() && tensor.dtype() == DType::F32
}

/// Runs `f` over the tensor's data as one contiguous f32 slice (CPU only).
fn with_f32<R>(tensor: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let tensor = tensor.contiguous()?;
    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("expected a CPU tensor");
    };
    let data = cpu.as_slice::<f32>()?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("expected a contiguous tensor");
    };
    f(&data[start..end])
}

/// The mutable f32 slice a contiguous in-place op works on.
fn storage_f32_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("expected f32 data");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("expected a contiguous tensor");
    };
    Ok(&mut data[start..end])
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

/// Whether the processor has AVX2 and FMA (checked once, cached by std).
#[inline]
fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `$name(args)` that runs `$generic::<Fused>` compiled for AVX2+FMA when the
/// processor has them and `$generic::<Plain>` otherwise.
macro_rules! dispatch {
    ($(#[$meta:meta])* fn $name:ident / $avx:ident => $generic:ident ($($arg:ident : $ty:ty),* $(,)?)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx($($arg: $ty),*) {
            $generic::<Fused>($($arg),*)
        }

        $(#[$meta])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if has_avx2_fma() {
                // SAFETY: the processor supports the features the function was compiled for.
                unsafe { $avx($($arg),*) };
                return;
            }
            $generic::<Plain>($($arg),*)
        }
    };
}

/// Channels processed together in registers by the convolution kernels.
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

/// One output row of a depthwise convolution: `out[x, c] = bias[c] + Σ w[ky, kx, c] *
/// in[y*s - p + ky, x*s - p + kx, c]`, the input already expanded to the output channels.
#[inline(always)]
fn depthwise_row<M: MulAdd>(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    out_row: &mut [f32],
    geometry: ConvGeometry,
    out_y: usize,
) {
    let channels = bias.len();
    let k = geometry.kernel;
    let (ky0, ky1) = geometry.taps(out_y, geometry.height);
    let row_origin = (out_y * geometry.stride) as isize - geometry.padding as isize;
    let full = channels / LANES * LANES;
    for out_x in 0..geometry.out_width {
        let (kx0, kx1) = geometry.taps(out_x, geometry.width);
        let col_origin = (out_x * geometry.stride) as isize - geometry.padding as isize;
        let pixel = &mut out_row[out_x * channels..(out_x + 1) * channels];
        let mut c0 = 0;
        while c0 < full {
            let mut acc = [0f32; LANES];
            acc.copy_from_slice(&bias[c0..c0 + LANES]);
            for ky in ky0..ky1 {
                let iy = (row_origin + ky as isize) as usize;
                for kx in kx0..kx1 {
                    let ix = (col_origin + kx as isize) as usize;
                    let start = (iy * geometry.width + ix) * channels + c0;
                    let v = &input[start..start + LANES];
                    let w = &weight[(ky * k + kx) * channels + c0..][..LANES];
                    for j in 0..LANES {
                        acc[j] = M::mul_add(w[j], v[j], acc[j]);
                    }
                }
            }
            pixel[c0..c0 + LANES].copy_from_slice(&acc);
            c0 += LANES;
        }
        if full < channels {
            let tail = &mut pixel[full..];
            tail.copy_from_slice(&bias[full..]);
            for ky in ky0..ky1 {
                let iy = (row_origin + ky as isize) as usize;
                for kx in kx0..kx1 {
                    let ix = (col_origin + kx as isize) as usize;
                    let start = (iy * geometry.width + ix) * channels + full;
                    let v = &input[start..start + channels - full];
                    let w = &weight[(ky * k + kx) * channels + full..][..channels - full];
                    for ((acc, &w), &v) in tail.iter_mut().zip(w).zip(v) {
                        *acc = M::mul_add(w, v, *acc);
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn depthwise_rows<M: MulAdd>(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    out_rows: &mut [f32],
    geometry: ConvGeometry,
    first_row: usize,
) {
    let row_len = geometry.out_width * bias.len();
    for (i, out_row) in out_rows.chunks_mut(row_len).enumerate() {
        depthwise_row::<M>(input, weight, bias, out_row, geometry, first_row + i);
    }
}

dispatch! {
    /// Depthwise convolution rows, dispatched on the processor's features.
    fn depthwise_rows_dispatch / depthwise_rows_avx2 => depthwise_rows(
        input: &[f32],
        weight: &[f32],
        bias: &[f32],
        out_rows: &mut [f32],
        geometry: ConvGeometry,
        first_row: usize,
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
            .permute((0, 2, 3, 1))?;
        return out.broadcast_add(bias)?.contiguous();
    }
    let geometry = ConvGeometry::new(height, width, kernel, stride, padding);
    let image_len = height * width * out_channels;
    let out_image_len = geometry.out_height * geometry.out_width * out_channels;
    let mut out = vec![0f32; batch * out_image_len];
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
                        let image = row / geometry.out_height;
                        let y = row % geometry.out_height;
                        let input = &input[image * image_len..(image + 1) * image_len];
                        depthwise_rows_dispatch(input, weight, bias, out_row, geometry, y);
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

/// One output row of a dense convolution: `out[x, o] = bias[o] + Σ w[ky, kx, i, o] *
/// in[.., .., i]`.
#[inline(always)]
fn dense_row<M: MulAdd>(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    in_channels: usize,
    out_row: &mut [f32],
    geometry: ConvGeometry,
    out_y: usize,
) {
    let out_channels = bias.len();
    let k = geometry.kernel;
    let (ky0, ky1) = geometry.taps(out_y, geometry.height);
    let row_origin = (out_y * geometry.stride) as isize - geometry.padding as isize;
    for out_x in 0..geometry.out_width {
        let (kx0, kx1) = geometry.taps(out_x, geometry.width);
        let col_origin = (out_x * geometry.stride) as isize - geometry.padding as isize;
        let pixel = &mut out_row[out_x * out_channels..(out_x + 1) * out_channels];
        pixel.copy_from_slice(bias);
        for ky in ky0..ky1 {
            let iy = (row_origin + ky as isize) as usize;
            for kx in kx0..kx1 {
                let ix = (col_origin + kx as isize) as usize;
                let start = (iy * geometry.width + ix) * in_channels;
                let v = &input[start..start + in_channels];
                for (i, &v) in v.iter().enumerate() {
                    let w =
                        &weight[((ky * k + kx) * in_channels + i) * out_channels..][..out_channels];
                    for (acc, &w) in pixel.iter_mut().zip(w) {
                        *acc = M::mul_add(w, v, *acc);
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn dense_rows<M: MulAdd>(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    in_channels: usize,
    out_rows: &mut [f32],
    geometry: ConvGeometry,
    first_row: usize,
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
        );
    }
}

dispatch! {
    /// Dense convolution rows, dispatched on the processor's features.
    fn dense_rows_dispatch / dense_rows_avx2 => dense_rows(
        input: &[f32],
        weight: &[f32],
        bias: &[f32],
        in_channels: usize,
        out_rows: &mut [f32],
        geometry: ConvGeometry,
        first_row: usize,
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
            .permute((0, 2, 3, 1))?;
        return out.broadcast_add(bias)?.contiguous();
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
                        dense_rows_dispatch(input, weight, bias, in_channels, out_row, geometry, y);
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

/// Adds a per-channel bias to rows of `channels` values and applies the activation.
#[inline(always)]
fn bias_activation<M: MulAdd>(data: &mut [f32], bias: &[f32], activation: Activation) {
    let channels = bias.len();
    match activation {
        Activation::Identity => {
            for row in data.chunks_mut(channels) {
                for (v, &b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        }
        Activation::Gelu => {
            for row in data.chunks_mut(channels) {
                for (v, &b) in row.iter_mut().zip(bias) {
                    *v = gelu_scalar::<M>(*v + b);
                }
            }
        }
    }
}

dispatch! {
    /// Bias and activation, dispatched on the processor's features.
    fn bias_activation_dispatch / bias_activation_avx2 => bias_activation(
        data: &mut [f32],
        bias: &[f32],
        activation: Activation,
    )
}

/// Adds a per-channel bias and a residual to rows of `channels` values.
#[inline(always)]
fn bias_residual<M: MulAdd>(data: &mut [f32], bias: &[f32], residual: &[f32]) {
    let channels = bias.len();
    for (row, res) in data.chunks_mut(channels).zip(residual.chunks(channels)) {
        for ((v, &b), &r) in row.iter_mut().zip(bias).zip(res) {
            *v += b + r;
        }
    }
}

dispatch! {
    /// Bias and residual, dispatched on the processor's features.
    fn bias_residual_dispatch / bias_residual_avx2 => bias_residual(
        data: &mut [f32],
        bias: &[f32],
        residual: &[f32],
    )
}

/// Rows handed to one rayon task by the element-wise epilogues.
fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(rayon::current_num_threads() * 4).max(1)
}

/// In-place `x = act(x + bias)` over the last dimension.
struct BiasActivation<'a> {
    bias: &'a [f32],
    activation: Activation,
}

impl InplaceOp1 for BiasActivation<'_> {
    fn name(&self) -> &'static str {
        "bias-activation"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let data = storage_f32_mut(storage, layout)?;
        let channels = self.bias.len();
        let chunk = rows_per_task(data.len() / channels) * channels;
        data.par_chunks_mut(chunk)
            .for_each(|rows| bias_activation_dispatch(rows, self.bias, self.activation));
        Ok(())
    }
}

/// In-place `x = x + bias + residual` over the last dimension.
struct BiasResidual<'a> {
    bias: &'a [f32],
}

impl InplaceOp2 for BiasResidual<'_> {
    fn name(&self) -> &'static str {
        "bias-residual"
    }

    fn cpu_fwd(
        &self,
        storage: &mut CpuStorage,
        layout: &Layout,
        residual: &CpuStorage,
        residual_layout: &Layout,
    ) -> Result<()> {
        let data = storage_f32_mut(storage, layout)?;
        let residual = residual.as_slice::<f32>()?;
        let Some((start, end)) = residual_layout.contiguous_offsets() else {
            candle_core::bail!("bias-residual: the residual must be contiguous");
        };
        let residual = &residual[start..end];
        let channels = self.bias.len();
        let chunk = rows_per_task(data.len() / channels) * channels;
        data.par_chunks_mut(chunk)
            .zip(residual.par_chunks(chunk))
            .for_each(|(rows, res)| bias_residual_dispatch(rows, self.bias, res));
        Ok(())
    }
}

/// `x @ weight` over the last dimension of `x`, as one matrix product over all leading
/// dimensions (a 1x1 convolution of NHWC data, or a linear layer with a transposed weight).
fn matmul_last_dim(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (in_features, out_features) = weight.dims2()?;
    let dims = x.dims();
    let Some((&last, leading)) = dims.split_last() else {
        candle_core::bail!("matmul_last_dim: a scalar input");
    };
    if last != in_features {
        candle_core::bail!(
            "matmul_last_dim: input {:?} does not fit weight {:?}",
            dims,
            weight.dims()
        );
    }
    let rows: usize = leading.iter().product();
    let mut out_dims = leading.to_vec();
    out_dims.push(out_features);
    x.contiguous()?
        .reshape((rows, in_features))?
        .matmul(weight)?
        .reshape(out_dims)
}

/// A 1x1 convolution (or linear layer) over the last dimension: `act(x @ weight + bias)`.
///
/// `weight` is `[in_channels, out_channels]` (transposed from PyTorch's layout so that the
/// product reads it row by row), `bias` is `[out_channels]`.
pub fn pointwise_conv(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    activation: Activation,
) -> Result<Tensor> {
    let out = matmul_last_dim(x, weight)?;
    if on_cpu_f32(&out) && on_cpu_f32(bias) {
        with_f32(bias, |bias| {
            out.inplace_op1(&BiasActivation { bias, activation })
        })?;
        return Ok(out);
    }
    let out = out.broadcast_add(bias)?;
    match activation {
        Activation::Identity => Ok(out),
        Activation::Gelu => out.gelu_erf(),
    }
}

/// A 1x1 convolution added to a residual: `residual + x @ weight + bias`.
pub fn pointwise_conv_residual(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
) -> Result<Tensor> {
    let out = matmul_last_dim(x, weight)?;
    if out.dims() != residual.dims() {
        candle_core::bail!(
            "pointwise_conv_residual: output {:?} and residual {:?} differ",
            out.dims(),
            residual.dims()
        );
    }
    if on_cpu_f32(&out) && on_cpu_f32(bias) && on_cpu_f32(residual) {
        let residual = residual.contiguous()?;
        with_f32(bias, |bias| {
            out.inplace_op2(&residual, &BiasResidual { bias })
        })?;
        return Ok(out);
    }
    out.broadcast_add(bias)? + residual
}

/// GELU (exact erf form) of every element.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if !on_cpu_f32(x) {
        return x.gelu_erf();
    }
    let out = x.contiguous()?.copy()?;
    let zero = [0f32];
    out.inplace_op1(&BiasActivation {
        bias: &zero,
        activation: Activation::Gelu,
    })?;
    Ok(out)
}

/// A linear layer `x @ weight + bias` whose weight is stored `[in, out]`, as candle
/// [`Module`]: used for the transformer's projections.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
    activation: Activation,
}

impl Linear {
    /// A linear layer from PyTorch's `[out, in]` weight and its bias.
    pub fn from_torch(weight: &Tensor, bias: &Tensor, activation: Activation) -> Result<Self> {
        Ok(Self {
            weight: weight.t()?.contiguous()?,
            bias: bias.clone(),
            activation,
        })
    }

    /// The layer's output added to `residual`.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        debug_assert_eq!(self.activation, Activation::Identity);
        pointwise_conv_residual(x, &self.weight, &self.bias, residual)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        pointwise_conv(x, &self.weight, &self.bias, self.activation)
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

    fn random(shape: &[usize], seed: u64) -> Tensor {
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

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
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
        ] {
            let x = random(&[2, size, size + 1, channels], 1);
            let weight = random(&[kernel, kernel, channels * multiplier], 2);
            let bias = random(&[channels * multiplier], 3);
            let padding = kernel / 2;
            let fast = depthwise_conv2d(&x, &weight, &bias, stride, padding).unwrap();
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
        let fast = dense_conv2d(&x, &weight, &bias, 2, 1).unwrap();
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
        let x = random(&[2, 3, 5, 16], 7);
        let weight = random(&[16, 24], 8);
        let bias = random(&[24], 9);
        let plain = x
            .reshape((30, 16))
            .unwrap()
            .matmul(&weight)
            .unwrap()
            .broadcast_add(&bias)
            .unwrap()
            .reshape((2, 3, 5, 24))
            .unwrap();
        let fused = pointwise_conv(&x, &weight, &bias, Activation::Gelu).unwrap();
        assert!(max_abs_diff(&fused, &plain.gelu_erf().unwrap()) < 1e-5);
        let residual = random(&[2, 3, 5, 24], 10);
        let summed = pointwise_conv_residual(&x, &weight, &bias, &residual).unwrap();
        assert!(max_abs_diff(&summed, &(plain + &residual).unwrap()) < 1e-5);
    }
}
