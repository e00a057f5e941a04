//! A dense layer `x·W + b` as one operation with a hand-written backward: the projections of a
//! trained text encoder (query, key, value, attention output, the two FFN layers), the bulk of
//! a fine-tuning step's arithmetic.
//!
//! burn's `Linear` under autodiff is a matmul and a broadcast add, and flex's matmul writes into a
//! zero-filled buffer that it then copies to realign (a memset and a memmove of every output, 11 %
//! of a fine-tuning step in perf). Here the forward fills the output with the bias and one GEMM
//! accumulates `x·W` into it; the backward sums `db` over the rows in one pass and runs
//! `dx = dy·Wᵀ` and `dW = xᵀ·dy` on two threads at once, straight into their own buffers — and
//! only the ones that are needed: a frozen weight (the encoder's frozen layers, LoRA's base is
//! not one: its effective weight is tracked) keeps no input and computes no `dW`. Other backends,
//! other float types and the switch off run burn's `Linear::forward`.

use burn::{
    backend::{
        AutodiffBackend, Backend, DType, Dispatch, Flex, TensorMetadata,
        autodiff::{
            Autodiff,
            checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
            grads::Gradients,
            ops::{Backward, Ops, OpsKind},
        },
        backend_extension,
        flex::FlexTensor,
        tensor::FloatTensor,
    },
    nn::Linear,
    tensor::{Shape, Tensor},
};

use crate::{
    contiguous,
    dense_relu::is_f32_matrix,
    f32_tensor, f32_values,
    simd::{ElementLoop, vectorized},
    strided_gemm::{View, affine, gemm_into, parallelism},
    use_fused,
};

/// `layer(x)` for a burn [`Linear`] layer (weight `[d_in, d_out]`) with a bias: the fused
/// kernel on flex (module docs), `Linear::forward` otherwise.
///
/// # Shapes
/// - x: `[B, d_in]`; output: `[B, d_out]`
pub fn linear(layer: &Linear, x: Tensor<2>) -> Tensor<2> {
    match &layer.bias {
        Some(bias) if use_fused(&x.device()) && x.dtype() == DType::F32 => {
            let out = <Dispatch as FusedLinearBackend>::dense(
                x.into_dispatch(),
                layer.weight.val().into_dispatch(),
                bias.val().into_dispatch(),
            );
            Tensor::from_dispatch(out)
        }
        _ => layer.forward(x),
    }
}

/// The fused dense layer as a backend extension (flex, and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait FusedLinearBackend: Backend {
    /// `x·w + b`: x `[B, d_in]`, w `[d_in, d_out]`, b `[d_out]` → `[B, d_out]`.
    fn dense(x: FloatTensor<Self>, w: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Gradients `(dx, dw, db)` from the input `x`, the weight `w` and the output gradient `dy`.
    fn dense_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Gradients `(dx, db)` when the weight takes none (frozen).
    fn dense_backward_frozen_weight(
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Gradients `(dw, db)` when the input takes none (a constant).
    fn dense_backward_constant_input(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// The layer as backend operations (non-f32 tensors on flex).
fn backend_dense<B: Backend>(x: FloatTensor<B>, w: FloatTensor<B>, b: FloatTensor<B>) -> FloatTensor<B> {
    let n = b.shape()[0];
    B::float_add(B::float_matmul(x, w), B::float_reshape(b, Shape::new([1, n])))
}

/// Its backward as backend operations.
fn backend_dense_backward<B: Backend>(
    x: Option<FloatTensor<B>>,
    w: Option<FloatTensor<B>>,
    dy: FloatTensor<B>,
) -> (Option<FloatTensor<B>>, Option<FloatTensor<B>>, FloatTensor<B>) {
    let n = dy.shape()[1];
    let dx = w.map(|w| B::float_matmul(dy.clone(), B::float_transpose(w)));
    let dw = x.map(|x| B::float_matmul(B::float_transpose(x), dy.clone()));
    let db = B::float_reshape(B::float_sum_dim(dy, 0), Shape::new([n]));
    (dx, dw, db)
}

/// `db = Σ_rows dy`, in a fixed order.
struct ColumnSums<'a> {
    dy: &'a [f32],
    db: &'a mut [f32],
}

impl ElementLoop for ColumnSums<'_> {
    #[inline(always)]
    fn run(self) {
        let n = self.db.len();
        for row in self.dy.chunks_exact(n) {
            self.db.iter_mut().zip(row).for_each(|(acc, &g)| *acc += g);
        }
    }
}

impl FusedLinearBackend for Flex {
    fn dense(x: FlexTensor, w: FlexTensor, b: FlexTensor) -> FlexTensor {
        if !(is_f32_matrix(&x) && is_f32_matrix(&w) && b.dtype() == DType::F32) {
            return backend_dense::<Flex>(x, w, b);
        }
        let b = contiguous(b);
        let (y, shape) = affine(&x, &w, f32_values(&b));
        f32_tensor(y, shape)
    }

    fn dense_backward(x: FlexTensor, w: FlexTensor, dy: FlexTensor) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (dx, dw, db) = flex_dense_backward(Some(x), Some(w), dy);
        (dx.expect("asked for"), dw.expect("asked for"), db)
    }

    fn dense_backward_frozen_weight(w: FlexTensor, dy: FlexTensor) -> (FlexTensor, FlexTensor) {
        let (dx, _, db) = flex_dense_backward(None, Some(w), dy);
        (dx.expect("asked for"), db)
    }

    fn dense_backward_constant_input(x: FlexTensor, dy: FlexTensor) -> (FlexTensor, FlexTensor) {
        let (_, dw, db) = flex_dense_backward(Some(x), None, dy);
        (dw.expect("asked for"), db)
    }
}

