//! The `[balance]` section of an experiment config.

use serde::{Deserialize, Serialize};

use crate::{
    AlignedMtl, BalanceContext, CaGrad, CaGradScale, DbMtl, DynamicWeightAverage, FairGrad, Famo, FixedWeights,
    GradNorm, GradNormLayer, GradVac, GradientCombination, ImtlG, InitialLoss, LossBalancer, Mgda, MgdaNormalization,
    NashMtl, PcGrad, RandomLossWeighting, UncertaintyConvention, UncertaintyWeighting, UpGrad,
};

/// Which balancing method: a built-in, or one registered under its name by the program that
/// trains with it (a [`LossBalancer`] of the user's). The config spells each by its name; a name
/// that is not a built-in's reads as [`Self::Custom`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BalanceMethod {
    /// Constant per-task weights.
    #[default]
    Fixed,
    /// Learnable homoscedastic uncertainty (Kendall et al. 2018).
    Uncertainty,
    /// GradNorm (Chen et al. 2018).
    Gradnorm,
    /// Dynamic weight average (Liu et al. 2019).
    Dwa,
    /// Random loss weighting (Lin et al. 2022).
    Rlw,
    /// PCGrad gradient surgery (Yu et al. 2020).
    Pcgrad,
    /// MGDA-UB (Sener & Koltun 2018).
    Mgda,
    /// CAGrad (Liu et al. 2021).
    Cagrad,
    /// IMTL-G (Liu et al. 2021).
    ImtlG,
    /// GradVac, gradient vaccine (Wang et al. 2021).
    Gradvac,
    /// Aligned-MTL (Senushkin et al. 2023).
    AlignedMtl,
    /// UPGrad (Quinton & Rey 2024).
    Upgrad,
    /// Nash-MTL (Navon et al. 2022).
    NashMtl,
    /// FairGrad (Ban & Ji 2024).
    Fairgrad,
    /// FAMO (Liu et al. 2023).
    Famo,
    /// DB-MTL, dual balancing (Lin et al. 2023).
    DbMtl,
    /// A user's method, by the name it is registered under.
    Custom(String),
}

impl Serialize for BalanceMethod {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for BalanceMethod {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if name.trim().is_empty() {
            return Err(serde::de::Error::custom("balance.method must name a method"));
        }
        Ok(Self::from_name(&name))
    }
}

impl BalanceMethod {
    /// Every built-in method.
    pub const ALL: [BalanceMethod; 16] = [
        Self::Fixed,
        Self::Uncertainty,
        Self::Gradnorm,
        Self::Dwa,
        Self::Rlw,
        Self::Pcgrad,
        Self::Mgda,
        Self::Cagrad,
        Self::ImtlG,
        Self::Gradvac,
        Self::AlignedMtl,
        Self::Upgrad,
        Self::NashMtl,
        Self::Fairgrad,
        Self::Famo,
        Self::DbMtl,
    ];

    /// The built-ins' names, comma-separated: what an error about an unknown name lists.
    pub fn builtin_names() -> String {
        Self::ALL.map(|m| m.as_str().to_string()).join(", ")
    }

    /// The built-in of that name, or [`Self::Custom`].
    pub fn from_name(name: &str) -> Self {
        Self::ALL.into_iter().find(|m| m.as_str() == name).unwrap_or_else(|| Self::Custom(name.to_string()))
    }

    /// The config spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Fixed => "fixed",
            Self::Uncertainty => "uncertainty",
            Self::Gradnorm => "gradnorm",
            Self::Dwa => "dwa",
            Self::Rlw => "rlw",
            Self::Pcgrad => "pcgrad",
            Self::Mgda => "mgda",
            Self::Cagrad => "cagrad",
            Self::ImtlG => "imtl_g",
            Self::Gradvac => "gradvac",
            Self::AlignedMtl => "aligned_mtl",
            Self::Upgrad => "upgrad",
            Self::NashMtl => "nash_mtl",
            Self::Fairgrad => "fairgrad",
            Self::Famo => "famo",
            Self::DbMtl => "db_mtl",
            Self::Custom(name) => name,
        }
    }
}

