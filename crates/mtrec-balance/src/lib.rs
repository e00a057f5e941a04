//! Loss balancing for multi-task learning, behind one trait.
//!
//! A [`LossBalancer`] turns one training step into gradients. It asks the step for what it needs
//! through [`TaskGraph`]: the per-task losses of one forward (loss-weighting methods:
//! [`FixedWeights`], [`UncertaintyWeighting`], [`DynamicWeightAverage`], [`RandomLossWeighting`]);
//! one forward whose task branches read the shared tensors through per-task probes
//! ([`ProbedForward`]: [`GradNorm`], which measures per-task gradients but updates the network with
//! a fixed combination); or a forward cut at the shared tensors ([`CutForward`]) from which it takes
//! per-task gradients of the shared representation ([`TaskGradients`]: the [`GradientCombiner`]s
//! [`PcGrad`], [`Mgda`], [`CaGrad`], [`ImtlG`]) without the second backward through a shared node
//! that burn's autodiff does not allow. The training loop calls the trait and never asks which
//! method it runs. Every method's state between epochs serialises for checkpoints
//! ([`LossBalancer::state`]).
//!
//! # Guide
//!
//! [`BalanceConfig`] (the `[balance]` section) builds a built-in method as a
//! `Box<dyn LossBalancer>`; a program registers its own methods by name
//! (`mtrec_train::Registry::balancer`), written from the same parts ([`kit`]). The smallest way in
//! is a [`GradientCombiner`]: it maps the Gram matrix of the tasks' gradients at the shared tensors
//! to the coefficients of their combination, and [`GradientCombination`] does the rest (the cut
//! forward, per-task gradients, the reduction over data-parallel ranks, the logs, checkpoints):
//!
//! ```
//! use mtrec_balance::{GradientCombination, GradientCombiner, LossBalancer};
//!
//! /// Each task's gradient scaled to unit norm: c_t = 1 / ‖g_t‖.
//! struct UnitNorms;
//!
//! impl GradientCombiner for UnitNorms {
//!     fn name(&self) -> &'static str {
//!         "unit_norms"
//!     }
//!     fn coefficients(&mut self, gram: &[Vec<f64>], _losses: &[f64]) -> Vec<f64> {
//!         (0..gram.len()).map(|t| 1.0 / gram[t][t].sqrt().max(1e-12)).collect()
//!     }
//! }
//!
//! // ‖g_0‖ = 2, ‖g_1‖ = 0.5
//! assert_eq!(UnitNorms.coefficients(&[vec![4.0, 0.0], vec![0.0, 0.25]], &[0.7, 0.3]), [0.5, 2.0]);
//! let balancer: Box<dyn LossBalancer> = Box::new(GradientCombination::new(UnitNorms, 2));
//! assert_eq!(balancer.name(), "unit_norms");
//! ```

#![deny(missing_docs)]

mod aligned_mtl;
mod balancer;
mod cagrad;
mod combination;
mod config;
mod db_mtl;
pub mod diagnostics;
mod dwa;
mod fairgrad;
mod famo;
mod fixed;
mod gradnorm;
mod gradvac;
mod imtl;
pub mod kit;
mod learnable;
mod mgda;
mod nash_mtl;
mod pcgrad;
mod rlw;
pub mod simplex;
mod task_gradients;
mod uncertainty;
mod upgrad;

pub use aligned_mtl::{AlignedMtl, symmetric_eigen};
pub use balancer::{
    BalanceContext, BalanceError, BalancedGradients, CutForward, LossBalancer, ProbedForward, TaskGraph, batch_mean,
    batch_mean_tensor, batch_squares,
};
pub use cagrad::{CaGrad, CaGradScale};
pub use combination::{GradientCombination, GradientCombiner, pair_cosines};
pub use config::{BalanceConfig, BalanceMethod, BalanceOptions};
pub use db_mtl::DbMtl;
pub use dwa::DynamicWeightAverage;
pub use fairgrad::{FairGrad, fair_weights};
pub use famo::Famo;
pub use fixed::FixedWeights;
pub use gradnorm::{GradNorm, GradNormLayer, InitialLoss};
pub use gradvac::GradVac;
pub use imtl::ImtlG;
pub use mgda::{Mgda, MgdaNormalization};
pub use nash_mtl::NashMtl;
pub use pcgrad::PcGrad;
pub use rlw::RandomLossWeighting;
pub use task_gradients::TaskGradients;
pub use uncertainty::{UncertaintyConvention, UncertaintyWeighting};
pub use upgrad::UpGrad;

#[cfg(test)]
pub(crate) mod test_support {
    use crate::BalanceContext;
    use mtrec_data::TaskKind;

