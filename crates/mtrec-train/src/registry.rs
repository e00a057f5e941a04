//! Names a config can give: the built-in architectures and balancers, and the ones a program
//! registers (see [`Registry`]).

use std::collections::BTreeMap;

use mtrec_balance::{BalanceContext, BalanceMethod, BalanceOptions, LossBalancer};
use mtrec_data::Schema;
use mtrec_model::{Architecture, ArchitectureFactory, MultiTaskModule, NoCustom};

use crate::{ExperimentConfig, TrainError};

/// Builds a registered balancer for a dataset's tasks from `[balance.options]`.
pub type BalancerConstructor =
    Box<dyn Fn(&BalanceContext, &BalanceOptions) -> Result<Box<dyn LossBalancer>, String> + Send + Sync>;

/// The architectures and balancers a program's configs may name besides the built-ins.
///
/// A program (the `xtask`, an example, a researcher's binary) registers its own under names;
/// its TOML configs, `--set` overrides, `compare` and the run files then name them like the
/// built-ins (`architecture = "dselect_k"`, `method = "famo_next_batch"`), with their own options in
/// `[model.options]` / `[balance.options]`. `C` is the program's own architecture type (an enum
/// of them when it has several; [`NoCustom`] when it has none): every registered architecture
/// builds a `C`.
///
/// ```
/// use mtrec_balance::FixedWeights;
/// use mtrec_train::Registry;
///
/// // a program with balancers of its own and no architecture: the default `C`
/// let registry: Registry = Registry::new().balancer("halves", |ctx, _options| {
///     Ok(Box::new(FixedWeights::new(vec![0.5; ctx.n_tasks()])))
/// });
/// assert_eq!(registry.balancer_names(), ["halves"]);
/// ```
pub struct Registry<C: MultiTaskModule = NoCustom> {
    architectures: BTreeMap<String, Box<dyn ArchitectureFactory<C>>>,
    balancers: BTreeMap<String, BalancerConstructor>,
}

static BUILTIN: Registry = Registry::new();

impl Registry<NoCustom> {
    /// The built-ins only (what `Trainer::new` builds through).
    pub fn builtin() -> &'static Registry {
        &BUILTIN
    }
}

impl<C: MultiTaskModule> Default for Registry<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: MultiTaskModule> Registry<C> {
    /// Nothing registered: the built-ins only.
    pub const fn new() -> Self {
        Self { architectures: BTreeMap::new(), balancers: BTreeMap::new() }
    }

    /// Registers `factory` under `name` (what `model.architecture` names).
    ///
    /// # Panics
    /// When `name` is a built-in architecture's or already registered: a program's registrations
    /// are fixed when it is written.
    pub fn architecture(mut self, name: &str, factory: impl ArchitectureFactory<C> + 'static) -> Self {
        assert!(
            Architecture::from_name(name).is_custom(),
            "Registry::architecture({name:?}): a built-in architecture has that name"
        );
        let previous = self.architectures.insert(name.to_string(), Box::new(factory));
        assert!(previous.is_none(), "Registry::architecture({name:?}): registered twice");
        self
    }

    /// Registers a balancer constructor under `name` (what `balance.method` names): it gets the
    /// tasks, `train.lr` and the seed ([`BalanceContext`]) and `[balance.options]`
    /// ([`mtrec_balance::kit::parse_options`]).
    ///
    /// # Panics
    /// When `name` is a built-in method's or already registered.
    pub fn balancer(
        mut self,
        name: &str,
        constructor: impl Fn(&BalanceContext, &BalanceOptions) -> Result<Box<dyn LossBalancer>, String>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        assert!(
            matches!(BalanceMethod::from_name(name), BalanceMethod::Custom(_)),
            "Registry::balancer({name:?}): a built-in method has that name"
        );
        let previous = self.balancers.insert(name.to_string(), Box::new(constructor));
        assert!(previous.is_none(), "Registry::balancer({name:?}): registered twice");
        self
    }

    /// The registered architectures' names, sorted.
    pub fn architecture_names(&self) -> Vec<&str> {
        self.architectures.keys().map(String::as_str).collect()
    }

    /// The registered balancers' names, sorted.
    pub fn balancer_names(&self) -> Vec<&str> {
        self.balancers.keys().map(String::as_str).collect()
    }

    /// The factory of a registered architecture (`None` for a built-in); an unknown name is an
    /// error listing the built-ins and the registered names.
    pub fn factory(&self, architecture: &Architecture) -> Result<Option<&dyn ArchitectureFactory<C>>, TrainError> {
        let Architecture::Custom(name) = architecture else { return Ok(None) };
        match self.architectures.get(name) {
            Some(factory) => Ok(Some(factory.as_ref())),
            None => Err(TrainError::Config(format!(
                "model.architecture = {name:?} is neither a built-in architecture ({}) nor registered in this \
                 program ({}); a run of a registered architecture trains, resumes and loads only in a program that \
                 registers it (mtrec_train::Registry, load_run_with)",
                Architecture::builtin_names(),
                listed(self.architecture_names()),
            ))),
        }
    }

    /// The balancer `config`'s `[balance]` names for a dataset's tasks: a registered method, or a
    /// built-in ([`mtrec_balance::BalanceConfig::init`]); an unknown name is an error listing both.
    pub fn build_balancer(
        &self,
        config: &ExperimentConfig,
        schema: &Schema,
    ) -> Result<Box<dyn LossBalancer>, TrainError> {
        let ctx = config.balance_context(schema);
        let balance = &config.balance;
        let BalanceMethod::Custom(name) = &balance.method else {
            return balance.init(&ctx).map_err(TrainError::Config);
        };
        let Some(constructor) = self.balancers.get(name) else {
            return Err(TrainError::Config(format!(
                "balance.method = {name:?} is neither a built-in method ({}) nor registered in this program ({})",
                BalanceMethod::builtin_names(),
                listed(self.balancer_names()),
            )));
        };
        if balance
            != &(mtrec_balance::BalanceConfig {
                method: balance.method.clone(),
                options: balance.options.clone(),
                ..Default::default()
            })
        {
            return Err(TrainError::Config(format!(
                "balance.method = {name:?} is a registered method: its options go in [balance.options], the other \
                 keys of [balance] belong to the built-ins"
            )));
        }
        constructor(&ctx, &balance.options).map_err(|e| TrainError::Config(format!("balance.method = {name:?}: {e}")))
    }
}

fn listed(names: Vec<&str>) -> String {
    if names.is_empty() { "none registered".into() } else { format!("registered: {}", names.join(", ")) }
}
