//! A dense layer with its ReLU fused, `relu(x·W + b)`, as one operation with a hand-written
//! backward: the ReLU layers of the expert bank and of every MLP (towers, bottoms) when they have
//! no batch normalisation between the product and the activation.
//!
//! On the flex backend (f32) it is one GEMM: the output is first filled with the bias, the GEMM
//! accumulates `x·W` into it (no zero-filled output, no separate bias pass) and the ReLU runs over
//! it in place. Its backward masks the output gradient once (`dz = dy ⊙ [y > 0]`, with the bias
//! gradient summed in the same pass), then computes `dx = dz·Wᵀ` and `dW = xᵀ·dz` on two threads
//! at once. Plain burn does the same layer as five operations (matmul, broadcast add, ReLU; in the
//! backward ReLU mask, two matmuls, a sum) with an allocation each.
//!
//! Other backends (and other float types) run the same maths as plain backend operations, so the
//! fused path is a drop-in: [`dense_relu`] picks it on flex when [`fused_kernels`](crate::fused_kernels)
//! is on, and the plain burn layers otherwise.

use crate::{
    contiguous, f32_tensor, f32_values,
    simd::{ElementLoop, vectorized},
    strided_gemm::{View, affine, gemm_into},
    use_fused, whole,
};
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
    tensor::{Shape, Tensor, activation::relu},
};

/// `relu(x·W + b)` as one operation.
///
/// On flex with [`fused_kernels`](crate::fused_kernels) on, the fused kernel (module docs); otherwise plain burn
/// operations. Both give the same values and gradients.
///
/// # Shapes
/// - x: `[B, d_in]`, w: `[d_in, d_out]`, b: `[d_out]`
/// - output: `[B, d_out]`
pub fn dense_relu(x: Tensor<2>, w: Tensor<2>, b: Tensor<1>) -> Tensor<2> {
    if use_fused(&x.device()) && x.dtype() == DType::F32 {
        let out = <Dispatch as FusedDenseBackend>::dense_relu(x.into_dispatch(), w.into_dispatch(), b.into_dispatch());
        Tensor::from_dispatch(out)
    } else {
        plain_dense_relu(x, w, b)
    }
}

/// `relu(layer(x))` for a burn [`Linear`] layer (weight `[d_in, d_out]`): [`dense_relu`] when it
/// has a bias, plain burn otherwise.
///
/// # Shapes
/// - x: `[B, d_in]`; output: `[B, d_out]`
pub fn linear_relu(layer: &Linear, x: Tensor<2>) -> Tensor<2> {
    match &layer.bias {
        Some(bias) => dense_relu(x, layer.weight.val(), bias.val()),
        None => relu(layer.forward(x)),
    }
}

/// The same layer as plain burn operations.
pub fn plain_dense_relu(x: Tensor<2>, w: Tensor<2>, b: Tensor<1>) -> Tensor<2> {
    relu(x.matmul(w) + b.unsqueeze_dim::<2>(0))
}

/// The fused dense + ReLU layer as a backend extension (flex, and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait FusedDenseBackend: Backend {
    /// `relu(x·w + b)`: x `[B, d_in]`, w `[d_in, d_out]`, b `[d_out]` → `[B, d_out]`.
    fn dense_relu(x: FloatTensor<Self>, w: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Gradients `(dx, dw, db)` of the layer from its input, weight, output `y` and output
    /// gradient `dy`.
    fn dense_relu_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The layer as backend operations (non-f32 tensors on flex).
fn backend_dense_relu<B: Backend>(x: FloatTensor<B>, w: FloatTensor<B>, b: FloatTensor<B>) -> FloatTensor<B> {
    let n = b.shape()[0];
    let z = B::float_matmul(x, w);
    B::relu(B::float_add(z, B::float_reshape(b, Shape::new([1, n]))))
}

/// Its backward as backend operations.
fn backend_dense_relu_backward<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    y: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let dz = B::relu_backward(y, dy);
    let n = dz.shape()[1];
    let dx = B::float_matmul(dz.clone(), B::float_transpose(w));
    let dw = B::float_matmul(B::float_transpose(x), dz.clone());
    let db = B::float_reshape(B::float_sum_dim(dz, 0), Shape::new([n]));
    (dx, dw, db)
}