/// The backward on flex: `dx` when the weight `w` is given, `dW` when the input `x` is, and `db`.
fn flex_dense_backward(
    x: Option<FlexTensor>,
    w: Option<FlexTensor>,
    dy: FlexTensor,
) -> (Option<FlexTensor>, Option<FlexTensor>, FlexTensor) {
    if !(is_f32_matrix(&dy) && x.iter().chain(&w).all(is_f32_matrix)) {
        return backend_dense_backward::<Flex>(x, w, dy);
    }
    let dy = contiguous(dy);
    let (m, n) = (dy.layout().shape()[0], dy.layout().shape()[1]);
    let mut db = vec![0.0f32; n];
    vectorized(ColumnSums { dy: f32_values(&dy), db: &mut db });
    let dyv = View::of(&dy);
    let input_grad = |w: &FlexTensor, threads| {
        let k = w.layout().shape()[0];
        let mut dx = vec![0.0; m * k];
        gemm_into(&mut dx, k, &dyv, &View::of(w).t(), false, threads);
        f32_tensor(dx, [m, k])
    };
    let weight_grad = |x: &FlexTensor, threads| {
        let k = x.layout().shape()[1];
        let mut dw = vec![0.0; k * n];
        gemm_into(&mut dw, n, &View::of(x).t(), &dyv, false, threads);
        f32_tensor(dw, [k, n])
    };
    let (dx, dw) = match (&w, &x) {
        // independent products: one per core
        (Some(w), Some(x)) => {
            let (dx, dw) =
                rayon::join(|| input_grad(w, gemm::Parallelism::None), || weight_grad(x, gemm::Parallelism::None));
            (Some(dx), Some(dw))
        }
        (Some(w), None) => (Some(input_grad(w, parallelism(m, n, w.layout().shape()[0]))), None),
        (None, Some(x)) => (None, Some(weight_grad(x, parallelism(m, n, x.layout().shape()[1])))),
        (None, None) => (None, None),
    };
    (dx, dw, f32_tensor(db, [n]))
}

impl<B: FusedLinearBackend, C: CheckpointStrategy> FusedLinearBackend for Autodiff<B, C> {
    fn dense(x: FloatTensor<Self>, w: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Dense;

        impl<B: FusedLinearBackend> Backward<B, 3> for Dense {
            /// The input (kept when the weight trains) and the weight (kept when the input takes
            /// a gradient).
            type State = (Option<FloatTensor<B>>, Option<FloatTensor<B>>);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let dy = grads.consume::<B>(&ops.node);
                let (dx, dw, db) = match ops.state {
                    (Some(x), Some(w)) => {
                        let (dx, dw, db) = B::dense_backward(x, w, dy);
                        (Some(dx), Some(dw), db)
                    }
                    (None, Some(w)) => {
                        let (dx, db) = B::dense_backward_frozen_weight(w, dy);
                        (Some(dx), None, db)
                    }
                    (Some(x), None) => {
                        let (dw, db) = B::dense_backward_constant_input(x, dy);
                        (None, Some(dw), db)
                    }
                    (None, None) => {
                        let n = dy.shape()[1];
                        (None, None, B::float_reshape(B::float_sum_dim(dy, 0), Shape::new([n])))
                    }
                };
                let [node_x, node_w, node_b] = ops.parents;
                for (node, grad) in [(node_x, dx), (node_w, dw), (node_b, Some(db))] {
                    if let (Some(node), Some(grad)) = (node, grad) {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        let (needs_dx, needs_dw) = (x.is_tracked(), w.is_tracked());
        let nodes = [x.node(), w.node(), b.node()];
        let (x, w, b) = (x.into_primitive(), w.into_primitive(), b.into_primitive());
        match Dense.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let state = (needs_dw.then(|| x.clone()), needs_dx.then(|| w.clone()));
                prep.finish(state, B::dense(x, w, b))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::dense(x, w, b)),
        }
    }

    fn dense_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // gradients are not differentiated (no double backward in burn 0.22)
        let (dx, dw, db) = B::dense_backward(x.into_primitive(), w.into_primitive(), dy.into_primitive());
        (Self::from_inner(dx), Self::from_inner(dw), Self::from_inner(db))
    }

