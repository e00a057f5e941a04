//! A vectorisable `exp` for the kernels' element-wise loops (GELU's density, softmax): libm's
//! `expf` is a call per element that the compiler cannot vectorise.

/// `exp(x)` for `x ≤ 0` (what φ and a shifted softmax need): `2ⁿ·p(r)`,
/// `r = x − n·ln 2 ∈ [−ln2/2, ln2/2]`, `p` the degree-6 Taylor polynomial (within 1e-6 relative
/// of libm); `x` is clamped at −87 (e⁻⁸⁷ ≈ 1.6e-38).
///
/// Integer-free in float, so that it vectorises: adding `1.5·2²³` rounds `x·log₂e` to the
/// nearest integer `n` and leaves `n` in the low bits of the sum's mantissa, from which `2ⁿ`'s
/// exponent bits are built with integer lane operations. (A float-to-int `as` cast saturates and
/// checks for NaN, which kept GELU's backward scalar: 13 ns an element in a fine-tuning step's
/// profile.)
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³
    let x = x.max(-87.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    // ln 2 in two parts (Cody–Waite): `n·LN2_HI` is exact, so `r` keeps its precision
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // `shifted`'s bits are ROUND's plus n (|n| ≤ 126 fits the mantissa's low bits)
    let biased = shifted.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    p * f32::from_bits(biased << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within 1e-6 relative of libm's `exp` on [−100, 0]; below the clamp, its tiny value.
    #[test]
    fn exp_is_within_float_error_of_libm() {
        for k in 0..=200_000 {
            let x = -(k as f32) * 5e-4;
            let (ours, libm) = (exp_nonpositive(x), x.exp());
            assert!((ours - libm).abs() <= 1e-6 * libm.max(1e-30), "exp({x}): {ours} vs {libm}");
        }
        assert!(exp_nonpositive(-200.0) < 2e-38, "far below is the clamp's tiny value");
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }
}
