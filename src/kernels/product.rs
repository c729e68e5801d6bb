//! Matrix products with fused epilogues: 1x1 convolutions and linear layers, `act(x @
//! weight + bias)` or `residual + x @ weight + bias`, with f32 weights through the `gemm`
//! crate or bf16 weights through [`PackedBf16`].

use std::sync::Arc;

use candle_core::{DType, Device, Module, Result, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::activation::{activate, Activation};
use super::activation_dtype;
use super::math::gelu_scalar;
use super::memory::{assume_init, on_cpu_f32, uninit_vec, with_f32, with_optional_f32, SharedMut};
use super::packed_bf16::{self, bf16_dot_products_available, PackedBf16, PANEL};
use super::simd::MulAdd;

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
        let values =
            unsafe { std::slice::from_raw_parts_mut(block.offset(row * stride).ptr(), width) };
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
        let values =
            unsafe { std::slice::from_raw_parts_mut(block.offset(row * stride).ptr(), width) };
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

/// The row-major input `x: [rows, inner]` of a product with an `[inner, cols]` weight.
#[derive(Clone, Copy)]
struct Operand<'a> {
    x: &'a [f32],
    rows: usize,
    inner: usize,
    cols: usize,
}

/// What happens to a block of products once computed: `act(product + bias)`, or, with a
/// residual, `residual + product + bias` (the activation is then the identity).
#[derive(Clone, Copy)]
struct Epilogue<'a> {
    bias: Option<&'a [f32]>,
    residual: Option<&'a [f32]>,
    activation: Activation,
}

/// `out = act(x @ weight + bias)` or `out = residual + x @ weight + bias` for row-major
/// `x: [rows, inner]`, split over the thread pool by blocks of rows (or of columns when
/// there are few rows), each block finished right after its product.
fn fused_product(
    operand: Operand<'_>,
    weight: &ProductWeight,
    epilogue: Epilogue<'_>,
) -> Result<Vec<f32>> {
    let Operand { x, rows, inner, .. } = operand;
    let rounded;
    let product = match weight {
        ProductWeight::Plain(tensor) | ProductWeight::AsLoaded(tensor) => {
            let as_loaded = matches!(weight, ProductWeight::AsLoaded(_));
            return with_f32(tensor, |weight| {
                let product = Product::F32 { weight, as_loaded };
                Ok(run_product(operand, product, epilogue))
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
    Ok(run_product(operand, product, epilogue))
}

/// The task split and per-block work of [`fused_product`].
fn run_product(operand: Operand<'_>, product: Product, epilogue: Epilogue<'_>) -> Vec<f32> {
    let Operand {
        x,
        rows,
        inner,
        cols,
    } = operand;
    let Epilogue {
        bias,
        residual,
        activation,
    } = epilogue;
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
            let operand = Operand {
                x,
                rows,
                inner,
                cols,
            };
            let epilogue = Epilogue {
                bias: b,
                residual: None,
                activation,
            };
            fused_product(operand, weight, epilogue)
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
                let operand = Operand {
                    x,
                    rows,
                    inner,
                    cols,
                };
                let epilogue = Epilogue {
                    bias: b,
                    residual: Some(r),
                    activation: Activation::Identity,
                };
                fused_product(operand, weight, epilogue)
            })
        })
    })?;
    Tensor::from_vec(out, out_dims, &Device::Cpu)
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

#[cfg(test)]
mod tests {
    use super::super::tests::{max_abs_diff, random};
    use super::*;

    #[test]
    fn pointwise_fuses_bias_activation_and_residual() {
        // Small, split by rows, split by columns.
        for (rows, inner, cols) in [(30, 16, 24), (1000, 64, 40), (40, 96, 200)] {
            check_pointwise(rows, inner, cols);
        }
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
}