    fn dense_backward_frozen_weight(
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (dx, db) = B::dense_backward_frozen_weight(w.into_primitive(), dy.into_primitive());
        (Self::from_inner(dx), Self::from_inner(db))
    }

    fn dense_backward_constant_input(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (dw, db) = B::dense_backward_constant_input(x.into_primitive(), dy.into_primitive());
        (Self::from_inner(dw), Self::from_inner(db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::{
        module::Param,
        nn::LinearConfig,
        tensor::{Device, Distribution},
    };

    fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "{what}: worst {worst}");
    }

    /// Values and the gradients of input, weight and bias equal burn's `Linear` on flex with
    /// autodiff, with a transposed (strided) input too, at a size whose GEMMs run in parallel.
    #[test]
    fn fused_linear_equals_burns_linear() {
        let device = Device::flex().autodiff();
        let layer = LinearConfig::new(96, 200).init(&device);
        for (rows, strided) in [(5, false), (300, false), (300, true)] {
            let x = Tensor::<2>::random([rows, 96], Distribution::Normal(0.0, 1.0), &device);
            let upstream = Tensor::<2>::random([rows, 200], Distribution::Normal(0.0, 1.0), &device);
            let run = |fused: bool| {
                let x = x.clone().require_grad();
                let xin = if strided { x.clone().transpose().transpose() } else { x.clone() };
                let y = if fused { linear(&layer, xin) } else { layer.forward(xin) };
                let grads = (y.clone() * upstream.clone()).sum().backward();
                let bias = layer.bias.as_ref().unwrap();
                [y, x.grad(&grads).unwrap(), layer.weight.grad(&grads).unwrap()]
                    .map(to_vec)
                    .into_iter()
                    .chain([to_vec(bias.grad(&grads).unwrap())])
                    .collect::<Vec<_>>()
            };
            let (fused, plain) = (run(true), run(false));
            for (what, (a, b)) in ["y", "dx", "dW", "db"].iter().zip(fused.iter().zip(&plain)) {
                assert_close(a, b, &format!("{what}, {rows} rows, strided {strided}"));
            }
        }
    }

    /// A frozen weight gets no gradient and the input's is still right; a constant input (no
    /// gradient) leaves the weight's right.
    #[test]
    fn only_the_gradients_that_are_needed() {
        let device = Device::flex().autodiff();
        let layer = LinearConfig::new(7, 3).init(&device);
        let frozen = Linear {
            weight: Param::from_tensor(layer.weight.val().detach()).set_require_grad(false),
            bias: layer.bias.as_ref().map(|b| Param::from_tensor(b.val().detach()).set_require_grad(false)),
        };
        let x = Tensor::<2>::random([4, 7], Distribution::Default, &device);
        let want = {
            let xg = x.clone().require_grad();
            let grads = layer.forward(xg.clone()).sum().backward();
            (to_vec(xg.grad(&grads).unwrap()), to_vec(layer.weight.grad(&grads).unwrap()))
        };
        let xg = x.clone().require_grad();
        let grads = linear(&frozen, xg.clone()).sum().backward();
        assert!(frozen.weight.grad(&grads).is_none(), "a frozen weight");
        assert_close(&to_vec(xg.grad(&grads).unwrap()), &want.0, "dx with the weight frozen");
        let grads = linear(&layer, x).sum().backward();
        assert_close(&to_vec(layer.weight.grad(&grads).unwrap()), &want.1, "dW of a constant input");
    }
}
