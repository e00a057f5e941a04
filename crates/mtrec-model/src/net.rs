//! The module that holds whichever architecture an experiment runs ([`ArchitectureNet`]: a
//! built-in, or a user's own type `C`), and the experiment's model around it ([`MultiTaskNet`]:
//! the architecture's main tasks, then the adversarial heads, text branches and concept erasers).

use burn::{
    module::{Module, ModuleMapper, Param, ParamGroup, ParamId},
    tensor::{Device, Tensor},
};
use mtrec_data::FeatureBatch;
use mtrec_text::TextEncoder;

use crate::{
    AdaTt, AdversarialHead, Aitm, ConceptEraser, CrossStitch, Esmm, FeatureEmbedding, FeatureEmbeddingConfig, Home,
    Mmoe, MultiTaskModel, MultiTaskModule, NoCustom, Omoe, Ple, SharedBottom, SharedTensors, SingleTask, Stem,
    TaskOutput, TaskTextBranch,
};

/// Sets the listed bias parameters to constants.
struct BiasSetter(Vec<(ParamId, f32)>);

impl ModuleMapper for BiasSetter {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(&(_, value)) = self.0.iter().find(|(id, _)| *id == param.id) else { return param };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let mut filled = tensor.zeros_like().add_scalar(value);
        if require_grad {
            filled = filled.require_grad();
        }
        Param::from_mapped_value(id, filled, mapper)
    }
}

/// Whichever architecture an experiment runs: a built-in, or a user's own `C`
/// ([`crate::ArchitectureFactory`]).
// one value a model, built once: the variants' sizes do not matter (HoME's is the largest)
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum ArchitectureNet<C: Module + MultiTaskModel = NoCustom> {
    /// See [`SharedBottom`].
    SharedBottom(SharedBottom),
    /// See [`Mmoe`].
    Mmoe(Mmoe),
    /// See [`Omoe`].
    Omoe(Omoe),
    /// See [`Ple`].
    Ple(Ple),
    /// See [`SingleTask`].
    SingleTask(SingleTask),
    /// See [`CrossStitch`].
    CrossStitch(CrossStitch),
    /// See [`Esmm`].
    Esmm(Esmm),
    /// See [`Aitm`].
    Aitm(Aitm),
    /// See [`AdaTt`].
    Adatt(AdaTt),
    /// See [`Stem`].
    Stem(Stem),
    /// See [`Home`].
    Home(Home),
    /// A user's architecture (its parameters are recorded under `body.Custom.*`).
    Custom(C),
}

impl<C: MultiTaskModule> ArchitectureNet<C> {
    /// Every input layer (one; one a task for single-task networks).
    fn inputs_mut(&mut self) -> Vec<&mut FeatureEmbedding> {
        match self {
            Self::SharedBottom(m) => vec![&mut m.input],
            Self::Mmoe(m) => vec![&mut m.input],
            Self::Omoe(m) => vec![&mut m.input],
            Self::Ple(m) => vec![&mut m.input],
            Self::SingleTask(m) => m.inputs.iter_mut().collect(),
            Self::CrossStitch(m) => vec![&mut m.input],
            Self::Esmm(m) => vec![&mut m.input],
            Self::Aitm(m) => vec![&mut m.input],
            Self::Adatt(m) => vec![&mut m.input],
            Self::Stem(m) => m.input_layers_mut(),
            Self::Home(m) => m.input_layers_mut(),
            Self::Custom(m) => m.input_layers_mut(),
        }
    }

    fn inner(&self) -> &dyn MultiTaskModel {
        match self {
            Self::SharedBottom(m) => m,
            Self::Mmoe(m) => m,
            Self::Omoe(m) => m,
            Self::Ple(m) => m,
            Self::SingleTask(m) => m,
            Self::CrossStitch(m) => m,
            Self::Esmm(m) => m,
            Self::Aitm(m) => m,
            Self::Adatt(m) => m,
            Self::Stem(m) => m,
            Self::Home(m) => m,
            Self::Custom(m) => m,
        }
    }
}

