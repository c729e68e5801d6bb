//! Depthwise and dense 2D convolutions over NHWC data, and the spatial mean (global average
//! pooling).

use candle_core::{Device, Result, Tensor, D};
use rayon::prelude::*;

use super::activation::{activate, Activation};
use super::math::gelu_scalar;
use super::memory::{assume_init, on_cpu_f32, uninit_vec, with_f32};
use super::simd::{Fused, MulAdd, Plain};

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

/// One image's convolution as the row kernels read it: the image (NHWC; for a depthwise
/// convolution already expanded to the output channels), the weight, the bias (one value per
/// output channel), the geometry and the activation that follows the bias.
#[derive(Debug, Clone, Copy)]
struct ImageConv<'a> {
    input: &'a [f32],
    weight: &'a [f32],
    bias: &'a [f32],
    /// Channels of a pixel of `input`.
    in_channels: usize,
    geometry: ConvGeometry,
    activation: Activation,
}

/// One output pixel of a depthwise convolution, channels from `first_channel` on, taps
/// clipped at the borders.
#[inline(always)]
fn depthwise_pixel<M: MulAdd, const LANES: usize>(
    conv: &ImageConv<'_>,
    pixel: &mut [f32],
    (out_y, out_x): (usize, usize),
    first_channel: usize,
) {
    let ImageConv {
        input,
        weight,
        bias,
        geometry,
        activation,
        ..
    } = *conv;
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
    conv: &ImageConv<'_>,
    out_row: &mut [f32],
    out_y: usize,
) {
    let ImageConv {
        input,
        weight,
        bias,
        geometry,
        activation,
        ..
    } = *conv;
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
                    depthwise_blocks_avx512::<M>(conv, out_row, out_y, out_x)
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
                depthwise_pixel::<M, LANES>(conv, pixel, (out_y, x), full);
            }
            out_x += PX;
        } else {
            let pixel = &mut out_row[out_x * channels..(out_x + 1) * channels];
            depthwise_pixel::<M, LANES>(conv, pixel, (out_y, out_x), 0);
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
unsafe fn depthwise_blocks_avx512<M: MulAdd>(
    conv: &ImageConv<'_>,
    out_row: &mut [f32],
    out_y: usize,
    out_x: usize,
) {
    let ImageConv {
        input,
        weight,
        bias,
        geometry,
        activation,
        ..
    } = *conv;
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
                BlockTaps {
                    input: input[(first_row * width + first_column) * channels + c0..].as_ptr(),
                    row_stride: width * channels,
                    rows: ky1 - ky0,
                    weight: weight[ky0 * k * channels + c0..].as_ptr(),
                    kernel: k,
                    channels,
                    stride,
                },
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

/// Where [`depthwise_block_avx512`] reads its taps: `rows` rows of the input from `input`,
/// `row_stride` apart, and the weights of those kernel rows from `weight`.
#[cfg(target_arch = "x86_64")]
struct BlockTaps {
    input: *const f32,
    row_stride: usize,
    rows: usize,
    weight: *const f32,
    kernel: usize,
    channels: usize,
    stride: usize,
}

/// Eight neighbouring output pixels of a depthwise convolution, 16 channels, all taps
/// inside the input: `out[px * channels + j] = bias[j] + Σ_ky Σ_kx weight[(ky * kernel +
/// kx) * channels + j] * input[ky * row_stride + (px * stride + kx) * channels + j]` for
/// `ky < rows` (the fields of `taps`), with the accumulators in AVX-512 registers.
///
/// # Safety
///
/// The processor has AVX-512F, and `taps.input` and `taps.weight` hold every element the
/// formula reads.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn depthwise_block_avx512(taps: BlockTaps, bias: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let BlockTaps {
        input,
        row_stride,
        rows,
        weight,
        kernel,
        channels,
        stride,
    } = taps;
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

/// Output rows from `first_row` of a depthwise convolution ([`depthwise_row`] each).
#[inline(always)]
fn depthwise_rows<M: MulAdd, const LANES: usize, const PX: usize, const AVX512: bool>(
    conv: &ImageConv<'_>,
    out_rows: &mut [f32],
    first_row: usize,
) {
    let row_len = conv.geometry.out_width * conv.bias.len();
    for (i, out_row) in out_rows.chunks_mut(row_len).enumerate() {
        depthwise_row::<M, LANES, PX, AVX512>(conv, out_row, first_row + i);
    }
}

dispatch! {
    /// Depthwise convolution rows with the register blocking that suits the processor: 16
    /// channels by 8 pixels in AVX-512 registers, by 4 pixels in AVX2 registers.
    fn depthwise_rows_dispatch(conv: &ImageConv<'_>, out_rows: &mut [f32], first_row: usize) {
        avx512: depthwise_rows::<Fused, 16, 8, true>,
        avx2: depthwise_rows::<Fused, 16, 4, false>,
        portable: depthwise_rows::<Plain, 16, 2, false>,
    }
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
                        let conv = ImageConv {
                            input: &input[image * image_len..(image + 1) * image_len],
                            weight,
                            bias,
                            in_channels: out_channels,
                            geometry,
                            activation,
                        };
                        depthwise_rows_dispatch(&conv, out_row, y);
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
fn dense_row<M: MulAdd>(conv: &ImageConv<'_>, out_row: &mut [f32], out_y: usize) {
    let ImageConv {
        input,
        weight,
        bias,
        in_channels,
        geometry,
        activation,
    } = *conv;
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

/// Output rows from `first_row` of a dense convolution ([`dense_row`] each).
#[inline(always)]
fn dense_rows<M: MulAdd>(conv: &ImageConv<'_>, out_rows: &mut [f32], first_row: usize) {
    let row_len = conv.geometry.out_width * conv.bias.len();
    for (i, out_row) in out_rows.chunks_mut(row_len).enumerate() {
        dense_row::<M>(conv, out_row, first_row + i);
    }
}

dispatch! {
    /// Dense convolution rows, dispatched on the active instruction set.
    fn dense_rows_dispatch => dense_rows(conv: &ImageConv<'_>, out_rows: &mut [f32], first_row: usize)
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
                        let conv = ImageConv {
                            input: &input[image * image_len..(image + 1) * image_len],
                            weight,
                            bias,
                            in_channels,
                            geometry,
                            activation,
                        };
                        dense_rows_dispatch(&conv, out_row, y);
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

/// Mean over every dimension but the first and last: `[batch, ..., channels]` ->
/// `[batch, channels]` (global average pooling of NHWC data).
pub fn spatial_mean(x: &Tensor) -> Result<Tensor> {
    let (batch, channels) = (x.dim(0)?, x.dim(D::Minus1)?);
    x.reshape((batch, (), channels))?.mean(1)
}

#[cfg(test)]
mod tests {
    use super::super::gelu;
    use super::super::tests::{max_abs_diff, random};
    use super::*;

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
}
