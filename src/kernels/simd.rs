//! The building blocks every kernel is generic over: the multiply-add (fused or not, per
//! instruction set), the weight element types widened in registers, and a dot product
//! written so that the compiler vectorises it.

/// `a * b + c`, fused where the instruction exists.
///
/// The kernels are generic over it so that the AVX2 build uses FMA instructions while the
/// portable build does not call the (slow) software `fmaf`.
pub(super) trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// Hardware fused multiply-add (only instantiated inside `target_feature(enable = "fma")`).
pub(super) struct Fused;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// Separate multiply and add.
pub(super) struct Plain;

impl MulAdd for Plain {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// The weight element types the dot products read, widened to f32 in registers.
pub(super) trait Widen: Copy {
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
pub(super) fn dot<M: MulAdd, W: Widen>(weight: &[W], x: &[f32]) -> f32 {
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
