//! FastViT "MCi" image towers (timm's `fastvit_mci0` .. `fastvit_mci4`): MobileCLIP2's
//! image encoders, and FastVLM's FastViTHD (= `fastvit_mci3`).
//!
//! Tensor names follow timm's `fastvit.py` (`stem.N`, `stages.N.downsample`,
//! `stages.N.pos_emb`, `stages.N.blocks.M`, `final_conv`, `head.fc`). Both checkpoint forms
//! load:
//!
//! - the training form, as published, with its reparameterisable branches (MobileOne
//!   conv/scale/identity branches, RepMixer's mixer and norm, RepCPE's skip, the large and
//!   small kernels of the downsampling convolutions, BatchNorm after each convolution);
//! - the inference form that timm's `reparameterize_model` (or `inference_mode=True`)
//!   produces, with one `reparam_conv` per module.
//!
//! The form is detected per module from the tensor names present, and either way the model
//! is folded at load time into plain convolutions with biases: BatchNorms into the
//! convolutions before them (also the ConvFFN's, which the inference form still stores
//! apart), branches summed into one kernel, layer scales into the projections after them,
//! and the attention blocks' BatchNorm into the `qkv` projection. What runs is one
//! convolution per module, on NHWC activations through [`crate::kernels`].

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::kernels::{self, Activation, Linear, ProductWeight};

/// BatchNorm epsilon (PyTorch's default, used by every BatchNorm in FastViT).
const BATCH_NORM_EPS: f64 = 1e-5;
/// LayerNorm epsilon of the attention blocks in `mci3`/`mci4`.
const LAYER_NORM_EPS: f64 = 1e-5;
/// Kernel of the conditional positional encodings (RepCPE).
const POS_EMB_KERNEL: usize = 7;
/// Kernel of the ConvFFN's depthwise convolution.
const CONV_FFN_KERNEL: usize = 7;
/// Small kernel added to each downsampling convolution's large one.
const DOWNSAMPLE_SMALL_KERNEL: usize = 3;
/// Channels per attention head.
const ATTENTION_HEAD_DIM: usize = 32;

/// The token mixer of a stage's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenMixer {
    /// Reparameterisable depthwise convolution (RepMixer).
    Repmixer,
    /// Multi-head self-attention over the stage's pixels.
    Attention,
}

/// The normalisation before an attention block's token mixer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormLayer {
    /// `nn.BatchNorm2d` (mci0–mci2), folded into the `qkv` projection at load time.
    BatchNorm,
    /// timm's `LayerNorm2d` over channels (mci3, mci4).
    LayerNorm,
}

/// The architecture of a FastViT tower, with the fields and names of timm's `FastVit`
/// constructor (so that timm keyword arguments map onto it one to one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Input channels.
    pub in_chans: usize,
    /// Blocks per stage.
    pub layers: Vec<usize>,
    /// Token mixer per stage.
    pub token_mixers: Vec<TokenMixer>,
    /// Channels per stage.
    pub embed_dims: Vec<usize>,
    /// ConvFFN expansion ratio per stage.
    pub mlp_ratios: Vec<f64>,
    /// Whether a stage starts with a downsampling patch embedding (also forced when the
    /// channel count changes).
    pub downsamples: Vec<bool>,
    /// Whether a stage's downsampling convolution has squeeze-excitation.
    pub se_downsamples: Vec<bool>,
    /// Whether a stage has a conditional positional encoding (RepCPE, 7x7).
    pub pos_embs: Vec<bool>,
    /// RepMixer kernel size.
    pub repmixer_kernel_size: usize,
    /// Downsampling convolution kernel size.
    pub down_patch_size: usize,
    /// Downsampling stride.
    pub down_stride: usize,
    /// Whether the downsampling convolution is followed by GELU (true for all MCi).
    pub lkc_use_act: bool,
    /// Whether the stem's MobileOne blocks have a 1x1 scale branch.
    pub stem_use_scale_branch: bool,
    /// Normalisation of the attention blocks.
    pub norm_layer: NormLayer,
    /// Channels of the final convolution relative to the last stage.
    pub cls_ratio: f64,
    /// Outputs of the linear head after pooling; 0 for none (pooled features).
    pub num_classes: usize,
}

impl Config {
    /// The MCi0-2 layout (four stages, attention in the last, BatchNorm).
    fn mci_small(layers: [usize; 4], embed_dims: [usize; 4]) -> Self {
        Self {
            in_chans: 3,
            layers: layers.to_vec(),
            token_mixers: vec![
                TokenMixer::Repmixer,
                TokenMixer::Repmixer,
                TokenMixer::Repmixer,
                TokenMixer::Attention,
            ],
            embed_dims: embed_dims.to_vec(),
            mlp_ratios: vec![3.0; 4],
            downsamples: vec![false, true, true, true],
            se_downsamples: vec![false, false, true, true],
            pos_embs: vec![false, false, false, true],
            repmixer_kernel_size: 3,
            down_patch_size: 7,
            down_stride: 2,
            lkc_use_act: true,
            stem_use_scale_branch: true,
            norm_layer: NormLayer::BatchNorm,
            cls_ratio: 2.0,
            num_classes: 512,
        }
    }

