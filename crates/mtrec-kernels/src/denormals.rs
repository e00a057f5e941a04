//! Subnormal floats flushed to zero on the CPU threads that compute.
//!
//! Adam's moments of a parameter whose gradient stays zero (a dead ReLU unit's weights, a rare id's
//! embedding row) decay geometrically — `m` by 0.9, `v` by 0.999 a step — into the subnormal range
//! below 1.2·10⁻³⁸, where x86 cores take a microcode assist on every operation, ~100× slower; `v`
//! stays there for ~16,000 steps. A census MMoE trial with wide experts and batch 256 slowed from
//! 49,000 to 1,600 samples/s over 27 epochs that way, and a resumed run started as slow (the state
//! holds them). Setting the MXCSR's flush-to-zero and denormals-are-zero bits makes such values 0,
//! as TensorFlow's CPU threads and oneDNN do; no normal value changes.

/// Sets flush-to-zero and denormals-are-zero (MXCSR bits 15 and 6) on the calling thread (x86-64;
/// nothing elsewhere).
#[allow(unsafe_code)]
pub fn flush_denormals_on_this_thread() {
    #[cfg(target_arch = "x86_64")]
    {
        let mut csr: u32 = 0;
        // SAFETY: stmxcsr/ldmxcsr read and write this thread's SSE control register only; setting
        // FTZ and DAZ changes how subnormal results and inputs are treated, nothing else.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
            csr |= 0x8040;
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly));
        }
    }
}

/// [`flush_denormals_on_this_thread`] on the calling thread and on every thread of rayon's global
/// pool (where flex, gemm and the fused kernels compute). The trainer calls it at the start of a
/// run; a program with threads of its own calls [`flush_denormals_on_this_thread`] on them.
pub fn flush_denormals() {
    flush_denormals_on_this_thread();
    rayon::broadcast(|_| flush_denormals_on_this_thread());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After the call, a subnormal input reads as 0 and a product that would be subnormal is 0, on
    /// this thread and on the pool's; normal values are untouched.
    #[test]
    fn subnormals_become_zero() {
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        let subnormal = std::hint::black_box(f32::from_bits(1)); // the smallest subnormal
        let run = move || {
            let product = std::hint::black_box(tiny) * std::hint::black_box(0.5f32);
            let read = std::hint::black_box(subnormal) * std::hint::black_box(1.0f32);
            let normal = std::hint::black_box(1.5f32) * std::hint::black_box(2.0f32);
            (product, read, normal)
        };
        std::thread::spawn(move || {
            assert_eq!(run().0, tiny * 0.5, "no flush before");
            flush_denormals();
            assert_eq!(run(), (0.0, 0.0, 3.0));
            let on_pool = rayon::broadcast(|_| run());
            assert!(on_pool.iter().all(|&r| r == (0.0, 0.0, 3.0)), "{on_pool:?}");
        })
        .join()
        .unwrap();
    }
}