/// An experiment's model: the architecture's main tasks, then the adversarial heads.
#[derive(Module, Debug)]
pub struct MultiTaskNet<C: Module + MultiTaskModel = NoCustom> {
    /// The architecture (main tasks).
    pub body: ArchitectureNet<C>,
    /// One head per adversarial task, on the shared representation behind gradient reversal.
    pub adversaries: Vec<AdversarialHead>,
    /// `model.text.adapters = "per_task"`: each main task's adapters in the text encoder, added
    /// to its output (empty otherwise).
    pub task_text: Vec<TaskTextBranch>,
    /// `model.erasure = "leace"`: one concept eraser a tower input (empty otherwise), refitted by
    /// the trainer ([`Self::set_erasers`]).
    pub erasers: Vec<ConceptEraser>,
}

impl<C: MultiTaskModule> MultiTaskNet<C> {
    /// What the main towers read, side by side, `[B, Σ width]`: the representation the adversarial
    /// heads read and the post-hoc probe is fitted on.
    pub fn representation(&self, shared: &SharedTensors) -> Tensor<2> {
        let mut parts = self.body.inner().tower_inputs(shared);
        if parts.len() == 1 { parts.pop().expect("one part") } else { Tensor::cat(parts, 1) }
    }

    /// Sets the output bias of each task `t` with `values[t] = Some(v)` to `v` (a regression
    /// head starting at the training label mean: the first steps then learn the signal, not the
    /// label's offset). Tasks whose head has no bias ([`MultiTaskModel::output_bias`]) keep theirs.
    pub fn with_output_biases(self, values: &[Option<f32>]) -> Self {
        let targets: Vec<(ParamId, f32)> =
            (values.iter().enumerate()).filter_map(|(t, v)| Some((self.output_bias(t)?, (*v)?))).collect();
        if targets.is_empty() {
            return self;
        }
        self.map(&mut BiasSetter(targets))
    }

    /// Attaches a trainable sentence encoder to every input layer (one, or one a task for
    /// single-task networks: `open` is called for each, so none shares parameters) for the text
    /// fields holding token ids (`tokens[f]`).
    pub fn with_text_encoders<E>(
        mut self,
        tokens: &[bool],
        mut open: impl FnMut() -> Result<TextEncoder, E>,
    ) -> Result<Self, E> {
        for input in self.body.inputs_mut() {
            let taken = std::mem::replace(input, FeatureEmbeddingConfig::new(vec![], 0).init(&Device::flex()));
            *input = taken.with_text_encoder(open()?, tokens);
        }
        Ok(self)
    }

    /// The parameters of the trainable text encoders (`None`: the model has none), the task
    /// branches' adapters included, for their own learning rate, weight decay and clipping.
    pub fn text_encoder_parameters(&self) -> Option<ParamGroup> {
        self.text_encoders().into_iter().map(ParamGroup::ids_from_module).reduce(|a, b| a.fuse(&b))
    }

    /// The trainable text encoders' parameters by depth below their top transformer layer
    /// ([`TextEncoder::depth_groups`]), every encoder's (input layers' and task branches'): one
    /// group a depth, for `model.text.layer_lr_decay`. Empty when the model has no encoder.
    pub fn text_encoder_depth_groups(&self) -> Vec<(ParamGroup, usize)> {
        let mut depths: std::collections::BTreeMap<usize, ParamGroup> = Default::default();
        for (group, depth) in self.text_encoders().iter().flat_map(TextEncoder::depth_groups) {
            let fused = match depths.remove(&depth) {
                Some(fused) => fused.fuse(&group),
                None => group,
            };
            depths.insert(depth, fused);
        }
        depths.into_iter().map(|(depth, group)| (group, depth)).collect()
    }

    /// Every trainable text encoder: the input layers' and the task branches'.
    fn text_encoders(&self) -> Vec<TextEncoder> {
        let mut body = self.body.clone();
        (body.inputs_mut().into_iter())
            .filter_map(|input| input.encoder.clone())
            .chain(self.task_text.iter().map(|b| b.encoder.clone()))
            .collect()
    }

    /// Gives main task `t` the branch `branches[t]` (adapters of its own in the text encoder,
    /// read out into its output: see [`TaskTextBranch`]); one branch a main task.
    ///
    /// # Panics
    /// When the number of branches is not the number of main tasks.
    pub fn with_task_text_branches(mut self, branches: Vec<TaskTextBranch>) -> Self {
        assert_eq!(branches.len(), self.body.inner().n_tasks(), "one text branch a main task");
        self.task_text = branches;
        self
    }