/// The `[balance]` section. Options belong to one method each; setting one for another method is
/// an error naming the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceConfig {
    /// The method.
    pub method: BalanceMethod,
    /// `[balance.options]`: a registered method's own options (it parses them,
    /// [`crate::kit::parse_options`]); the built-ins take theirs as keys of `[balance]`.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub options: BalanceOptions,
    /// `fixed`: one weight per task, in task order (default: all 1).
    pub weights: Option<Vec<f64>>,
    /// `uncertainty`: `kendall` (c = 1 classification, ½ regression; default) or `all_regression`.
    pub convention: Option<UncertaintyConvention>,
    /// `uncertainty`, `gradnorm`: learning rate of the task weights (default: the network's);
    /// `famo`: of its logits (default 0.025, the official code's).
    pub weight_lr: Option<f64>,
    /// `gradnorm`: asymmetry α (default 1.5).
    pub alpha: Option<f64>,
    /// `gradnorm`: `first_step` (default) or `first_epoch_mean`.
    pub initial_loss: Option<InitialLoss>,
    /// `gradnorm`: `last_shared` (default) or `representation`.
    pub gradnorm_layer: Option<GradNormLayer>,
    /// `dwa`: temperature τ (default 2).
    pub temperature: Option<f64>,
    /// `cagrad`: conflict-aversion radius c in [0, 1) (default 0.5).
    pub cagrad_c: Option<f64>,
    /// `cagrad`: `sum` (default: the official code's `T ×` update, the scale of fixed weights) or
    /// `mean`.
    pub cagrad_scale: Option<CaGradScale>,
    /// `mgda`: gradient normalisation before the min-norm solve: `none` (default), `l2`, `loss` or
    /// `loss+` (the official code's `normalization_type`).
    pub mgda_normalization: Option<MgdaNormalization>,
    /// `gradvac`: the rate β of the target cosines' moving average, in (0, 1] (default 0.01, the
    /// paper's; LibMTL's default is 0.5).
    pub gradvac_beta: Option<f64>,
    /// `fairgrad`: the fairness α > 0 (default 1, LibMTL's: proportional fairness, Nash-MTL's
    /// equations; larger approaches max-min fairness).
    pub fairgrad_alpha: Option<f64>,
    /// `famo`: weight decay γ of the logits (default 0.01, the official code's).
    pub famo_gamma: Option<f64>,
    /// `db_mtl`: β of the moving average's rate `β/k^σ` (default 0.9, LibMTL's).
    pub db_mtl_beta: Option<f64>,
    /// `db_mtl`: σ of the rate `β/k^σ` (default 0.5; LibMTL's command line defaults to 0).
    pub db_mtl_sigma: Option<f64>,
    /// `fixed`, `dwa`, `rlw`: measure the task gradients at the shared tensors every this many
    /// steps of an epoch, for the gradient norms, cosines and conflicts of the logs (default 10;
    /// 0 = never). The update is the same either way ([`crate::diagnostics`]).
    pub diagnose_every: Option<u64>,
}

/// `[balance.options]`: a registered method's own options, as parsed from the config.
pub type BalanceOptions = serde_json::Map<String, serde_json::Value>;

fn positive(key: &str, value: f64) -> Result<f64, String> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!("balance.{key} must be positive, got {value}"))
    }
}

