//! Running a kernel's element-wise loops with the CPU's widest vector instructions.
//!
//! mtrec is compiled for the x86-64 baseline (SSE2), so a plain loop vectorises to 4 lanes at most.
//! [`vectorized`] runs a loop inside pulp's run-time dispatch (the one gemm uses): on a CPU with
//! AVX-512 (or AVX2) the loop is compiled a second time for it and that copy runs, 16 (8) lanes.

/// An element-wise loop of a kernel. Implementations mark [`ElementLoop::run`]
/// `#[inline(always)]` and call only `#[inline(always)]` functions, so that the whole loop is
/// compiled inside pulp's target-feature function (a closure would be compiled outside it).
pub trait ElementLoop {
    /// Runs the loop.
    fn run(self);
}

/// A loop run by pulp's dispatch.
struct Dispatched<L>(L);

impl<L: ElementLoop> pulp::WithSimd for Dispatched<L> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.0.run()
    }
}

/// Runs `l` compiled for the best instruction set this CPU has. The loops fix their own order of
/// floating-point operations (as `dot` does), so every CPU gets the same result.
pub fn vectorized(l: impl ElementLoop) {
    pulp::Arch::new().dispatch(Dispatched(l))
}

/// `Σ a[i]·b[i]` with 16 independent partial sums (so the loop vectorises).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}
