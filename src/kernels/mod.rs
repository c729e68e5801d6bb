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
//! them, or the level [`ISA_VARIABLE`] forces, see [`Isa`]; matrix products through the `gemm` crate that candle itself uses, called directly
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

use std::sync::OnceLock;

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

/// The environment variable that forces an instruction-set level ([`Isa`]): `portable`,
/// `avx2` or `avx512`; unset (or empty), the widest level the processor has.
pub const ISA_VARIABLE: &str = "KEYSCRIBE_ISA";

/// The instruction-set level the kernels run at: each kernel is compiled once per level
/// and the module's one `dispatch!` macro picks the copy of [`Isa::active`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Whatever the build target guarantees (separate multiply and add).
    Portable,
    /// AVX2 with FMA (and POPCNT).
    Avx2,
    /// AVX-512F with AVX2, FMA (and POPCNT): 512-bit vectors.
    Avx512,
}

/// What is wrong with [`ISA_VARIABLE`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsaError {
    /// The value names no level.
    #[error(
        "{ISA_VARIABLE}={value:?} is not an instruction set (expected portable, avx2 or avx512)"
    )]
    Unknown {
        /// The variable's value.
        value: String,
    },
    /// The value names a level the processor lacks: running it would stop the program on
    /// an illegal instruction.
    #[error(
        "{ISA_VARIABLE}={} asks for instructions this CPU lacks (it has {}): choose a level up \
         to {} or unset {ISA_VARIABLE}",
        .forced.name(),
        .detected.name(),
        .detected.name()
    )]
    Unsupported {
        /// The level asked for.
        forced: Isa,
        /// The widest level the processor has.
        detected: Isa,
    },
}

impl Isa {
    /// Every level, narrowest first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The name [`ISA_VARIABLE`] takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// The widest level this processor supports (std caches the feature checks).
    pub fn detected() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            let has = |avx512: bool| {
                std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                    && std::is_x86_feature_detected!("popcnt")
                    && (!avx512 || std::is_x86_feature_detected!("avx512f"))
            };
            if has(true) {
                return Isa::Avx512;
            }
            if has(false) {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// The level a value of [`ISA_VARIABLE`] asks for on a processor whose widest level is
    /// `detected`: `None` or empty leaves `detected`; a level above it, or a name that is
    /// none, is an error.
    pub fn resolve(value: Option<&str>, detected: Isa) -> Result<Isa, IsaError> {
        let Some(value) = value.map(str::trim).filter(|value| !value.is_empty()) else {
            return Ok(detected);
        };
        let forced = Isa::ALL
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(value))
            .ok_or_else(|| IsaError::Unknown {
                value: value.to_string(),
            })?;
        if forced > detected {
            return Err(IsaError::Unsupported { forced, detected });
        }
        Ok(forced)
    }

    /// The level [`ISA_VARIABLE`] and the processor decide, read once per process.
    pub fn configured() -> Result<Isa, IsaError> {
        static CONFIGURED: OnceLock<Result<Isa, IsaError>> = OnceLock::new();
        CONFIGURED
            .get_or_init(|| {
                let value = std::env::var_os(ISA_VARIABLE);
                let value = value.as_ref().map(|value| value.to_string_lossy());
                Isa::resolve(value.as_deref(), Isa::detected())
            })
            .clone()
    }

    /// The level every kernel runs at ([`Self::configured`]).
    ///
    /// # Panics
    /// When [`ISA_VARIABLE`] is invalid, with [`IsaError`]'s message: a program that cannot
    /// stop earlier (the `keyscribe` binary checks [`Self::configured`] first) stops here
    /// rather than on an illegal instruction or at a level it was not asked to test.
    #[inline]
    pub fn active() -> Isa {
        match Isa::configured() {
            Ok(isa) => isa,
            Err(error) => panic!("{error}"),
        }
    }
}

