//! The transformer encoder both SigLIP towers share (transformers' `SiglipEncoder`):
//! pre-norm layers of bidirectional multi-head attention and a two-layer MLP.
//!
//! Tensor names under the encoder's prefix: `layers.N.{layer_norm1, self_attn.{q,k,v,out}_proj,
//! layer_norm2, mlp.fc1, mlp.fc2}`. Products go through the repository's packed
//! [`Linear`] (bias, activation and residual fused into the product) and the fused
//! [`attention`] kernel; the query, key and value projections are one product.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::kernels::{activation_dtype, attention, Activation, Linear};

/// The MLP's activation, as `config.json`'s `hidden_act` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum HiddenAct {
    /// GELU with the tanh approximation (`gelu_pytorch_tanh`, every SigLIP and SigLIP2).
    #[default]
    #[serde(rename = "gelu_pytorch_tanh")]
    GeluPytorchTanh,
    /// GELU with the exact erf formulation (`gelu`).
    #[serde(rename = "gelu")]
    Gelu,
}

/// The shape of one encoder stack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderShape {
    /// Residual stream width.
    pub hidden_size: usize,
    /// MLP hidden width.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// MLP activation.
    pub hidden_act: HiddenAct,
}

/// GELU with the tanh approximation, `x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))`,
/// as PyTorch's `gelu(approximate="tanh")`; in parallel over f32 CPU data, candle's op
/// elsewhere.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if !(x.device().is_cpu() && x.dtype() == candle_core::DType::F32) {
        return x.gelu();
    }
    let mut out = x.flatten_all()?.to_vec1::<f32>()?;
    let chunk = out
        .len()
        .div_ceil(rayon::current_num_threads() * 4)
        .max(4096);
    out.par_chunks_mut(chunk).for_each(|values| {
        for v in values {
            *v = gelu_tanh_scalar(*v);
        }
    });
    Tensor::from_vec(out, x.dims(), &Device::Cpu)
}

/// [`gelu_tanh`] of one value.
#[inline(always)]
fn gelu_tanh_scalar(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let inner = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    0.5 * x * (1.0 + tanh_rational(inner))
}

/// `tanh` as a 13/6 rational function on [-7.9, 7.9] (saturated outside), within a few
/// ulps of the true value and free of branches, so the compiler vectorises the loop.
#[inline(always)]
fn tanh_rational(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    const ALPHA: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const BETA: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = ALPHA[6];
    for &a in ALPHA[..6].iter().rev() {
        p = p * x2 + a;
    }
    let p = p * x;
    let mut q = BETA[3];
    for &b in BETA[..3].iter().rev() {
        q = q * x2 + b;
    }
    p / q
}

/// A LayerNorm's weight and bias.
#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    /// Loads `weight` and `bias` of width `width` under `vb`, in the activations' dtype.
    pub(crate) fn load(vb: VarBuilder, width: usize, eps: f64) -> Result<Self> {
        let dtype = activation_dtype(vb.dtype(), vb.device());
        Ok(Self {
            weight: vb.get(width, "weight")?.to_dtype(dtype)?,
            bias: vb.get(width, "bias")?.to_dtype(dtype)?,
            eps: eps as f32,
        })
    }

    /// Normalises the last dimension.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// A linear layer from PyTorch's `[out, in]` `weight` and `bias` under `vb`.
pub(crate) fn linear(
    vb: &VarBuilder,
    out_dim: usize,
    in_dim: usize,
    activation: Activation,
) -> Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = vb.get(out_dim, "bias")?;
    Linear::from_torch(&weight, Some(&bias), activation)
}

/// Several projections of the same input as one product: their weights and biases stacked.
pub(crate) fn stacked_linear(vbs: &[VarBuilder], out_dim: usize, in_dim: usize) -> Result<Linear> {
    let weights = vbs
        .iter()
        .map(|vb| vb.get((out_dim, in_dim), "weight"))
        .collect::<Result<Vec<_>>>()?;
    let biases = vbs
        .iter()
        .map(|vb| vb.get(out_dim, "bias"))
        .collect::<Result<Vec<_>>>()?;
    Linear::from_torch(
        &Tensor::cat(&weights, 0)?,
        Some(&Tensor::cat(&biases, 0)?),
        Activation::Identity,
    )
}

/// The two-layer MLP (`fc1`, activation, `fc2`), transformers' `SiglipMLP`.
#[derive(Debug, Clone)]
pub(crate) struct Mlp {
    fc1: Linear,
    fc2: Linear,
    hidden_act: HiddenAct,
}