impl BalanceConfig {
    /// Every option that is set, with the methods it belongs to.
    fn options(&self) -> [(&'static str, bool, &'static [BalanceMethod]); 16] {
        use BalanceMethod::*;
        [
            ("weights", self.weights.is_some(), &[Fixed]),
            ("convention", self.convention.is_some(), &[Uncertainty]),
            ("weight_lr", self.weight_lr.is_some(), &[Uncertainty, Gradnorm, Famo]),
            ("alpha", self.alpha.is_some(), &[Gradnorm]),
            ("initial_loss", self.initial_loss.is_some(), &[Gradnorm]),
            ("gradnorm_layer", self.gradnorm_layer.is_some(), &[Gradnorm]),
            ("temperature", self.temperature.is_some(), &[Dwa]),
            ("cagrad_c", self.cagrad_c.is_some(), &[Cagrad]),
            ("cagrad_scale", self.cagrad_scale.is_some(), &[Cagrad]),
            ("mgda_normalization", self.mgda_normalization.is_some(), &[Mgda]),
            ("gradvac_beta", self.gradvac_beta.is_some(), &[Gradvac]),
            ("fairgrad_alpha", self.fairgrad_alpha.is_some(), &[Fairgrad]),
            ("famo_gamma", self.famo_gamma.is_some(), &[Famo]),
            ("db_mtl_beta", self.db_mtl_beta.is_some(), &[DbMtl]),
            ("db_mtl_sigma", self.db_mtl_sigma.is_some(), &[DbMtl]),
            ("diagnose_every", self.diagnose_every.is_some(), &[Fixed, Dwa, Rlw]),
        ]
    }

