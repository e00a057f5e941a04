//! Per-task gradients at the shared tensors, from one cut forward.
//!
//! Gradient-based balancers (GradNorm, PCGrad, MGDA-UB, CAGrad) need each task's gradient
//! separately. burn cannot backpropagate twice through a shared node, so the step is cut at the
//! shared tensors (see [`CutForward`]): each task's loss is backpropagated through its own branch to
//! the detached leaves, which yields its branch parameters' gradients and `g_t = ∂L_t/∂z` at every
//! shared tensor `z`. The balancer combines the `g_t` into one gradient `Σ_t c_t·g_t` and a single
//! surrogate backward `Σ_k (z_k · Σ_t c_t·g_tk).sum()` carries it through the shared part. This is
//! LibMTL's "representation gradient" mode, with exact per-task gradients at the representation
//! and one shared backward per step.

use burn::tensor::{Gradients, Tensor};

use crate::{
    BalancedGradients, CutForward,
    balancer::{detached, to_host},
};

/// Each task's gradient at each shared tensor, and its branch gradients.
pub struct TaskGradients {
    shared: Vec<Tensor<2>>,
    /// `per_task[t][k]`: gradient of task `t`'s (scaled) loss at shared tensor `k`.
    pub per_task: Vec<Vec<Tensor<2>>>,
    branches: Vec<Gradients>,
    /// The tasks' losses, detached.
    pub losses: Vec<Tensor<1>>,
}

impl TaskGradients {
    /// Backpropagates `scales[t] · L_t` of each task through its branch to the leaves.
    pub fn compute(cut: CutForward, scales: &[f64]) -> Self {
        let CutForward { shared, leaves, losses } = cut;
        assert_eq!(losses.len(), scales.len(), "one scale per task");
        let mut per_task = Vec::with_capacity(losses.len());
        let mut branches = Vec::with_capacity(losses.len());
        let detached = detached(&losses);
        for (loss, &scale) in losses.into_iter().zip(scales) {
            let mut grads = if scale == 1.0 { loss.backward() } else { loss.mul_scalar(scale).backward() };
            let at_leaves = leaves
                .iter()
                .map(|leaf| leaf.grad_remove(&mut grads).unwrap_or_else(|| leaf.zeros_like().detach()))
                .collect();
            per_task.push(at_leaves);
            branches.push(grads);
        }
        Self { shared, per_task, branches, losses: detached }
    }

    /// Number of tasks.
    pub fn n_tasks(&self) -> usize {
        self.per_task.len()
    }

    /// The Gram matrix `G[i][j] = ⟨g_i, g_j⟩` over all shared tensors (one device-to-host read).
    pub fn gram(&self) -> Vec<Vec<f64>> {
        self.gram_and_losses().0
    }

    /// The Gram matrix and the tasks' losses, in one device-to-host read.
    pub fn gram_and_losses(&self) -> (Vec<Vec<f64>>, Vec<f64>) {
        let t = self.n_tasks();
        let host = to_host(std::iter::once(flat_gram(&self.per_task)).chain(self.losses.clone()).collect());
        let (gram, losses) = host.split_at(t * t);
        (gram.chunks(t).map(<[f64]>::to_vec).collect(), losses.to_vec())
    }

    /// Finishes the step: the shared part receives `Σ_t c_t · g_t` (one surrogate backward); each
    /// branch keeps the gradient of its own scaled loss.
    pub fn finish(self, coefficients: &[f64]) -> BalancedGradients {
        assert_eq!(coefficients.len(), self.n_tasks(), "one coefficient per task");
        let surrogate = self
            .shared
            .iter()
            .enumerate()
            .map(|(k, z)| {
                let combined = self
                    .per_task
                    .iter()
                    .zip(coefficients)
                    .map(|(g, &c)| if c == 1.0 { g[k].clone() } else { g[k].clone().mul_scalar(c) })
                    .reduce(Tensor::add)
                    .expect("at least one task");
                (z.clone() * combined).sum()
            })
            .reduce(Tensor::add)
            .expect("at least one shared tensor");
        let mut parts = self.branches;
        parts.push(surrogate.backward());
        BalancedGradients { parts, task_losses: self.losses }
    }
}

/// `⟨g_i, g_j⟩` of the tasks' gradients (`per_task[t]`: task `t`'s gradient at each shared
/// tensor), row-major `[T·T]`, on the device.
pub(crate) fn flat_gram(per_task: &[Vec<Tensor<2>>]) -> Tensor<1> {
    let rows: Vec<Tensor<2>> = per_task
        .iter()
        .map(|grads| Tensor::cat(grads.iter().map(|g| g.clone().flatten::<1>(0, 1)).collect(), 0).unsqueeze_dim(0))
        .collect();
    let t = rows.len();
    let m = Tensor::cat(rows, 0);
    m.clone().matmul(m.transpose()).reshape([t * t])
}