    /// A context of `n` binary tasks.
    pub(crate) fn context(n: usize) -> BalanceContext {
        BalanceContext {
            names: (0..n).map(|t| format!("t{t}")).collect(),
            kinds: vec![TaskKind::Binary; n],
            lr: 1e-3,
            seed: 1,
        }
    }

    /// The Gram matrix of gradients given as vectors.
    pub(crate) fn gram<V: AsRef<[f64]>>(g: &[V]) -> Vec<Vec<f64>> {
        let dot = |a: &V, b: &V| a.as_ref().iter().zip(b.as_ref()).map(|(x, y)| x * y).sum();
        g.iter().map(|a| g.iter().map(|b| dot(a, b)).collect()).collect()
    }

    /// One run of a reference implementation on a fixed Jacobian, from `reference/balancers.json`
    /// (written by `scripts/reference_balancers.py` with LibMTL and TorchJD).
    #[derive(serde::Deserialize)]
    pub(crate) struct Reference {
        pub(crate) method: String,
        pub(crate) library: String,
        pub(crate) case: String,
        pub(crate) options: serde_json::Value,
        /// One task gradient a row.
        pub(crate) jacobian: Vec<Vec<f64>>,
        pub(crate) steps: Vec<ReferenceStep>,
    }

    /// One step of a [`Reference`]: the losses it saw and the update it left in the gradient.
    #[derive(serde::Deserialize)]
    pub(crate) struct ReferenceStep {
        pub(crate) losses: Vec<f64>,
        /// FAMO's losses after the step.
        #[serde(default)]
        pub(crate) losses_after: Option<Vec<f64>>,
        pub(crate) update: Vec<f64>,
    }

    impl Reference {
        /// The Gram matrix of the task gradients.
        pub(crate) fn gram(&self) -> Vec<Vec<f64>> {
            gram(&self.jacobian)
        }

        /// `Σ_t c_t·g_t`.
        pub(crate) fn update(&self, c: &[f64]) -> Vec<f64> {
            (0..self.jacobian[0].len()).map(|k| c.iter().zip(&self.jacobian).map(|(c, g)| c * g[k]).sum()).collect()
        }

        /// A numeric option the script recorded.
        pub(crate) fn option(&self, key: &str) -> f64 {
            self.options[key].as_f64().unwrap_or_else(|| panic!("{}: no option {key}", self.label()))
        }

        /// Method, library and case, for messages.
        pub(crate) fn label(&self) -> String {
            format!("{} of {} on {}", self.method, self.library, self.case)
        }

        /// Asserts that `ours` is the reference's update of `step` to `tolerance` relative to its norm.
        pub(crate) fn assert_step(&self, step: usize, ours: &[f64], tolerance: f64) {
            let theirs = &self.steps[step].update;
            let norm = theirs.iter().map(|x| x * x).sum::<f64>().sqrt();
            let error = ours.iter().zip(theirs).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
            assert!(
                error <= tolerance * norm.max(1e-12),
                "{} step {step}: mtrec {ours:?}, reference {theirs:?} (relative error {:.2e})",
                self.label(),
                error / norm.max(1e-12)
            );
        }
    }

    /// The reference runs of `method` (at least one).
    pub(crate) fn references(method: &str) -> Vec<Reference> {
        #[derive(serde::Deserialize)]
        struct File {
            records: Vec<Reference>,
        }
        let file: File = serde_json::from_str(include_str!("../reference/balancers.json")).expect("balancers.json");
        let runs: Vec<Reference> = file.records.into_iter().filter(|r| r.method == method).collect();
        assert!(!runs.is_empty(), "no reference runs of {method}");
        runs
    }

    /// Checks a stateless or stateful combination against every reference run of `method`:
    /// `make` builds a fresh combiner for a run, `scale` maps mtrec's update of a step onto the
    /// reference's convention.
    pub(crate) fn check_against_references<C: crate::GradientCombiner>(
        method: &str,
        tolerance: f64,
        make: impl Fn(&Reference) -> C,
        scale: impl Fn(&Reference, usize) -> f64,
    ) {
        for run in references(method) {
            let mut combiner = make(&run);
            for (k, step) in run.steps.iter().enumerate() {
                let c = combiner.coefficients(&run.gram(), &step.losses);
                let ours: Vec<f64> = run.update(&c).iter().map(|x| x * scale(&run, k)).collect();
                run.assert_step(k, &ours, tolerance);
            }
        }
    }

    /// `Σ_k a_k·g_k` of 2-d gradients.
    pub(crate) fn combine2(a: &[f64], g: &[[f64; 2]]) -> [f64; 2] {
        let mut v = [0.0; 2];
        for (c, gi) in a.iter().zip(g) {
            v[0] += c * gi[0];
            v[1] += c * gi[1];
        }
        v
    }
}