/// `dz = dz ⊙ [y > 0]` row by row, summing the rows into `db`.
struct ReluMaskRows<'a> {
    dz: &'a mut [f32],
    y: &'a [f32],
    db: &'a mut [f32],
}

impl ElementLoop for ReluMaskRows<'_> {
    #[inline(always)]
    fn run(self) {
        let n = self.db.len();
        for (dz_row, y_row) in self.dz.chunks_exact_mut(n).zip(self.y.chunks_exact(n)) {
            for ((g, &out), acc) in dz_row.iter_mut().zip(y_row).zip(self.db.iter_mut()) {
                *g = if out > 0.0 { *g } else { 0.0 };
                *acc += *g;
            }
        }
    }
}

/// `y = max(y, 0)`.
struct ReluInPlace<'a>(&'a mut [f32]);

impl ElementLoop for ReluInPlace<'_> {
    #[inline(always)]
    fn run(self) {
        self.0.iter_mut().for_each(|v| *v = v.max(0.0));
    }
}

pub(crate) fn is_f32_matrix(t: &FlexTensor) -> bool {
    t.dtype() == DType::F32 && t.layout().num_dims() == 2
}

impl FusedDenseBackend for Flex {
    fn dense_relu(x: FlexTensor, w: FlexTensor, b: FlexTensor) -> FlexTensor {
        if !(is_f32_matrix(&x) && is_f32_matrix(&w) && b.dtype() == DType::F32) {
            return backend_dense_relu::<Flex>(x, w, b);
        }
        let b = contiguous(b);
        let (mut y, shape) = affine(&x, &w, f32_values(&b));
        vectorized(ReluInPlace(&mut y));
        f32_tensor(y, shape)
    }

    fn dense_relu_backward(
        x: FlexTensor,
        w: FlexTensor,
        y: FlexTensor,
        dy: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        if !([&x, &w, &y, &dy].iter().all(|t| is_f32_matrix(t))) {
            return backend_dense_relu_backward::<Flex>(x, w, y, dy);
        }
        let y = contiguous(y);
        let (xv, wv) = (View::of(&x), View::of(&w));
        let (m, k, n) = (xv.rows, xv.cols, wv.cols);
        // dz = dy ⊙ [y > 0], written over dy (copied first only if another tensor shares it);
        // db = Σ_rows dz.
        let mut dz = whole(dy);
        let mut db = vec![0.0f32; n];
        {
            let yv = f32_values(&y);
            let dzv = dz.storage_mut::<f32>();
            vectorized(ReluMaskRows { dz: dzv, y: yv, db: &mut db });
        }
        let db = f32_tensor(db, [n]);
        let (mut dx, mut dw) = (vec![0.0; m * k], vec![0.0; k * n]);
        let dzv = View::of(&dz);
        // dx = dz·Wᵀ and dW = xᵀ·dz are independent: one per core.
        rayon::join(
            || gemm_into(&mut dx, k, &dzv, &View::of(&w).t(), false, gemm::Parallelism::None),
            || gemm_into(&mut dw, n, &View::of(&x).t(), &dzv, false, gemm::Parallelism::None),
        );
        (f32_tensor(dx, [m, k]), f32_tensor(dw, [k, n]), db)
    }
}

impl<B: FusedDenseBackend, C: CheckpointStrategy> FusedDenseBackend for Autodiff<B, C> {
    fn dense_relu(x: FloatTensor<Self>, w: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct DenseRelu;

        impl<B: FusedDenseBackend> Backward<B, 3> for DenseRelu {
            type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let (x, w, y) = ops.state;
                let dy = grads.consume::<B>(&ops.node);
                let (dx, dw, db) = B::dense_relu_backward(x, w, y, dy);
                let [node_x, node_w, node_b] = ops.parents;
                for (node, grad) in [(node_x, dx), (node_w, dw), (node_b, db)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        let nodes = [x.node(), w.node(), b.node()];
        let (x, w, b) = (x.into_primitive(), w.into_primitive(), b.into_primitive());
        match DenseRelu.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::dense_relu(x.clone(), w.clone(), b);
                prep.finish((x, w, y.clone()), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::dense_relu(x, w, b)),
        }
    }

    fn dense_relu_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // Gradients themselves are not differentiated (no double backward in burn 0.22).
        let (dx, dw, db) =
            B::dense_relu_backward(x.into_primitive(), w.into_primitive(), y.into_primitive(), dy.into_primitive());
        (Self::from_inner(dx), Self::from_inner(dw), Self::from_inner(db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-5 * scale, "{what}[{i}]: fused {x} vs plain {y} (scale {scale})");
        }
    }