    /// The MCi3-4 layout (five stages, attention in the last two, LayerNorm).
    fn mci_large(layers: [usize; 5], embed_dims: [usize; 5]) -> Self {
        Self {
            in_chans: 3,
            layers: layers.to_vec(),
            token_mixers: vec![
                TokenMixer::Repmixer,
                TokenMixer::Repmixer,
                TokenMixer::Repmixer,
                TokenMixer::Attention,
                TokenMixer::Attention,
            ],
            embed_dims: embed_dims.to_vec(),
            mlp_ratios: vec![4.0; 5],
            downsamples: vec![false, true, true, true, true],
            se_downsamples: vec![false; 5],
            pos_embs: vec![false, false, false, true, true],
            repmixer_kernel_size: 3,
            down_patch_size: 7,
            down_stride: 2,
            lkc_use_act: true,
            stem_use_scale_branch: false,
            norm_layer: NormLayer::LayerNorm,
            cls_ratio: 2.0,
            num_classes: 768,
        }
    }

    /// timm `fastvit_mci0`: MobileCLIP(2)-S0's image tower (512-d head).
    pub fn mci0() -> Self {
        Self::mci_small([2, 6, 10, 2], [64, 128, 256, 512])
    }

    /// timm `fastvit_mci1`: MobileCLIP-S1's image tower (512-d head).
    pub fn mci1() -> Self {
        Self::mci_small([4, 12, 20, 4], [64, 128, 256, 512])
    }

    /// timm `fastvit_mci2`: MobileCLIP(2)-S2's image tower (512-d head).
    pub fn mci2() -> Self {
        Self::mci_small([4, 12, 24, 4], [80, 160, 320, 640])
    }

    /// timm `fastvit_mci3`: MobileCLIP2-S3's image tower (768-d head) and FastVLM's
    /// FastViTHD (which uses the features; set `num_classes` to 0 for no head).
    pub fn mci3() -> Self {
        Self::mci_large([2, 12, 24, 4, 2], [96, 192, 384, 768, 1536])
    }

    /// timm `fastvit_mci4`: MobileCLIP2-S4's image tower (768-d head).
    pub fn mci4() -> Self {
        Self::mci_large([2, 12, 24, 4, 4], [128, 256, 512, 1024, 2048])
    }

    /// The preset for a timm model name (`fastvit_mci0` .. `fastvit_mci4`).
    pub fn preset(timm_name: &str) -> Option<Self> {
        match timm_name {
            "fastvit_mci0" => Some(Self::mci0()),
            "fastvit_mci1" => Some(Self::mci1()),
            "fastvit_mci2" => Some(Self::mci2()),
            "fastvit_mci3" => Some(Self::mci3()),
            "fastvit_mci4" => Some(Self::mci4()),
            _ => None,
        }
    }

