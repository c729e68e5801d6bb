//! Polynomial approximations of `e^x` and GELU, to f32 precision, in forms the compiler
//! vectorises.

use super::simd::MulAdd;

/// `2^n` for integer `n` in the normal range, built from the exponent bits.
#[inline(always)]
fn exp2_int(n: i32) -> f32 {
    f32::from_bits(((n + 127) as u32) << 23)
}

/// `e^x` for `x <= 0`, to f32 precision, in a form the compiler vectorises (no calls, no
/// branches): `x = n ln2 + r` with `|r| <= ln2/2`, then `2^n` times a degree-7 Taylor
/// polynomial of `e^r`.
#[inline(always)]
pub(super) fn exp_nonpositive<M: MulAdd>(x: f32) -> f32 {
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
pub(super) fn gelu_scalar<M: MulAdd>(x: f32) -> f32 {
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
    pub(super) fn gelu_dispatch => gelu_slice(data: &mut [f32])
}
