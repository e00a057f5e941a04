//! The encoder's erf GELU, vectorised on the flex backend.
//!
//! flex 0.22.1 evaluates `gelu` one element at a time with libm's scalar `erff`, which the
//! compiler cannot vectorise: in a MiniLM layer it took more time than either FFN matmul (62 ms at
//! 5,120 tokens). Where no gradient flows through it (a frozen encoder, or the frozen layers of
//! one that trains), on flex this runs GELU on the tensor's host data instead, with a branch-free
//! rational approximation of `erf` (the one Eigen and TensorFlow use for `float`; within 5e-7 of
//! `erf`, see the test) that compiles to SIMD (AVX-512 where the CPU has it, through
//! mtrec-kernels' run-time dispatch), split over rayon's threads. Tensors of the autodiff graph and
//! other backends keep burn's `gelu`.

use burn::tensor::{DType, Device, Tensor, TensorData, activation};
use mtrec_kernels::{ElementLoop, vectorized};
use rayon::prelude::*;

/// Elements per rayon task.
const CHUNK: usize = 1 << 15;

/// `erf(x)` for f32 within 5e-7 absolute: `x·P(x²)/Q(x²)` on `x` clamped to [-4, 4].
#[inline(always)]
fn erf(x: f32) -> f32 {
    const A: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ];
    const B: [f32; 5] = [-1.456_607_2e-5, -2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = A[1..].iter().fold(A[0], |p, &a| p * x2 + a) * x;
    let q = B[1..].iter().fold(B[0], |q, &b| q * x2 + b);
    p / q
}

/// `0.5·x·(1 + erf(x/√2))` over a chunk, in place.
struct GeluLoop<'a>(&'a mut [f32]);

impl ElementLoop for GeluLoop<'_> {
    #[inline(always)]
    fn run(self) {
        for v in self.0 {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// GELU over a slice, in place: chunks over rayon's threads, each with the CPU's widest vectors.
fn gelu_in_place(values: &mut [f32]) {
    values.par_chunks_mut(CHUNK).for_each(|chunk| vectorized(GeluLoop(chunk)));
}

/// erf GELU, as burn's `activation::gelu`.
///
/// # Shapes
/// - x: any; output: the same
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    // a tensor of the autodiff graph (an encoder that trains) keeps burn's differentiable op
    if device != Device::flex() || x.dtype() != DType::F32 || x.is_tracked() {
        return activation::gelu(x);
    }
    let shape = x.shape();
    // A tensor no one else holds (the FFN's output) hands over its buffer: no copy either way.
    let mut values = x.into_data().try_into_vec::<f32>().expect("the data of an f32 flex tensor is a vector of f32");
    gelu_in_place(&mut values);
    Tensor::from_data(TensorData::new(values, shape), &device)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The approximation against flex's `erf` (libm's `erff`, within a few ulps), over and
    /// beyond the clamp.
    #[test]
    fn erf_is_within_5e7_of_libm() {
        let xs: Vec<f32> = (-600_000..=600_000).map(|k| k as f32 * 1e-5).collect();
        let reference =
            Tensor::<1>::from_floats(xs.as_slice(), &Device::flex()).erf().into_data().try_into_vec::<f32>().unwrap();
        let worst = xs.iter().zip(&reference).map(|(x, r)| (erf(*x) - r).abs()).fold(0.0f32, f32::max);
        assert!(worst < 5e-7, "{worst}");
    }

    /// On flex, the vectorised GELU equals burn's (libm) GELU within float error.
    #[test]
    fn flex_gelu_matches_burns_gelu() {
        let values: Vec<f32> = (0..70_001).map(|k| (k as f32 - 35_000.0) * 2.3e-4).collect();
        let reference = activation::gelu(Tensor::<1>::from_floats(values.as_slice(), &Device::flex()))
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let ours = gelu(Tensor::<1>::from_floats(values.as_slice(), &Device::flex()))
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        for ((x, a), b) in values.iter().zip(&reference).zip(&ours) {
            assert!((a - b).abs() <= 5e-7 * x.abs().max(1.0), "gelu({x}): {a} vs {b}");
        }
    }
}