    /// This configuration with fields replaced by timm `create_model` keyword arguments
    /// (e.g. `{"layers": [1, 1, 1, 1], "embed_dims": [8, 16, 32, 64]}` for a reduced test
    /// model); an unknown argument or a value of the wrong type is an error.
    pub fn with_timm_kwargs(
        &self,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> std::result::Result<Self, String> {
        let mut fields = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => return Err("the configuration does not serialise to an object".into()),
        };
        for (name, value) in kwargs {
            if !fields.contains_key(name) {
                return Err(format!("unknown FastViT argument `{name}`"));
            }
            fields.insert(name.clone(), value.clone());
        }
        let config: Self = serde_json::from_value(serde_json::Value::Object(fields))
            .map_err(|error| format!("bad FastViT arguments: {error}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Channels of the final convolution's output (the feature map).
    pub fn num_features(&self) -> usize {
        (self.last_dim() as f64 * self.cls_ratio) as usize
    }

    /// Width of [`FastVit::forward`]'s output: the head's outputs, or the features.
    pub fn output_dim(&self) -> usize {
        if self.num_classes == 0 {
            self.num_features()
        } else {
            self.num_classes
        }
    }

    /// Total downsampling factor from the input to the feature map.
    pub fn stride(&self) -> usize {
        let mut stride = 4;
        let mut previous = self.embed_dims.first().copied().unwrap_or_default();
        for (i, &dim) in self.embed_dims.iter().enumerate() {
            if self.downsamples[i] || dim != previous {
                stride *= self.down_stride;
            }
            previous = dim;
        }
        stride
    }

    fn last_dim(&self) -> usize {
        self.embed_dims.last().copied().unwrap_or_default()
    }

    /// Checks that the per-stage lists agree and that the sizes are usable.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let stages = self.layers.len();
        if stages == 0 {
            return Err("a FastViT needs at least one stage".into());
        }
        let lists = [
            ("token_mixers", self.token_mixers.len()),
            ("embed_dims", self.embed_dims.len()),
            ("mlp_ratios", self.mlp_ratios.len()),
            ("downsamples", self.downsamples.len()),
            ("se_downsamples", self.se_downsamples.len()),
            ("pos_embs", self.pos_embs.len()),
        ];
        for (name, len) in lists {
            if len != stages {
                return Err(format!("`{name}` has {len} entries for {stages} stages"));
            }
        }
        for (i, (&dim, mixer)) in self.embed_dims.iter().zip(&self.token_mixers).enumerate() {
            if dim == 0 {
                return Err(format!("stage {i} has no channels"));
            }
            if *mixer == TokenMixer::Attention && dim % ATTENTION_HEAD_DIM != 0 {
                return Err(format!(
                    "stage {i} uses attention with {dim} channels, not a multiple of the head size {ATTENTION_HEAD_DIM}"
                ));
            }
        }
        for (name, kernel) in [
            ("repmixer_kernel_size", self.repmixer_kernel_size),
            ("down_patch_size", self.down_patch_size),
        ] {
            if kernel % 2 == 0 {
                return Err(format!("`{name}` must be odd, found {kernel}"));
            }
        }
        if self.down_patch_size < DOWNSAMPLE_SMALL_KERNEL {
            return Err(format!(
                "`down_patch_size` must be at least {DOWNSAMPLE_SMALL_KERNEL}"
            ));
        }
        if self.in_chans == 0 || self.down_stride == 0 || self.num_features() == 0 {
            return Err("`in_chans`, `down_stride` and the final features must be positive".into());
        }
        Ok(())
    }
}

/// Whether a checkpoint tensor is a buffer inference never reads (BatchNorm's
/// `num_batches_tracked`); pass it to `Checkpoint::ensure_all_used`.
pub fn is_unused_buffer(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

/// timm's `make_divisible` with `round_limit = 0`: `v` rounded to a multiple of `divisor`,
/// at least `divisor`.
fn make_divisible(v: f64, divisor: usize) -> usize {
    let rounded = ((v + divisor as f64 / 2.0) as usize) / divisor * divisor;
    rounded.max(divisor)
}

/// Reads a tensor in f64, the precision the folding is done in.
fn get_f64(vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Tensor> {
    vb.get_with_hints_dtype(shape, name, Default::default(), DType::F64)
}

/// A BatchNorm's inference transform as per-channel `(scale, shift)`, in f64.
fn batch_norm(vb: &VarBuilder, channels: usize) -> Result<(Tensor, Tensor)> {
    let weight = get_f64(vb, &[channels], "weight")?;
    let bias = get_f64(vb, &[channels], "bias")?;
    let mean = get_f64(vb, &[channels], "running_mean")?;
    let var = get_f64(vb, &[channels], "running_var")?;
    let scale = weight.div(&(var + BATCH_NORM_EPS)?.sqrt()?)?;
    let shift = (bias - mean.mul(&scale)?)?;
    Ok((scale, shift))
}

/// Scales the output channels (dim 0) of a weight by a per-channel vector.
fn scale_out_channels(weight: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1; weight.rank()];
    shape[0] = scale.elem_count();
    weight.broadcast_mul(&scale.reshape(shape)?)
}

/// A convolution followed by BatchNorm (timm's `ConvNormAct` without activation), folded:
/// `(weight, bias)` in f64, weight `[out, in/groups, k, k]`.
fn conv_bn(
    vb: &VarBuilder,
    out: usize,
    in_per_group: usize,
    kernel: usize,
) -> Result<(Tensor, Tensor)> {
    let weight = get_f64(
        &vb.pp("conv"),
        &[out, in_per_group, kernel, kernel],
        "weight",
    )?;
    let (scale, shift) = batch_norm(&vb.pp("bn"), out)?;
    Ok((scale_out_channels(&weight, &scale)?, shift))
}

/// The kernel of the identity map for a grouped convolution: 1 at the centre tap of each
/// channel's own input (`[channels, channels/groups, k, k]`, f64).
fn identity_kernel(
    channels: usize,
    in_per_group: usize,
    kernel: usize,
    device: &Device,
) -> Result<Tensor> {
    let mut data = vec![0f64; channels * in_per_group * kernel * kernel];
    let centre = kernel / 2;
    for c in 0..channels {
        data[((c * in_per_group + c % in_per_group) * kernel + centre) * kernel + centre] = 1.0;
    }
    Tensor::from_vec(data, (channels, in_per_group, kernel, kernel), device)
}

/// Zero-pads a square kernel (dims 2 and 3) to `kernel`.
fn pad_kernel(weight: &Tensor, kernel: usize) -> Result<Tensor> {
    let pad = (kernel - weight.dim(3)?) / 2;
    weight
        .pad_with_zeros(2, pad, pad)?
        .pad_with_zeros(3, pad, pad)
}

/// A folded convolution with its bias, stored in the layout its kernel reads.
#[derive(Debug, Clone)]
enum Conv {
    /// 1x1, stride 1, ungrouped.
    Pointwise { weight: ProductWeight, bias: Tensor },
    /// One input channel per group: weight `[k, k, out]`.
    Depthwise {
        weight: Tensor,
        bias: Tensor,
        stride: usize,
        padding: usize,
    },
    /// Ungrouped kxk: weight `[k, k, in, out]`.
    Dense {
        weight: Tensor,
        bias: Tensor,
        stride: usize,
        padding: usize,
    },
}

impl Conv {
    /// Builds a convolution from a PyTorch `[out, in/groups, k, k]` weight (any float dtype;
    /// converted to `dtype`) and its bias, with "same" padding `k/2`. With bf16 on the
    /// CPU, 1x1 convolutions multiply in bf16 and the rest runs in f32.
    fn from_torch(
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
        groups: usize,
        dtype: DType,
    ) -> Result<Self> {
        let (out, in_per_group, kernel, _) = weight.dims4()?;
        let activations = kernels::activation_dtype(dtype, weight.device());
        let bias = bias.to_dtype(activations)?;
        let padding = kernel / 2;
        if groups == 1 && kernel == 1 && stride == 1 {
            let weight = weight.reshape((out, in_per_group))?.to_dtype(dtype)?;
            let weight = ProductWeight::from_torch(&weight)?;
            return Ok(Self::Pointwise { weight, bias });
        }
        let weight = weight.to_dtype(activations)?;
        if in_per_group == 1 && groups > 1 {
            let weight = weight.squeeze(1)?.permute((1, 2, 0))?.contiguous()?;
            Ok(Self::Depthwise {
                weight,
                bias,
                stride,
                padding,
            })
        } else if groups == 1 {
            let weight = weight.permute((2, 3, 1, 0))?.contiguous()?;
            Ok(Self::Dense {
                weight,
                bias,
                stride,
                padding,
            })
        } else {
            candle_core::bail!(
                "grouped convolutions with {in_per_group} inputs per group are not supported"
            )
        }
    }

    /// Applies the convolution to NHWC activations, then `activation`.
    fn forward(&self, x: &Tensor, activation: Activation) -> Result<Tensor> {
        match self {
            Self::Pointwise { weight, bias } => {
                kernels::pointwise_conv(x, weight, Some(bias), activation)
            }
            Self::Depthwise {
                weight,
                bias,
                stride,
                padding,
            } => kernels::depthwise_conv2d(x, weight, bias, *stride, *padding, activation),
            Self::Dense {
                weight,
                bias,
                stride,
                padding,
            } => kernels::dense_conv2d(x, weight, bias, *stride, *padding, activation),
        }
    }
}

/// Squeeze-and-excitation: channels rescaled by a gate computed from their means
/// (timm `SEModule`: 1x1 conv, ReLU, 1x1 conv, sigmoid).
#[derive(Debug, Clone)]
struct SqueezeExcite {
    reduce: Linear,
    expand: Linear,
}

impl SqueezeExcite {
    fn load(vb: VarBuilder, channels: usize, reduced: usize) -> Result<Self> {
        let dtype = vb.dtype();
        let linear = |name: &str, from: usize, to: usize| -> Result<Linear> {
            let vb = vb.pp(name);
            let weight = vb.get((to, from, 1, 1), "weight")?.reshape((to, from))?;
            let bias = vb.get(to, "bias")?;
            Linear::from_torch(&weight.to_dtype(dtype)?, Some(&bias), Activation::Identity)
        };
        Ok(Self {
            reduce: linear("fc1", channels, reduced)?,
            expand: linear("fc2", reduced, channels)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, channels) = (x.dim(0)?, x.dim(D::Minus1)?);
        let squeezed = kernels::spatial_mean(x)?;
        let gate = self.reduce.forward(&squeezed)?.relu()?;
        let gate = candle_nn::ops::sigmoid(&self.expand.forward(&gate)?)?;
        x.broadcast_mul(&gate.reshape((batch, 1, 1, channels))?)
    }
}

/// The shape of a MobileOne block (timm `MobileOneBlock`).
#[derive(Debug, Clone, Copy)]
struct MobileOneSpec {
    in_chs: usize,
    out_chs: usize,
    kernel: usize,
    stride: usize,
    groups: usize,
    use_se: bool,
    activation: Activation,
    use_scale_branch: bool,
    conv_branches: usize,
}

impl MobileOneSpec {
    fn in_per_group(&self) -> usize {
        self.in_chs / self.groups
    }

    /// The training form's branches summed into one `(weight, bias)` in f64: each kxk
    /// conv+BN, the 1x1 scale conv+BN padded to kxk, and the identity BN.
    fn fold_training(&self, vb: &VarBuilder) -> Result<(Tensor, Tensor)> {
        let (out, in_pg, k) = (self.out_chs, self.in_per_group(), self.kernel);
        let device = vb.device();
        let mut weight = Tensor::zeros((out, in_pg, k, k), DType::F64, device)?;
        let mut bias = Tensor::zeros(out, DType::F64, device)?;
        for branch in 0..self.conv_branches {
            let (w, b) = conv_bn(&vb.pp("conv_kxk").pp(branch), out, in_pg, k)?;
            weight = (weight + w)?;
            bias = (bias + b)?;
        }
        if k > 1 && self.use_scale_branch {
            let (w, b) = conv_bn(&vb.pp("conv_scale"), out, in_pg, 1)?;
            weight = (weight + pad_kernel(&w, k)?)?;
            bias = (bias + b)?;
        }
        if self.out_chs == self.in_chs && self.stride == 1 {
            let (scale, shift) = batch_norm(&vb.pp("identity"), out)?;
            let identity = identity_kernel(out, in_pg, k, device)?;
            weight = (weight + scale_out_channels(&identity, &scale)?)?;
            bias = (bias + shift)?;
        }
        Ok((weight, bias))
    }

    /// `(weight, bias)` in f64 from either form.
    fn fold(&self, vb: &VarBuilder) -> Result<(Tensor, Tensor)> {
        if vb.contains_tensor("reparam_conv.weight") {
            let reparam = vb.pp("reparam_conv");
            let shape = [self.out_chs, self.in_per_group(), self.kernel, self.kernel];
            Ok((
                get_f64(&reparam, &shape, "weight")?,
                get_f64(&reparam, &[self.out_chs], "bias")?,
            ))
        } else {
            self.fold_training(vb)
        }
    }
}

/// A folded MobileOne block, or any convolution followed by optional squeeze-excitation
/// and an activation.
#[derive(Debug, Clone)]
struct ConvBlock {
    conv: Conv,
    se: Option<SqueezeExcite>,
    activation: Activation,
}

impl ConvBlock {
    fn mobile_one(vb: VarBuilder, spec: MobileOneSpec) -> Result<Self> {
        let (weight, bias) = spec.fold(&vb)?;
        let conv = Conv::from_torch(&weight, &bias, spec.stride, spec.groups, vb.dtype())?;
        let se = if spec.use_se {
            let reduced = make_divisible(spec.out_chs as f64 / 16.0, 1);
            Some(SqueezeExcite::load(vb.pp("se"), spec.out_chs, reduced)?)
        } else {
            None
        };
        Ok(Self {
            conv,
            se,
            activation: spec.activation,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.se {
            None => self.conv.forward(x, self.activation),
            Some(se) => {
                let out = se.forward(&self.conv.forward(x, Activation::Identity)?)?;
                match self.activation {
                    Activation::Identity => Ok(out),
                    Activation::Gelu => kernels::gelu(&out),
                }
            }
        }
    }
}

/// The downsampling patch embedding: a large-kernel depthwise convolution (timm
/// `ReparamLargeKernelConv`, large + small kernel) then a 1x1 MobileOne block.
#[derive(Debug, Clone)]
struct PatchEmbed {
    large: ConvBlock,
    project: ConvBlock,
}

impl PatchEmbed {
    fn load(
        vb: VarBuilder,
        config: &Config,
        in_chs: usize,
        out_chs: usize,
        use_se: bool,
    ) -> Result<Self> {
        let vb = vb.pp("proj");
        let large_vb = vb.pp("0");
        let k = config.down_patch_size;
        let stride = config.down_stride;
        let (weight, bias) = if large_vb.contains_tensor("reparam_conv.weight") {
            let reparam = large_vb.pp("reparam_conv");
            (
                get_f64(&reparam, &[out_chs, 1, k, k], "weight")?,
                get_f64(&reparam, &[out_chs], "bias")?,
            )
        } else {
            let (large_w, large_b) = conv_bn(&large_vb.pp("large_conv"), out_chs, 1, k)?;
            let (small_w, small_b) = conv_bn(
                &large_vb.pp("small_conv"),
                out_chs,
                1,
                DOWNSAMPLE_SMALL_KERNEL,
            )?;
            ((large_w + pad_kernel(&small_w, k)?)?, (large_b + small_b)?)
        };
        let se = if use_se {
            let reduced = make_divisible(out_chs as f64 * 0.25, 8);
            Some(SqueezeExcite::load(large_vb.pp("se"), out_chs, reduced)?)
        } else {
            None
        };
        let large = ConvBlock {
            conv: Conv::from_torch(&weight, &bias, stride, in_chs, vb.dtype())?,
            se,
            activation: if config.lkc_use_act {
                Activation::Gelu
            } else {
                Activation::Identity
            },
        };
        let project = ConvBlock::mobile_one(
            vb.pp("1"),
            MobileOneSpec {
                in_chs: out_chs,
                out_chs,
                kernel: 1,
                stride: 1,
                groups: 1,
                use_se: false,
                activation: Activation::Gelu,
                use_scale_branch: true,
                conv_branches: 1,
            },
        )?;
        Ok(Self { large, project })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.project.forward(&self.large.forward(x)?)
    }
}

/// Folds a layer scale `[dim, 1, 1]` into the projection before it: weight rows and bias
/// multiplied by `gamma`.
fn fold_layer_scale(
    vb: &VarBuilder,
    dim: usize,
    weight: &Tensor,
    bias: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let gamma = get_f64(vb, &[dim, 1, 1], "gamma")?.flatten_all()?;
    Ok((scale_out_channels(weight, &gamma)?, bias.mul(&gamma)?))
}

/// The convolutional FFN (timm `ConvMlp`): depthwise 7x7 + BN, 1x1 expansion, GELU, 1x1
/// projection (with the block's layer scale folded in), added to the block's input.
#[derive(Debug, Clone)]
struct ConvMlp {
    conv: Conv,
    fc1: Conv,
    fc2: Conv,
}

impl ConvMlp {
    fn load(vb: VarBuilder, dim: usize, hidden: usize, layer_scale: &VarBuilder) -> Result<Self> {
        let dtype = vb.dtype();
        let (conv_w, conv_b) = conv_bn(&vb.pp("conv"), dim, 1, CONV_FFN_KERNEL)?;
        let fc1_w = get_f64(&vb.pp("fc1"), &[hidden, dim, 1, 1], "weight")?;
        let fc1_b = get_f64(&vb.pp("fc1"), &[hidden], "bias")?;
        let fc2_w = get_f64(&vb.pp("fc2"), &[dim, hidden, 1, 1], "weight")?;
        let fc2_b = get_f64(&vb.pp("fc2"), &[dim], "bias")?;
        let (fc2_w, fc2_b) = fold_layer_scale(layer_scale, dim, &fc2_w, &fc2_b)?;
        Ok(Self {
            conv: Conv::from_torch(&conv_w, &conv_b, 1, dim, dtype)?,
            fc1: Conv::from_torch(&fc1_w, &fc1_b, 1, 1, dtype)?,
            fc2: Conv::from_torch(&fc2_w, &fc2_b, 1, 1, dtype)?,
        })
    }

    /// `x + layer_scale * mlp(x)`.
    fn forward_residual(&self, x: &Tensor) -> Result<Tensor> {
        let hidden = self.fc1.forward(
            &self.conv.forward(x, Activation::Identity)?,
            Activation::Gelu,
        )?;
        match &self.fc2 {
            Conv::Pointwise { weight, bias } => {
                kernels::pointwise_conv_residual(&hidden, weight, Some(bias), x)
            }
            other => other.forward(&hidden, Activation::Identity)? + x,
        }
    }
}

/// A RepMixer block: the folded depthwise token mixer, then the ConvFFN.
#[derive(Debug, Clone)]
struct RepMixerBlock {
    token_mixer: Conv,
    mlp: ConvMlp,
}

impl RepMixerBlock {
    fn load(vb: VarBuilder, dim: usize, hidden: usize, kernel: usize) -> Result<Self> {
        let mixer_vb = vb.pp("token_mixer");
        let (weight, bias) = if mixer_vb.contains_tensor("reparam_conv.weight") {
            let reparam = mixer_vb.pp("reparam_conv");
            (
                get_f64(&reparam, &[dim, 1, kernel, kernel], "weight")?,
                get_f64(&reparam, &[dim], "bias")?,
            )
        } else {
            // x + gamma * (mixer(x) - norm(x)), mixer and norm being MobileOne blocks.
            let depthwise = MobileOneSpec {
                in_chs: dim,
                out_chs: dim,
                kernel,
                stride: 1,
                groups: dim,
                use_se: false,
                activation: Activation::Identity,
                use_scale_branch: true,
                conv_branches: 1,
            };
            let (mixer_w, mixer_b) = depthwise.fold_training(&mixer_vb.pp("mixer"))?;
            let norm = MobileOneSpec {
                use_scale_branch: false,
                conv_branches: 0,
                ..depthwise
            };
            let (norm_w, norm_b) = norm.fold_training(&mixer_vb.pp("norm"))?;
            let (delta_w, delta_b) = fold_layer_scale(
                &mixer_vb.pp("layer_scale"),
                dim,
                &(mixer_w - norm_w)?,
                &(mixer_b - norm_b)?,
            )?;
            let identity = identity_kernel(dim, 1, kernel, vb.device())?;
            ((identity + delta_w)?, delta_b)
        };
        let token_mixer = Conv::from_torch(&weight, &bias, 1, dim, vb.dtype())?;
        let mlp = ConvMlp::load(vb.pp("mlp"), dim, hidden, &vb.pp("layer_scale"))?;
        Ok(Self { token_mixer, mlp })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.token_mixer.forward(x, Activation::Identity)?;
        self.mlp.forward_residual(&x)
    }
}

/// An attention block: norm, multi-head self-attention over the pixels, projection (layer
/// scale folded in) added to the input, then the ConvFFN.
#[derive(Debug, Clone)]
struct AttentionBlock {
    /// The LayerNorm's `(weight, bias)`; `None` when a BatchNorm was folded into `qkv`.
    layer_norm: Option<(Tensor, Tensor)>,
    qkv: Linear,
    proj: Linear,
    heads: usize,
    mlp: ConvMlp,
}

impl AttentionBlock {
    fn load(vb: VarBuilder, dim: usize, hidden: usize, norm_layer: NormLayer) -> Result<Self> {
        let dtype = vb.dtype();
        let mixer = vb.pp("token_mixer");
        let qkv_w = get_f64(&mixer.pp("qkv"), &[3 * dim, dim], "weight")?;
        let (layer_norm, qkv_w, qkv_b) = match norm_layer {
            NormLayer::BatchNorm => {
                // qkv(x * scale + shift) = (W * scale) x + W shift.
                let (scale, shift) = batch_norm(&vb.pp("norm"), dim)?;
                let folded_w = qkv_w.broadcast_mul(&scale.unsqueeze(0)?)?;
                let folded_b = qkv_w.matmul(&shift.unsqueeze(1)?)?.squeeze(1)?;
                (None, folded_w, folded_b)
            }
            NormLayer::LayerNorm => {
                let norm = vb.pp("norm");
                let activations = kernels::activation_dtype(dtype, vb.device());
                let weight = norm.get(dim, "weight")?.to_dtype(activations)?;
                let bias = norm.get(dim, "bias")?.to_dtype(activations)?;
                let zeros = Tensor::zeros(3 * dim, DType::F64, vb.device())?;
                (Some((weight, bias)), qkv_w, zeros)
            }
        };
        let proj_w = get_f64(&mixer.pp("proj"), &[dim, dim], "weight")?;
        let proj_b = get_f64(&mixer.pp("proj"), &[dim], "bias")?;
        let (proj_w, proj_b) = fold_layer_scale(&vb.pp("layer_scale_1"), dim, &proj_w, &proj_b)?;
        let linear = |w: &Tensor, b: &Tensor| {
            Linear::from_torch(&w.to_dtype(dtype)?, Some(b), Activation::Identity)
        };
        Ok(Self {
            layer_norm,
            qkv: linear(&qkv_w, &qkv_b)?,
            proj: linear(&proj_w, &proj_b)?,
            heads: dim / ATTENTION_HEAD_DIM,
            mlp: ConvMlp::load(vb.pp("mlp"), dim, hidden, &vb.pp("layer_scale_2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, height, width, dim) = x.dims4()?;
        let tokens = x.reshape((batch, height * width, dim))?;
        let normed = match &self.layer_norm {
            Some((weight, bias)) => {
                candle_nn::ops::layer_norm(&tokens, weight, bias, LAYER_NORM_EPS as f32)?
            }
            None => tokens.clone(),
        };
        let head_dim = dim / self.heads;
        let qkv = self
            .qkv
            .forward(&normed)?
            .reshape((batch, height * width, 3, self.heads, head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let part = |index: usize| qkv.get(index)?.contiguous();
        let scale = (head_dim as f64).powf(-0.5);
        let attended = kernels::attention(&part(0)?, &part(1)?, &part(2)?, scale)?;
        let x = self
            .proj
            .forward_residual(&attended, &tokens)?
            .reshape((batch, height, width, dim))?;
        self.mlp.forward_residual(&x)
    }
}

/// A stage's block.
#[derive(Debug, Clone)]
enum Block {
    RepMixer(RepMixerBlock),
    Attention(AttentionBlock),
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::RepMixer(block) => block.forward(x),
            Self::Attention(block) => block.forward(x),
        }
    }
}

/// One stage: optional downsampling, optional positional encoding, blocks.
#[derive(Debug, Clone)]
struct Stage {
    downsample: Option<PatchEmbed>,
    pos_emb: Option<Conv>,
    blocks: Vec<Block>,
}

impl Stage {
    fn load(vb: VarBuilder, config: &Config, index: usize, in_dim: usize) -> Result<Self> {
        let dim = config.embed_dims[index];
        let downsample = if config.downsamples[index] || in_dim != dim {
            Some(PatchEmbed::load(
                vb.pp("downsample"),
                config,
                in_dim,
                dim,
                config.se_downsamples[index],
            )?)
        } else {
            None
        };
        let pos_emb = if config.pos_embs[index] {
            let pos_vb = vb.pp("pos_emb");
            let k = POS_EMB_KERNEL;
            let (weight, bias) = if pos_vb.contains_tensor("reparam_conv.weight") {
                let reparam = pos_vb.pp("reparam_conv");
                (
                    get_f64(&reparam, &[dim, 1, k, k], "weight")?,
                    get_f64(&reparam, &[dim], "bias")?,
                )
            } else {
                // pos_enc(x) + x.
                let pos_enc = pos_vb.pp("pos_enc");
                let weight = get_f64(&pos_enc, &[dim, 1, k, k], "weight")?;
                let identity = identity_kernel(dim, 1, k, vb.device())?;
                ((weight + identity)?, get_f64(&pos_enc, &[dim], "bias")?)
            };
            Some(Conv::from_torch(&weight, &bias, 1, dim, vb.dtype())?)
        } else {
            None
        };
        let hidden = (dim as f64 * config.mlp_ratios[index]) as usize;
        let blocks_vb = vb.pp("blocks");
        let blocks = (0..config.layers[index])
            .map(|j| {
                let vb = blocks_vb.pp(j);
                Ok(match config.token_mixers[index] {
                    TokenMixer::Repmixer => Block::RepMixer(RepMixerBlock::load(
                        vb,
                        dim,
                        hidden,
                        config.repmixer_kernel_size,
                    )?),
                    TokenMixer::Attention => {
                        Block::Attention(AttentionBlock::load(vb, dim, hidden, config.norm_layer)?)
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            downsample,
            pos_emb,
            blocks,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = match &self.downsample {
            Some(downsample) => downsample.forward(x)?,
            None => x.clone(),
        };
        if let Some(pos_emb) = &self.pos_emb {
            x = pos_emb.forward(&x, Activation::Identity)?;
        }
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        Ok(x)
    }
}

/// A FastViT MCi image tower, folded for inference.
#[derive(Debug, Clone)]
pub struct FastVit {
    stem: Vec<ConvBlock>,
    stages: Vec<Stage>,
    final_conv: ConvBlock,
    head: Option<Linear>,
    config: Config,
}

impl FastVit {
    /// Loads the tower from timm-named tensors (training or inference form, detected per
    /// module) and folds it.
    ///
    /// The tensors are read through `vb`, whose dtype and device the model then runs in
    /// (bf16 on the CPU: bf16 matrix products, f32 activations and other convolutions);
    /// a missing or misshapen tensor is an error naming it.
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        config.validate().map_err(candle_core::Error::msg)?;
        let stem_dim = config.embed_dims[0];
        let stem_block =
            |index: usize, in_chs: usize, kernel: usize, stride: usize, groups: usize| {
                ConvBlock::mobile_one(
                    vb.pp("stem").pp(index),
                    MobileOneSpec {
                        in_chs,
                        out_chs: stem_dim,
                        kernel,
                        stride,
                        groups,
                        use_se: false,
                        activation: Activation::Gelu,
                        use_scale_branch: config.stem_use_scale_branch,
                        conv_branches: 1,
                    },
                )
            };
        let stem = vec![
            stem_block(0, config.in_chans, 3, 2, 1)?,
            stem_block(1, stem_dim, 3, 2, stem_dim)?,
            stem_block(2, stem_dim, 1, 1, 1)?,
        ];
        let mut stages = Vec::with_capacity(config.layers.len());
        let mut in_dim = stem_dim;
        for index in 0..config.layers.len() {
            stages.push(Stage::load(
                vb.pp("stages").pp(index),
                config,
                index,
                in_dim,
            )?);
            in_dim = config.embed_dims[index];
        }
        let last_dim = config.last_dim();
        let final_conv = ConvBlock::mobile_one(
            vb.pp("final_conv"),
            MobileOneSpec {
                in_chs: last_dim,
                out_chs: config.num_features(),
                kernel: 3,
                stride: 1,
                groups: last_dim,
                use_se: true,
                activation: Activation::Gelu,
                use_scale_branch: true,
                conv_branches: 1,
            },
        )?;
        let head = if config.num_classes > 0 {
            let fc = vb.pp("head").pp("fc");
            let weight = fc.get((config.num_classes, config.num_features()), "weight")?;
            let bias = fc.get(config.num_classes, "bias")?;
            Some(Linear::from_torch(
                &weight,
                Some(&bias),
                Activation::Identity,
            )?)
        } else {
            None
        };
        Ok(Self {
            stem,
            stages,
            final_conv,
            head,
            config: config.clone(),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The feature map after the final convolution, NHWC: `[batch, height/stride,
    /// width/stride, num_features]` for NHWC input `[batch, height, width, in_chans]`.
    ///
    /// Flattened over the two middle dimensions this is the token sequence a
    /// vision-language projector reads.
    pub fn forward_features_nhwc(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.contiguous()?;
        for block in &self.stem {
            x = block.forward(&x)?;
        }
        for stage in &self.stages {
            x = stage.forward(&x)?;
        }
        self.final_conv.forward(&x)
    }

    /// The feature map after the final convolution, NCHW as timm returns it: `[batch,
    /// num_features, height/stride, width/stride]` for `[batch, in_chans, height, width]`.
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.permute((0, 2, 3, 1))?;
        self.forward_features_nhwc(&x)?
            .permute((0, 3, 1, 2))?
            .contiguous()
    }

    /// Average pooling and the head's projection of an NHWC feature map: `[batch,
    /// output_dim]`.
    pub fn forward_head(&self, features: &Tensor) -> Result<Tensor> {
        let pooled = kernels::spatial_mean(features)?;
        match &self.head {
            Some(head) => head.forward(&pooled),
            None => Ok(pooled),
        }
    }

    /// The pooled, projected embedding of NCHW images `[batch, in_chans, height, width]`
    /// (not normalised): `[batch, output_dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.permute((0, 2, 3, 1))?;
        self.forward_head(&self.forward_features_nhwc(&x)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_timm_definitions() {
        let mci0 = Config::mci0();
        assert_eq!(mci0.num_features(), 1024);
        assert_eq!(mci0.stride(), 32);
        let mci3 = Config::mci3();
        assert_eq!(mci3.num_features(), 3072);
        assert_eq!(mci3.stride(), 64);
        assert_eq!(
            Config::preset("fastvit_mci2").unwrap().embed_dims,
            vec![80, 160, 320, 640]
        );
        assert!(Config::preset("fastvit_t8").is_none());
        for name in [
            "fastvit_mci0",
            "fastvit_mci1",
            "fastvit_mci2",
            "fastvit_mci3",
            "fastvit_mci4",
        ] {
            Config::preset(name).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn make_divisible_follows_timm() {
        assert_eq!(make_divisible(1024.0 / 16.0, 1), 64);
        assert_eq!(make_divisible(3072.0 / 16.0, 1), 192);
        assert_eq!(make_divisible(256.0 * 0.25, 8), 64);
        assert_eq!(make_divisible(24.0 * 0.25, 8), 8);
        assert_eq!(make_divisible(0.4, 1), 1);
    }

    #[test]
    fn validation_rejects_inconsistent_stages() {
        let mut config = Config::mci0();
        config.mlp_ratios.pop();
        assert!(config.validate().unwrap_err().contains("mlp_ratios"));
        let mut config = Config::mci0();
        config.embed_dims[3] = 48;
        assert!(config.validate().unwrap_err().contains("head size"));
    }

    #[test]
    fn timm_kwargs_override_fields() {
        let kwargs = serde_json::json!({"layers": [1, 1, 1, 1], "embed_dims": [8, 16, 32, 64]});
        let config = Config::mci0()
            .with_timm_kwargs(kwargs.as_object().unwrap())
            .unwrap();
        assert_eq!(config.layers, vec![1, 1, 1, 1]);
        assert_eq!(config.num_features(), 128);
        let unknown = serde_json::json!({"depths": [1]});
        let error = Config::mci0()
            .with_timm_kwargs(unknown.as_object().unwrap())
            .unwrap_err();
        assert!(error.contains("depths"), "{error}");
        let mistyped = serde_json::json!({"layers": "many"});
        assert!(Config::mci0()
            .with_timm_kwargs(mistyped.as_object().unwrap())
            .is_err());
    }

    /// The reduced `fastvit_mci3` of `tests/fixtures/fastvit-mci3-tiny`, loaded from one of
    /// its checkpoint forms, against timm's outputs.
    fn check_mci3_fixture(form: &str) {
        use crate::models::weights::Checkpoint;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/fastvit-mci3-tiny");
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("timm_model_kwargs.json")).unwrap(),
        )
        .unwrap();
        let config = Config::preset(meta["timm_model_name"].as_str().unwrap())
            .unwrap()
            .with_timm_kwargs(meta["timm_model_kwargs"].as_object().unwrap())
            .unwrap();
        let device = Device::Cpu;
        let checkpoint = Checkpoint::open(&[dir.join(format!("{form}.safetensors"))]).unwrap();
        let model =
            FastVit::load(checkpoint.var_builder(DType::F32, &device, None), &config).unwrap();
        checkpoint.ensure_all_used(is_unused_buffer).unwrap();
        let reference =
            candle_core::safetensors::load(dir.join("reference.safetensors"), &device).unwrap();
        let input = &reference["input"];
        let compare = |found: &Tensor, expected: &Tensor, what: &str| {
            assert_eq!(found.dims(), expected.dims(), "{form} {what}");
            let scale = expected
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let diff = (found - expected)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                diff <= 1e-4 * scale,
                "{form} {what}: max diff {diff} for values up to {scale}"
            );
        };
        compare(
            &model.forward_features(input).unwrap(),
            &reference["features"],
            "features",
        );
        compare(
            &model.forward(input).unwrap(),
            &reference["pooled"],
            "pooled output",
        );
    }

    #[test]
    fn mci3_training_form_matches_timm() {
        check_mci3_fixture("training");
    }

    #[test]
    fn mci3_inference_form_matches_timm() {
        check_mci3_fixture("inference");
    }

    #[test]
    fn config_round_trips_through_json() {
        let config = Config::mci3();
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains("\"layer_norm\"") && json.contains("\"repmixer\""));
        let back: Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
    }
}
