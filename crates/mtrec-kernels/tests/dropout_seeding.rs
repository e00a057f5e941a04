//! A seeded backend generator draws the same dropout masks: the fused dropout takes its seed from
//! the generator, so a seeded (or resumed) run repeats its masks. Alone in this process, because
//! the generator is shared by every test that runs beside it.

use burn::{
    nn::DropoutConfig,
    tensor::{Device, Tensor},
};
use mtrec_kernels::dropout;

#[test]
fn a_seeded_generator_draws_the_same_mask() {
    let device = Device::flex().autodiff();
    let layer = DropoutConfig::new(0.3).init();
    let n = 10_000;
    let mask = |seed: u64| -> Vec<bool> {
        device.seed(seed);
        let x = Tensor::<1>::ones([n], &device);
        dropout(&layer, x).into_data().try_into_vec::<f32>().unwrap().iter().map(|&v| v != 0.0).collect()
    };
    let first = mask(7);
    assert!(first.iter().any(|&k| !k) && first.iter().any(|&k| k), "some kept, some dropped");
    assert_eq!(mask(7), first, "the same generator seed draws the same mask");
    assert_ne!(mask(8), first, "another seed another mask");
}
