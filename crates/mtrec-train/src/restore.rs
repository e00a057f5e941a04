//! Resuming a run: its checkpoint loaded into a freshly built model, optimisers and balancer.

use burn::{
    module::Module,
    optim::OptimizerRecord,
    store::ModuleRecord,
    tensor::{Bytes, Device, Tensor},
};
use mtrec_balance::LossBalancer;
use mtrec_data::Schema;
use mtrec_model::{MultiTaskModule, MultiTaskNet};

use crate::{
    Checkpoint, EarlyStopping, ExperimentConfig, Optimizers, Registry, RunDirectory, TaskMetrics, TrainError,
    TrainingState,
};

/// What a checkpoint restores.
pub(crate) struct Restored<C: MultiTaskModule> {
    pub(crate) state: TrainingState,
    pub(crate) model: MultiTaskNet<C>,
    pub(crate) optim: Optimizers,
    pub(crate) stopper: EarlyStopping,
    pub(crate) best: Option<(MultiTaskNet<C>, Vec<TaskMetrics>)>,
    pub(crate) best_bytes: Vec<u8>,
}

/// Loads the run folder's checkpoint into a freshly built `model`, `optim` and `balancer`; rewrites
/// `best_model.bpk` from it (a process killed after saving a new best model but before its
/// checkpoint leaves a newer file there).
#[allow(clippy::too_many_arguments)]
pub(crate) fn restore<C: MultiTaskModule>(
    dir: &RunDirectory,
    write: bool,
    cfg: &ExperimentConfig,
    schema: &Schema,
    device: &Device,
    model: MultiTaskNet<C>,
    balancer: &mut dyn LossBalancer,
    registry: &Registry<C>,
) -> Result<Restored<C>, TrainError> {
    if write {
        dir.remove_partial_writes()?;
    }
    let path = dir.checkpoint_path();
    let checkpoint = Checkpoint::load(&path)?;
    let state = checkpoint.state;
    let recorded = ExperimentConfig::from_toml(&state.config, "the checkpoint's config", &[])
        .map_err(|e| TrainError::Checkpoint { path: path.clone(), reason: format!("its config: {e}") })?;
    if !recorded.same_run_as(cfg) {
        return Err(TrainError::Checkpoint {
            path,
            reason: "it was written by a different config (only train.epochs and data.dir may change on resume)".into(),
        });
    }
    let load = |model: MultiTaskNet<C>, bytes: Vec<u8>| {
        ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
            .and_then(|record| model.try_load_record(record))
            .map_err(|e| checkpoint_error(&path, e))
    };
    let model = load(model, checkpoint.model)?;
    // the parameters now have the checkpoint's ids: the optimiser's groups (a trainable text
    // encoder's AdamW) are drawn from them, as the interrupted run's were
    let mut optim = cfg.optimizers(&model);
    optim.dense = optim.dense.load_record(
        OptimizerRecord::from_bytes(Bytes::from_bytes_vec(checkpoint.optimizer))
            .map_err(|e| checkpoint_error(&path, e))?,
    );
    if !checkpoint.sparse_optimizer.is_empty() {
        optim.sparse.load_state_bytes(&checkpoint.sparse_optimizer, device).map_err(|e| checkpoint_error(&path, e))?;
    }
    balancer
        .load_state(state.balancer.clone())
        .map_err(|e| TrainError::Checkpoint { path: path.clone(), reason: e.0 })?;
    let best = match &state.best_valid {
        Some(valid) if !checkpoint.best_model.is_empty() => {
            if write {
                dir.write_best_model(&checkpoint.best_model)?;
            }
            Some((
                load(cfg.build_model_with(schema, device, registry)?, checkpoint.best_model.clone())?.valid(),
                valid.clone(),
            ))
        }
        Some(_) => {
            return Err(TrainError::Checkpoint {
                path,
                reason: "it records a best epoch but holds no best model".into(),
            });
        }
        None => None,
    };
    Ok(Restored { stopper: state.early_stopping.clone(), state, model, optim, best, best_bytes: checkpoint.best_model })
}

/// Draws every lazily initialised parameter now, in the module's order, from the generator as
/// seeded with the run's seed. Otherwise burn draws each at its first use — inside the first
/// training step, interleaved with that step's dropout masks — so the initial values would depend
/// on the forward's order and batch size, and data-parallel ranks (smaller batches) would start
/// from different values than one process.
pub(crate) fn initialise_parameters<C: MultiTaskModule>(model: &MultiTaskNet<C>) {
    struct Initialise;
    impl burn::module::ModuleVisitor for Initialise {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    model.visit(&mut Initialise);
}

pub(crate) fn checkpoint_error(path: &std::path::Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() }
}

pub(crate) fn record_bytes(record: ModuleRecord, path: &std::path::Path) -> Result<Vec<u8>, TrainError> {
    Ok(record.into_bytes().map_err(|e| checkpoint_error(path, e))?.to_vec())
}