    /// Builds the balancer (a built-in method; a registered one is built by the program that
    /// registered it); the error names the offending key.
    pub fn init(&self, ctx: &BalanceContext) -> Result<Box<dyn LossBalancer>, String> {
        if let BalanceMethod::Custom(name) = &self.method {
            return Err(format!(
                "balance.method = {name:?} is not a built-in method ({}) and this program registered no method of \
                 that name (mtrec_train::Registry::balancer)",
                BalanceMethod::builtin_names()
            ));
        }
        if !self.options.is_empty() {
            return Err(format!(
                "balance.options is read by registered methods; the built-in {:?} takes its options as keys of \
                 [balance]",
                self.method.as_str()
            ));
        }
        for (key, set, methods) in self.options() {
            if set && !methods.contains(&self.method) {
                let owners: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
                return Err(format!(
                    "balance.{key} applies to method = {}, not \"{}\"",
                    owners.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(" or "),
                    self.method.as_str()
                ));
            }
        }
        let n_tasks = ctx.n_tasks();
        let weight_lr = positive("weight_lr", self.weight_lr.unwrap_or(ctx.lr))?;
        let diagnose_every = self.diagnose_every.unwrap_or(10);
        Ok(match self.method {
            BalanceMethod::Fixed => {
                let weights = self.weights.clone().unwrap_or_else(|| vec![1.0; n_tasks]);
                if weights.len() != n_tasks {
                    return Err(format!("balance.weights has {} values for {n_tasks} tasks", weights.len()));
                }
                if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
                    return Err(format!("balance.weights must be finite and non-negative, got {weights:?}"));
                }
                Box::new(FixedWeights::new(weights).with_diagnostics(diagnose_every))
            }
            BalanceMethod::Uncertainty => {
                Box::new(UncertaintyWeighting::new(&ctx.kinds, self.convention.unwrap_or_default(), weight_lr))
            }
            BalanceMethod::Gradnorm => {
                let alpha = self.alpha.unwrap_or(1.5);
                if !alpha.is_finite() || alpha < 0.0 {
                    return Err(format!("balance.alpha must be finite and non-negative, got {alpha}"));
                }
                Box::new(
                    GradNorm::new(
                        n_tasks,
                        alpha,
                        weight_lr,
                        self.gradnorm_layer.unwrap_or_default(),
                        self.initial_loss.unwrap_or_default(),
                    )
                    .with_task_names(ctx.names.clone()),
                )
            }
            BalanceMethod::Dwa => {
                let temperature = positive("temperature", self.temperature.unwrap_or(2.0))?;
                Box::new(DynamicWeightAverage::new(n_tasks, temperature).with_diagnostics(diagnose_every))
            }
            BalanceMethod::Rlw => {
                Box::new(RandomLossWeighting::new(n_tasks, ctx.seed).with_diagnostics(diagnose_every))
            }
            BalanceMethod::Pcgrad => Box::new(GradientCombination::new(PcGrad::new(ctx.seed), n_tasks)),
            BalanceMethod::Mgda => {
                Box::new(GradientCombination::new(Mgda::new(self.mgda_normalization.unwrap_or_default()), n_tasks))
            }
            BalanceMethod::Cagrad => {
                let c = self.cagrad_c.unwrap_or(0.5);
                if !(0.0..1.0).contains(&c) {
                    return Err(format!("balance.cagrad_c must be in [0, 1), got {c}"));
                }
                let scale = self.cagrad_scale.unwrap_or_default();
                Box::new(GradientCombination::new(CaGrad::new(c).with_scale(scale), n_tasks))
            }
            BalanceMethod::ImtlG => Box::new(GradientCombination::new(ImtlG, n_tasks)),
            BalanceMethod::Gradvac => {
                let beta = self.gradvac_beta.unwrap_or(0.01);
                if !(beta > 0.0 && beta <= 1.0) {
                    return Err(format!("balance.gradvac_beta must be in (0, 1], got {beta}"));
                }
                Box::new(GradientCombination::new(GradVac::new(n_tasks, beta, ctx.seed), n_tasks))
            }
            BalanceMethod::AlignedMtl => Box::new(GradientCombination::new(AlignedMtl, n_tasks)),
            BalanceMethod::Upgrad => Box::new(GradientCombination::new(UpGrad, n_tasks)),
            BalanceMethod::NashMtl => Box::new(GradientCombination::new(NashMtl, n_tasks)),
            BalanceMethod::Fairgrad => {
                let alpha = positive("fairgrad_alpha", self.fairgrad_alpha.unwrap_or(1.0))?;
                Box::new(GradientCombination::new(FairGrad::new(alpha), n_tasks))
            }
            BalanceMethod::Famo => {
                let lr = positive("weight_lr", self.weight_lr.unwrap_or(0.025))?;
                let gamma = self.famo_gamma.unwrap_or(0.01);
                if !(gamma.is_finite() && gamma >= 0.0) {
                    return Err(format!("balance.famo_gamma must be finite and non-negative, got {gamma}"));
                }
                Box::new(Famo::new(n_tasks, lr, gamma))
            }
            BalanceMethod::DbMtl => {
                let beta = self.db_mtl_beta.unwrap_or(0.9);
                if !(0.0..1.0).contains(&beta) {
                    return Err(format!("balance.db_mtl_beta must be in [0, 1), got {beta}"));
                }
                let sigma = self.db_mtl_sigma.unwrap_or(0.5);
                if !(sigma.is_finite() && sigma >= 0.0) {
                    return Err(format!("balance.db_mtl_sigma must be finite and non-negative, got {sigma}"));
                }
                Box::new(GradientCombination::new(DbMtl::new(n_tasks, beta, sigma), n_tasks))
            }
            BalanceMethod::Custom(_) => unreachable!("returned above"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::context;

    #[test]
    fn options_of_another_method_name_the_key() {
        let cfg = BalanceConfig { method: BalanceMethod::Fixed, alpha: Some(1.0), ..Default::default() };
        let err = cfg.init(&context(2)).err().unwrap();
        assert!(err.contains("balance.alpha") && err.contains("gradnorm"), "{err}");
        let cfg = BalanceConfig { method: BalanceMethod::Cagrad, cagrad_c: Some(1.5), ..Default::default() };
        assert!(cfg.init(&context(2)).err().unwrap().contains("balance.cagrad_c"));
    }

    #[test]
    fn every_method_builds_with_its_name() {
        for method in BalanceMethod::ALL {
            let b = BalanceConfig { method: method.clone(), ..Default::default() }.init(&context(3)).unwrap();
            assert_eq!(b.name(), method.as_str());
            assert_eq!(b.task_weights().len(), 3);
        }
    }
}