/// Defines a function that runs one of three implementations, chosen by [`Isa::active`]:
/// the `avx512` one compiled with AVX-512F, AVX2, FMA and POPCNT enabled, the `avx2` one
/// with AVX2, FMA and POPCNT, the `portable` one as the build target allows.
///
/// The shorthand `fn name => generic(args)` runs `generic::<Fused>` at both x86 levels and
/// `generic::<Plain>` portably (see [`simd::MulAdd`]).
macro_rules! dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident => $generic:ident ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $crate::kernels::dispatch! {
            $(#[$meta])*
            $vis fn $name($($arg: $ty),*) $(-> $ret)? {
                avx512: $generic::<$crate::kernels::simd::Fused>,
                avx2: $generic::<$crate::kernels::simd::Fused>,
                portable: $generic::<$crate::kernels::simd::Plain>,
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? {
            avx512: $avx512:expr,
            avx2: $avx2:expr,
            portable: $portable:expr $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma,popcnt")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    ($avx512)($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,popcnt")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    ($avx2)($($arg),*)
                }
                match $crate::kernels::Isa::active() {
                    // SAFETY: the active level is one the processor supports (`Isa::configured`
                    // refuses a forced level above `Isa::detected`).
                    $crate::kernels::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::kernels::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::kernels::Isa::Portable => {}
                }
            }
            ($portable)($($arg),*)
        }
    };
}
pub(crate) use dispatch;

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
pub use packed_bf16::{bf16_dot_products_available, PackedBf16};
pub use product::{
    pointwise_conv, pointwise_conv_residual, Linear, ProductWeight, BF16_DIRECT_MAX_ROWS,
};

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::{Isa, IsaError, ISA_VARIABLE};

    #[test]
    fn the_variable_picks_a_level_the_cpu_has() {
        use Isa::*;
        assert_eq!(Isa::resolve(None, Avx2), Ok(Avx2));
        assert_eq!(Isa::resolve(Some(""), Avx512), Ok(Avx512));
        assert_eq!(Isa::resolve(Some("portable"), Avx2), Ok(Portable));
        assert_eq!(Isa::resolve(Some(" AVX2 "), Avx512), Ok(Avx2));
        assert_eq!(Isa::resolve(Some("avx512"), Avx512), Ok(Avx512));
        assert_eq!(Isa::resolve(Some("portable"), Portable), Ok(Portable));
    }

    #[test]
    fn a_level_the_cpu_lacks_or_an_unknown_name_is_refused_with_the_variable_named() {
        let lacking = Isa::resolve(Some("avx512"), Isa::Avx2).unwrap_err();
        assert_eq!(
            lacking,
            IsaError::Unsupported {
                forced: Isa::Avx512,
                detected: Isa::Avx2
            }
        );
        let message = lacking.to_string();
        assert!(
            message.contains("KEYSCRIBE_ISA=avx512") && message.contains("it has avx2"),
            "{message}"
        );
        let message = Isa::resolve(Some("avx2"), Isa::Portable)
            .unwrap_err()
            .to_string();
        assert!(message.contains("it has portable"), "{message}");
        let unknown = Isa::resolve(Some("sse9"), Isa::Avx512).unwrap_err();
        assert!(matches!(unknown, IsaError::Unknown { .. }));
        let message = unknown.to_string();
        assert!(
            message.contains("KEYSCRIBE_ISA=\"sse9\"") && message.contains("avx512"),
            "{message}"
        );
    }

    /// Prints the active level for [`the_kernels_run_at_the_level_the_variable_forces`],
    /// after running a dispatched kernel at it.
    #[test]
    fn print_the_active_level() {
        let x = Tensor::new(&[-1f32, 0.0, 2.0], &Device::Cpu).unwrap();
        super::gelu(&x).unwrap();
        println!("active level: {}", Isa::active().name());
    }

    /// Runs [`print_the_active_level`] in a child process with `value` as
    /// [`ISA_VARIABLE`]: whether it succeeded, and its output.
    fn child_with(value: &str) -> (bool, String) {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "kernels::tests::print_the_active_level",
                "--exact",
                "--nocapture",
            ])
            .env(ISA_VARIABLE, value)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    }

    #[test]
    fn the_kernels_run_at_the_level_the_variable_forces() {
        let detected = Isa::detected();
        let from_environment = std::env::var(ISA_VARIABLE).ok();
        assert_eq!(
            Isa::active(),
            Isa::resolve(from_environment.as_deref(), detected).unwrap()
        );
        for isa in Isa::ALL {
            let (success, output) = child_with(isa.name());
            if isa <= detected {
                assert!(success, "{output}");
                let line = format!("active level: {}", isa.name());
                assert!(output.contains(&line), "{output}");
            } else {
                // Refused with the reason, not stopped by an illegal instruction.
                assert!(!success, "{output}");
                assert!(
                    output.contains("asks for instructions this CPU lacks"),
                    "{output}"
                );
            }
        }
        let (success, output) = child_with("sse9");
        assert!(
            !success && output.contains("KEYSCRIBE_ISA=\"sse9\""),
            "{output}"
        );
    }

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