    /// The text-value columns of the first input layer's token fields: `(first column, width)`
    /// each, in the batch's text values.
    pub fn token_fields(&self) -> Vec<(usize, usize)> {
        let mut body = self.body.clone();
        let Some(input) = body.inputs_mut().into_iter().next() else { return vec![] };
        input.text_columns().filter(|f| f.tokens).map(|f| (f.columns.start, f.columns.len())).collect()
    }

    /// The trainable text encoder of the first input layer (`None`: the model has none); every
    /// input layer's encoder starts from the same pretrained model.
    pub fn text_encoder(&self) -> Option<TextEncoder> {
        let mut body = self.body.clone();
        body.inputs_mut().into_iter().find_map(|input| input.encoder.clone())
    }

    /// The tower inputs before any erasure, one tensor each ([`MultiTaskModel::tower_inputs`]'s
    /// order): what an eraser is fitted on.
    ///
    /// # Shapes
    /// - features: see [`FeatureBatch`]; each output `[B, width]`
    pub fn tower_inputs_unerased(&self, features: FeatureBatch) -> Vec<Tensor<2>> {
        let body = self.body.inner();
        body.tower_inputs(&body.forward_shared(features))
    }

    /// Replaces the erasers by `fits` (one a tower input, on `device`).
    ///
    /// # Panics
    /// When their number or widths differ from the model's erasers.
    pub fn set_erasers(&mut self, fits: &[crate::LeaceFit], device: &Device) {
        assert_eq!(fits.len(), self.erasers.len(), "one fit an eraser");
        for (eraser, fit) in self.erasers.iter_mut().zip(fits) {
            assert_eq!(eraser.eraser_t.dims(), [fit.width, fit.width], "the eraser's width");
            *eraser = ConceptEraser::from_fit(fit, device);
        }
    }

    /// Sets λ of every adversarial head's gradient reversal (a warm-up schedule changes it as
    /// training progresses).
    pub fn set_adversarial_weight(&mut self, lambda: f64) {
        for head in &mut self.adversaries {
            head.weight = lambda;
        }
    }
}

impl<C: MultiTaskModule> MultiTaskModel for MultiTaskNet<C> {
    fn output_bias(&self, task: usize) -> Option<ParamId> {
        (task < self.body.inner().n_tasks()).then(|| self.body.inner().output_bias(task)).flatten()
    }