    /// Values and gradients of x, W and b: fused kernel vs plain burn, on flex with autodiff;
    /// shapes large enough for the multi-threaded GEMM and a transposed (strided) input.
    #[test]
    fn fused_dense_relu_equals_plain_burn() {
        let device = Device::flex().autodiff();
        for &(m, k, n, transposed) in &[(7, 5, 3, false), (1024, 139, 144, false), (64, 33, 17, true)] {
            let x0 = if transposed {
                Tensor::<2>::random([k, m], Distribution::Normal(0.0, 1.0), &device).transpose()
            } else {
                Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &device)
            };
            let w0 = Tensor::<2>::random([k, n], Distribution::Normal(0.0, 0.3), &device);
            let b0 = Tensor::<1>::random([n], Distribution::Normal(0.0, 0.3), &device);
            let upstream = Tensor::<2>::random([m, n], Distribution::Normal(0.0, 1.0), &device);
            let run = |fused: bool| {
                let (x, w, b) = (x0.clone().require_grad(), w0.clone().require_grad(), b0.clone().require_grad());
                let y = if fused {
                    let out = <Dispatch as FusedDenseBackend>::dense_relu(
                        x.clone().into_dispatch(),
                        w.clone().into_dispatch(),
                        b.clone().into_dispatch(),
                    );
                    Tensor::<2>::from_dispatch(out)
                } else {
                    plain_dense_relu(x.clone(), w.clone(), b.clone())
                };
                let grads = (y.clone() * upstream.clone()).sum().backward();
                (
                    to_vec(y),
                    to_vec(x.grad(&grads).unwrap()),
                    to_vec(w.grad(&grads).unwrap()),
                    to_vec(b.grad(&grads).unwrap()),
                )
            };
            let (fused, plain) = (run(true), run(false));
            assert!(plain.0.contains(&0.0) && plain.0.iter().any(|&v| v > 0.0), "ReLU must cut some units");
            let what = format!("[{m}×{k}]·[{k}×{n}]");
            assert_close(&fused.0, &plain.0, &format!("{what} output"));
            assert_close(&fused.1, &plain.1, &format!("{what} dx"));
            assert_close(&fused.2, &plain.2, &format!("{what} dW"));
            assert_close(&fused.3, &plain.3, &format!("{what} db"));
        }
    }

    /// The fused kernels run on flex, with and without autodiff, and nowhere else.
    #[test]
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)] // ndarray: the non-flex CPU backend
    fn fused_kernels_run_on_flex_only() {
        assert!(use_fused(&Device::flex()) && use_fused(&Device::flex().autodiff()));
        assert!(!use_fused(&Device::ndarray()) && !use_fused(&Device::ndarray().autodiff()));
    }

    /// On non-flex devices `dense_relu` is the plain layer.
    #[test]
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)] // ndarray: the non-flex CPU backend
    fn dense_relu_falls_back_off_flex() {
        let device = Device::ndarray();
        let x = Tensor::<2>::from_floats([[1.0, -2.0], [0.5, 3.0]], &device);
        let w = Tensor::<2>::from_floats([[1.0, -1.0, 0.5], [0.25, 2.0, -1.0]], &device);
        let b = Tensor::<1>::from_floats([0.1, 0.2, -0.3], &device);
        // by hand: row 0 = [1−0.5+0.1, −1−4+0.2, 0.5+2−0.3] → relu; row 1 = [0.5+0.75+0.1, −0.5+6+0.2, 0.25−3−0.3]
        let expected = [0.6, 0.0, 2.2, 1.35, 5.7, 0.0];
        assert_close(&to_vec(dense_relu(x, w, b)), &expected, "ndarray");
    }
}
