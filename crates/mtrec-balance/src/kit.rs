//! The toolkit a balancer is built from, public so that a user's own [`LossBalancer`](crate::LossBalancer) (in the
//! user's crate, registered by name with `mtrec_train::Registry::balancer`) is written as the
//! built-ins are:
//!
//! - the step of a loss-weighting method: [`weighted_backward`], or [`weighted_sum`] of the
//!   losses and [`detached`] copies when the weights depend on this step's losses (read them with
//!   [`to_host`], then [`batch_mean`] them so that data-parallel ranks decide alike);
//! - randomness that a resumed run repeats: [`EpochRng`];
//! - per-task values averaged over an epoch for the logs: [`EpochMean`];
//! - learnable per-task values with their own Adam, on the host: [`LearnableTaskValues`];
//! - checkpoint state: [`state_value`] / [`parse_state`] (put a version in it, `{"v": 1, …}`: the
//!   checkpoint records only the method's name), [`restore_stateless`] for methods without;
//! - `[balance.options]`: [`parse_options`].
//!
//! A combination of the tasks' gradients at the shared tensors is simpler still: implement
//! [`GradientCombiner`](crate::GradientCombiner) (the Gram matrix to coefficients) and wrap it in
//! [`GradientCombination`](crate::GradientCombination).

pub use crate::balancer::{
    EpochMean, EpochRng, batch_mean, batch_mean_tensor, batch_squares, detached, parse_state, restore_stateless,
    state_value, to_host, weighted_backward, weighted_sum,
};
pub use crate::learnable::LearnableTaskValues;

/// `[balance.options]` parsed into the method's own type (absent keys take the type's serde
/// defaults); the error names `balance.options` and the method.
pub fn parse_options<T: serde::de::DeserializeOwned>(
    method: &str,
    options: &crate::BalanceOptions,
) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::Object(options.clone()))
        .map_err(|e| format!("balance.options of {method:?}: {e}"))
}