    fn n_tasks(&self) -> usize {
        self.body.inner().n_tasks() + self.adversaries.len()
    }
    fn forward_shared(&self, features: FeatureBatch) -> SharedTensors {
        let erasers = self.erasers.iter().map(ConceptEraser::tensors).collect();
        if self.task_text.is_empty() {
            return SharedTensors { erasers, ..self.body.inner().forward_shared(features) };
        }
        let text = features.text.clone();
        SharedTensors { text, erasers, ..self.body.inner().forward_shared(features) }
    }
    fn forward_task(&self, task: usize, shared: &SharedTensors) -> TaskOutput {
        let main = self.body.inner().n_tasks();
        match task.checked_sub(main) {
            None => {
                let mut out = self.body.inner().forward_task(task, shared);
                if let (Some(branch), Some(text)) = (self.task_text.get(task), &shared.text) {
                    out.output = out.output + branch.forward(text);
                }
                out
            }
            Some(a) => self.adversaries[a].forward(self.representation(shared)),
        }
    }
    fn tower_inputs(&self, shared: &SharedTensors) -> Vec<Tensor<2>> {
        self.body.inner().tower_inputs(shared)
    }
    /// A task's own parameters; with task adapters, its readout too (the adapters follow the
    /// encoder's learning rate, [`Self::text_encoder_parameters`]).
    fn task_parameters(&self, task: usize) -> ParamGroup {
        let main = self.body.inner().n_tasks();
        match task.checked_sub(main) {
            None => match self.task_text.get(task) {
                Some(branch) => {
                    self.body.inner().task_parameters(task).fuse(&ParamGroup::ids_from_module(branch.readout.clone()))
                }
                None => self.body.inner().task_parameters(task),
            },
            Some(a) => ParamGroup::ids_from_module(self.adversaries[a].clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Architecture, ModelConfig};
    use burn::tensor::Int;
    use burn::tensor::{Distribution, TensorData};
    use mtrec_data::Schema;
    use mtrec_data::{CategoricalField, TaskKind, TaskSpec};

    fn schema(n_tasks: usize) -> Schema {
        Schema::new(
            vec![
                CategoricalField { name: "a".into(), vocab_size: 5 },
                CategoricalField { name: "b".into(), vocab_size: 3 },
            ],
            vec!["x".into(), "y".into(), "z".into()],
            (0..n_tasks).map(|t| TaskSpec::new(format!("t{t}"), TaskKind::Binary)).collect(),
        )
    }

    fn inputs(b: usize, device: &Device) -> (Tensor<2, Int>, Tensor<2>) {
        let ids: Vec<i32> = (0..b * 2).map(|i| (i % 3) as i32).collect();
        (Tensor::from_data(TensorData::new(ids, [b, 2]), device), Tensor::random([b, 3], Distribution::Default, device))
    }

    fn small(arch: Architecture) -> ModelConfig {
        ModelConfig {
            architecture: arch,
            n_experts: 4,
            n_task_experts: 2,
            n_shared_experts: 3,
            expert_hidden: vec![6],
            bottom_hidden: vec![8],
            tower_hidden: vec![4],
            ..Default::default()
        }
    }

    /// The gate width each task's branch reports, or `None` for ungated architectures.
    fn gate_width(arch: Architecture, n_tasks: usize) -> Option<usize> {
        match arch {
            Architecture::Mmoe | Architecture::Omoe => Some(4),
            Architecture::Ple => Some(5),
            Architecture::Adatt => Some(2 * n_tasks),
            Architecture::Stem => Some(2 * n_tasks + 3),
            Architecture::Home => Some(3 + 2 * 2),
            _ => None,
        }
    }

    #[test]
    fn output_shapes_for_each_architecture_and_task_count() {
        let device = Device::flex();
        for arch in Architecture::ALL {
            for n_tasks in [1, 2, 3] {
                let model = small(arch.clone()).init(&schema(n_tasks), &device);
                let (c, d) = inputs(7, &device);
                let outs = model.forward(FeatureBatch::new(Some(c), Some(d)));
                assert_eq!(outs.len(), n_tasks, "{arch:?}");
                for out in outs {
                    assert_eq!(out.output.dims(), [7, 1], "{arch:?}");
                    assert_eq!(out.gate.as_ref().map(|g| g.dims()[1]), gate_width(arch.clone(), n_tasks), "{arch:?}");
                    if let Some(g) = out.gate {
                        for row in g.sum_dim(1).into_data().try_into_vec::<f32>().unwrap() {
                            assert!((row - 1.0).abs() < 1e-5, "{arch:?}: gate row sums to {row}");
                        }
                    }
                }
            }
        }
    }

    /// Every architecture builds and forwards over a DCN-v2 or FM bottom; FM refuses a table with
    /// fewer than two fields to cross, naming the key.
    #[test]
    fn every_architecture_takes_every_bottom() {
        let device = Device::flex();
        for bottom in [crate::Bottom::DcnV2, crate::Bottom::Fm] {
            for arch in Architecture::ALL {
                let config = ModelConfig { bottom, cross_layers: 2, ..small(arch.clone()) };
                let model = config.init(&schema(2), &device);
                let (c, d) = inputs(5, &device);
                for out in model.forward(FeatureBatch::new(Some(c), Some(d))) {
                    assert_eq!(out.output.dims(), [5, 1], "{bottom:?} {arch:?}");
                }
            }
        }
        let mut one_field = schema(2);
        one_field.categorical.truncate(1);
        let config = ModelConfig { bottom: crate::Bottom::Fm, ..small(Architecture::Mmoe) };
        let e = config.init_with::<crate::NoCustom>(&one_field, None, &device).err().unwrap();
        assert!(e.contains("model.bottom") && e.contains("has 1"), "{e}");
    }

    /// Branches built on detached leaves give the same outputs as the attached forward, for every
    /// architecture, with an adversarial task behind them.
    #[test]
    fn task_branches_read_only_the_shared_tensors() {
        let device = Device::flex().autodiff();
        let mut schema = schema(3);
        schema.tasks[2].adversarial = true;
        for arch in Architecture::ALL {
            let model = small(arch.clone()).init(&schema, &device);
            assert_eq!(model.n_tasks(), 3);
            assert_eq!(model.adversaries.len(), 1);
            let (c, d) = inputs(4, &device);
            let shared = model.forward_shared(FeatureBatch::new(Some(c.clone()), Some(d.clone())));
            let leaves = shared.detached_leaves();
            let full = model.forward(FeatureBatch::new(Some(c), Some(d)));
            for (t, out) in full.iter().enumerate() {
                let cut = model.forward_task(t, &leaves).output.into_data().try_into_vec::<f32>().unwrap();
                assert_eq!(out.output.clone().into_data().try_into_vec::<f32>().unwrap(), cut, "{arch:?} task {t}");
            }
        }
    }

    /// Probed branches: one backward of `Σ_t w_t·L_t` leaves on task t's probes exactly the
    /// gradient that a backward of `w_t·L_t` alone leaves on detached leaves, for every
    /// architecture (with an adversarial task).
    #[test]
    fn probes_give_each_tasks_gradient_at_the_shared_tensors() {
        let device = Device::flex().autodiff();
        let mut schema = schema(3);
        schema.tasks[2].adversarial = true;
        let weights = [0.5, 2.0, 1.5];
        let values = |g: Option<Tensor<2>>, like: &Tensor<2>| {
            g.unwrap_or_else(|| like.zeros_like()).into_data().try_into_vec::<f32>().unwrap()
        };
        for arch in Architecture::ALL {
            let model = small(arch.clone()).init(&schema, &device);
            let (c, d) = inputs(4, &device);
            let shared = model.forward_shared(FeatureBatch::new(Some(c), Some(d)));
            let mut probes = Vec::new();
            let mut total: Option<Tensor<1>> = None;
            for (t, w) in weights.iter().enumerate() {
                let (probed, p) = shared.probed();
                let loss = model.forward_task(t, &probed).output.powi_scalar(2).sum().mul_scalar(*w);
                total = Some(match total {
                    Some(sum) => sum + loss,
                    None => loss,
                });
                probes.push(p);
            }
            let grads = total.unwrap().backward();
            let mut reached = 0;
            for (t, w) in weights.iter().enumerate() {
                let leaves = shared.detached_leaves();
                let alone = model.forward_task(t, &leaves).output.powi_scalar(2).sum().mul_scalar(*w).backward();
                for (j, &k) in shared.probe_points().iter().enumerate() {
                    let leaf = &leaves.tensors[k];
                    let expected = values(leaf.grad(&alone), leaf);
                    let got = values(probes[t][j].grad(&grads), leaf);
                    let scale = expected.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                    let diff = expected.iter().zip(&got).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                    assert!(diff <= 1e-5 * scale, "{arch:?} task {t} tensor {k}: {diff} (scale {scale})");
                    reached += usize::from(expected.iter().any(|v| *v != 0.0));
                }
            }
            assert!(reached >= 2, "{arch:?}: the tasks read the probed tensors");
        }
    }

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    /// `model.dropout` acts after every hidden activation: in training (an autodiff device) two
    /// forwards of the same batch differ in the shared part wherever it has hidden layers (experts,
    /// bottoms, columns) and in every task branch on the same shared tensors (towers, AITM's
    /// representation towers); in evaluation mode they are equal.
    #[test]
    fn dropout_acts_in_the_shared_part_and_every_branch() {
        let device = Device::flex().autodiff();
        for arch in Architecture::ALL {
            let cfg = ModelConfig { dropout: 0.5, ..small(arch.clone()) };
            let (c, d) = inputs(32, &device);
            // a tower whose ReLUs are all dead on this batch outputs its bias whatever dropout does:
            // take an initialisation where every branch's output varies over the batch
            let alive = |m: &MultiTaskNet| {
                let shared = m.forward_shared(FeatureBatch::new(Some(c.clone()), Some(d.clone())));
                (0..2).all(|t| {
                    let out = values(m.forward_task(t, &shared).output);
                    out.iter().any(|v| *v != out[0])
                })
            };
            let model = (0..10)
                .map(|_| cfg.init(&schema(2), &device))
                .find(alive)
                .expect("an initialisation with live branches");
            let a = model.forward_shared(FeatureBatch::new(Some(c.clone()), Some(d.clone())));
            let b = model.forward_shared(FeatureBatch::new(Some(c.clone()), Some(d.clone())));
            let shared_differs = a.tensors.iter().zip(&b.tensors).any(|(x, y)| values(x.clone()) != values(y.clone()));
            let hidden_in_shared_part = !matches!(arch, Architecture::Esmm | Architecture::Aitm);
            assert_eq!(shared_differs, hidden_in_shared_part, "{arch:?}: dropout in the shared part");
            for t in 0..2 {
                // a small tower with one live unit gives one of two outputs (unit dropped or kept,
                // p = ½ each): 9 forwards all alike has chance 2·2⁻⁹ (seen once in CI, STEM); any of
                // 32 differing leaves 2·2⁻³³
                let once = values(model.forward_task(t, &a).output);
                let others: Vec<Vec<f32>> = (0..32).map(|_| values(model.forward_task(t, &a).output)).collect();
                assert!(others.iter().any(|o| *o != once), "{arch:?} task {t}: no dropout in the branch");
            }
            let eval = model.valid();
            let (c, d) = inputs(32, &Device::flex());
            let x = eval.forward(FeatureBatch::new(Some(c.clone()), Some(d.clone())));
            let y = eval.forward(FeatureBatch::new(Some(c), Some(d)));
            assert_eq!(
                values(x[0].output.clone()),
                values(y[0].output.clone()),
                "{arch:?}: evaluation is deterministic"
            );
        }
    }

    /// The adversary reads what the towers read: MMoE's and PLE's per-task mixtures (not the raw
    /// experts or only the shared experts), for every architecture `representation` has the
    /// configured width, and each main tower applied to its tower input gives its task's output.
    #[test]
    fn adversaries_read_the_representation_the_towers_read() {
        let device = Device::flex();
        let mut schema = schema(3);
        schema.tasks[2].adversarial = true;
        for arch in Architecture::ALL {
            let cfg = small(arch.clone());
            let model = cfg.init(&schema, &device);
            let (c, d) = inputs(5, &device);
            let shared = model.forward_shared(FeatureBatch::new(Some(c), Some(d)));
            let representation = model.representation(&shared);
            let d_input = 2 * cfg.embedding_dim + 3;
            assert_eq!(representation.dims(), [5, cfg.tower_inputs_width(d_input, 2).unwrap()], "{arch:?}");
            let head = model.adversaries[0].tower.forward(representation);
            assert_eq!(values(model.forward_task(2, &shared).output), values(head), "{arch:?}");
            let inputs = model.tower_inputs(&shared);
            let towers = match &model.body {
                ArchitectureNet::Mmoe(m) => &m.towers,
                ArchitectureNet::Ple(m) => &m.towers,
                ArchitectureNet::Adatt(m) => &m.towers,
                ArchitectureNet::Stem(m) => &m.towers,
                ArchitectureNet::Home(m) => &m.towers,
                ArchitectureNet::CrossStitch(m) => &m.towers,
                ArchitectureNet::SharedBottom(m) => &m.towers,
                _ => continue,
            };
            for (t, tower) in towers.iter().enumerate() {
                let input = inputs[t.min(inputs.len() - 1)].clone();
                assert_eq!(values(tower.forward(input)), values(model.forward_task(t, &shared).output), "{arch:?} {t}");
            }
        }
    }

    #[test]
    fn adversarial_tasks_must_come_last_and_funnels_need_binary_tasks() {
        let mut s = schema(3);
        s.tasks[0].adversarial = true;
        assert!(ModelConfig::default().check_schema(&s).unwrap_err().contains("adversarial"));
        let mut s = schema(2);
        s.tasks[1].kind = TaskKind::Regression;
        let esmm = ModelConfig { architecture: Architecture::Esmm, ..Default::default() };
        assert!(esmm.check_schema(&s).unwrap_err().contains("binary"));
        assert!(ModelConfig::default().check_schema(&s).is_ok());
    }

    #[test]
    fn invalid_configs_name_their_key() {
        let bad = ModelConfig { n_experts: 0, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("model.n_experts"));
        let bad = ModelConfig { dropout: 1.5, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("model.dropout"));
    }
}
