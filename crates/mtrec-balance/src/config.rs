//! The `[balance]` section of an experiment config.

use serde::{Deserialize, Serialize};

use crate::{FixedWeights, LossBalancer};

/// Which balancing method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BalanceMethod {
    /// Constant per-task weights.
    #[default]
    Fixed,
}

/// The `[balance]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceConfig {
    /// The method.
    pub method: BalanceMethod,
    /// `fixed`: one weight per task, in task order (default: all 1).
    pub weights: Option<Vec<f64>>,
}

impl BalanceConfig {
    /// Builds the balancer for `n_tasks` tasks; the error names the offending key.
    pub fn init(&self, n_tasks: usize) -> Result<Box<dyn LossBalancer>, String> {
        match self.method {
            BalanceMethod::Fixed => {
                let weights = self.weights.clone().unwrap_or_else(|| vec![1.0; n_tasks]);
                if weights.len() != n_tasks {
                    return Err(format!("balance.weights has {} values for {n_tasks} tasks", weights.len()));
                }
                if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
                    return Err(format!("balance.weights must be finite and non-negative, got {weights:?}"));
                }
                Ok(Box::new(FixedWeights::new(weights)))
            }
        }
    }
}