impl Mlp {
    /// Loads `fc1` and `fc2` under `vb`.
    pub(crate) fn load(vb: VarBuilder, shape: &EncoderShape) -> Result<Self> {
        let fc1_activation = match shape.hidden_act {
            HiddenAct::Gelu => Activation::Gelu,
            HiddenAct::GeluPytorchTanh => Activation::Identity,
        };
        Ok(Self {
            fc1: linear(
                &vb.pp("fc1"),
                shape.intermediate_size,
                shape.hidden_size,
                fc1_activation,
            )?,
            fc2: linear(
                &vb.pp("fc2"),
                shape.hidden_size,
                shape.intermediate_size,
                Activation::Identity,
            )?,
            hidden_act: shape.hidden_act,
        })
    }

    /// `residual + fc2(act(fc1(x)))`.
    pub(crate) fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let hidden = self.fc1.forward(x)?;
        let hidden = match self.hidden_act {
            HiddenAct::Gelu => hidden,
            HiddenAct::GeluPytorchTanh => gelu_tanh(&hidden)?,
        };
        self.fc2.forward_residual(&hidden, residual)
    }
}

/// One encoder layer: `x + attn(layer_norm1(x))`, then `x + mlp(layer_norm2(x))`.
#[derive(Debug, Clone)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    qkv_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    mlp: Mlp,
    heads: usize,
}

impl EncoderLayer {
    fn load(vb: VarBuilder, shape: &EncoderShape) -> Result<Self> {
        let width = shape.hidden_size;
        let attn = vb.pp("self_attn");
        Ok(Self {
            layer_norm1: LayerNorm::load(vb.pp("layer_norm1"), width, shape.layer_norm_eps)?,
            qkv_proj: stacked_linear(
                &[attn.pp("q_proj"), attn.pp("k_proj"), attn.pp("v_proj")],
                width,
                width,
            )?,
            out_proj: linear(&attn.pp("out_proj"), width, width, Activation::Identity)?,
            layer_norm2: LayerNorm::load(vb.pp("layer_norm2"), width, shape.layer_norm_eps)?,
            mlp: Mlp::load(vb.pp("mlp"), shape)?,
            heads: shape.heads,
        })
    }

    /// The layer over `x: [batch, positions, width]` (every position sees every other).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, positions, width) = x.dims3()?;
        let head_dim = width / self.heads;
        let qkv = self
            .qkv_proj
            .forward(&self.layer_norm1.forward(x)?)?
            .reshape((batch, positions, 3, self.heads, head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let query = qkv.get(0)?.contiguous()?;
        let key = qkv.get(1)?.contiguous()?;
        let value = qkv.get(2)?.contiguous()?;
        let scale = (head_dim as f64).powf(-0.5);
        let attended = attention(&query, &key, &value, scale)?;
        let x = self.out_proj.forward_residual(&attended, x)?;
        self.mlp
            .forward_residual(&self.layer_norm2.forward(&x)?, &x)
    }
}

/// A stack of encoder layers (transformers' `SiglipEncoder`).
#[derive(Debug, Clone)]
pub struct Encoder {
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    /// Loads `layers.0` .. `layers.{n-1}` under `vb` (e.g. `vision_model.encoder`).
    pub fn load(vb: VarBuilder, shape: &EncoderShape) -> Result<Self> {
        if shape.heads == 0 || !shape.hidden_size.is_multiple_of(shape.heads) {
            candle_core::bail!(
                "the width {} is not divisible into {} attention heads",
                shape.hidden_size,
                shape.heads
            );
        }
        let layers_vb = vb.pp("layers");
        let layers = (0..shape.layers)
            .map(|i| EncoderLayer::load(layers_vb.pp(i), shape))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    /// The stack over `x: [batch, positions, width]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_rational_matches_tanh() {
        let worst = (-100_000..=100_000)
            .map(|i| i as f32 * 1e-4)
            .chain([-20.0, -9.0, 9.0, 20.0, f32::MAX, f32::MIN])
            .map(|x| (f64::from(tanh_rational(x)) - f64::from(x).tanh()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "largest error {worst}");
    }

    #[test]
    fn gelu_tanh_matches_the_definition() {
        let values: Vec<f32> = (-400..400).map(|i| i as f32 * 0.025).collect();
        let x = Tensor::new(values.as_slice(), &Device::Cpu).unwrap();
        let found = gelu_tanh(&x).unwrap().to_vec1::<f32>().unwrap();
        for (&v, &g) in values.iter().zip(&found) {
            let v64 = f64::from(v);
            let expected = 0.5
                * v64
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt() * (v64 + 0.044715 * v64.powi(3)))
                        .tanh());
            assert!(
                (f64::from(g) - expected).abs() < 2e-6,
                "gelu_tanh({v}) = {g}, expected {expected}"
            );
        }
    }
}
