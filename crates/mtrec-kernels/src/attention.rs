//! Multi-head self-attention of a trained encoder, `softmax(QKᵀ/√d + key bias)·V` per head, as
//! one operation with a hand-written backward on flex.
//!
//! The projections give `Q`, `K`, `V` as `[B·L, H]` matrices, the heads side by side in their
//! columns. Written with burn's tensors, attention splits them into `[B, heads, L, d]` (a strided
//! view that each batched matmul copies first), multiplies (flex's matmul writes a zeroed buffer and
//! copies it to realign), and merges the heads back (another copy); under autodiff each of these
//! has its own backward, copying again. Here every product reads a head's block of `Q`, `K` or `V`
//! in place through its strides and writes straight into its output: per text, per head,
//! `S = QₕKₕᵀ`, the weights `P` in place over `S` (the rows of [`crate::masked_softmax`]), and
//! `P·Vₕ` into the head's columns of the `[B·L, H]` output. `P` is kept for the backward:
//! `dVₕ = Pᵀ·dOₕ`, `dP = dOₕ·Vₕᵀ`, `dS = P ⊙ (dP − rowsum(dP ⊙ P))/√d`, `dQₕ = dS·Kₕ`,
//! `dKₕ = dSᵀ·Qₕ`. Texts are split over rayon's threads. A key with bias −∞ (padding) gets weight
//! 0; a text whose keys are all masked gets a zero output (burn's fallback attention gives the same).
//! Other backends, other float types and the switch off run [`plain_masked_attention`].

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
    tensor::{Shape, Tensor},
};
use rayon::prelude::*;

use crate::{
    contiguous,
    dense_relu::is_f32_matrix,
    f32_tensor, f32_values,
    masked_softmax::{
        SoftmaxBackwardRows, SoftmaxRows, backend_masked_softmax, backend_masked_softmax_backward, plain_masked_softmax,
    },
    simd::vectorized,
    strided_gemm::{View, gemm_into, gemm_into_rows},
    use_fused,
};

/// Self-attention over the tokens of `B` texts of `L` tokens each: per head `j` (columns
/// `j·d..(j+1)·d`, `d = H / heads`), `softmax(QⱼKⱼᵀ/√d + key_bias[b])·Vⱼ`, the bias of text `b`
/// added to every query's scores (0 for a key that counts, −∞ for padding).
///
/// # Shapes
/// - q, k, v: `[B·L, H]`, text by text; key_bias: `[B, L]`
/// - output: `[B·L, H]`, the heads' outputs side by side
pub fn masked_attention(q: Tensor<2>, k: Tensor<2>, v: Tensor<2>, key_bias: Tensor<2>, heads: usize) -> Tensor<2> {
    let [_, h] = q.dims();
    assert!(heads > 0 && h % heads == 0, "masked_attention: {h} columns do not split into {heads} heads");
    let fused = use_fused(&q.device()) && [&q, &k, &v, &key_bias].iter().all(|t| t.dtype() == DType::F32);
    if fused {
        let out = <Dispatch as MaskedAttentionBackend>::masked_attention(
            q.into_dispatch(),
            k.into_dispatch(),
            v.into_dispatch(),
            key_bias.into_dispatch(),
            heads,
        );
        Tensor::from_dispatch(out)
    } else {
        plain_masked_attention(q, k, v, key_bias, heads)
    }
}

/// The same as burn operations: split the heads, `QKᵀ`, [`plain_masked_softmax`], `·V`, merge the
/// heads (a text whose keys are all masked is NaN here, as `softmax` of −∞ everywhere is).
pub fn plain_masked_attention(
    q: Tensor<2>,
    k: Tensor<2>,
    v: Tensor<2>,
    key_bias: Tensor<2>,
    heads: usize,
) -> Tensor<2> {
    let [rows, h] = q.dims();
    let [b, l] = key_bias.dims();
    let d = h / heads;
    let split = |t: Tensor<2>| t.reshape([b, l, heads, d]).swap_dims(1, 2);
    let weights = plain_masked_softmax(split(q).matmul(split(k).swap_dims(2, 3)), key_bias, scale(d));
    weights.matmul(split(v)).swap_dims(1, 2).reshape([rows, h])
}

/// `1/√d`.
fn scale(d: usize) -> f64 {
    1.0 / (d as f64).sqrt()
}

/// The fused attention as a backend extension (flex, and autodiff over it).
#[backend_extension(Flex, Autodiff)]
pub trait MaskedAttentionBackend: Backend {
    /// The attention output `[B·L, H]` of `q`, `k`, `v` `[B·L, H]` with `bias` `[B, L]`.
    fn masked_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self>;

    /// The output and the weights `P` `[B·heads·L, L]` (text by text, head by head, query by
    /// query) that the backward needs.
    fn masked_attention_with_weights(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Gradients `(dq, dk, dv)` from the inputs, the weights `p` and the output's gradient `dout`.
    fn masked_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        p: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        heads: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The forward as plain backend operations (any float type), with the weights.
fn backend_masked_attention<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    bias: FloatTensor<B>,
    heads: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (rows, h) = (q.shape()[0], q.shape()[1]);
    let (b, l) = (bias.shape()[0], bias.shape()[1]);
    let d = h / heads;
    let split = |t: FloatTensor<B>| B::float_swap_dims(B::float_reshape(t, Shape::new([b, l, heads, d])), 1, 2);
    let scores = B::float_matmul(split(q), B::float_swap_dims(split(k), 2, 3));
    let p = backend_masked_softmax::<B>(B::float_reshape(scores, Shape::new([b * heads * l, l])), bias, scale(d));
    let out = B::float_matmul(B::float_reshape(p.clone(), Shape::new([b, heads, l, l])), split(v));
    (B::float_reshape(B::float_swap_dims(out, 1, 2), Shape::new([rows, h])), p)
}

/// The backward as plain backend operations.
fn backend_masked_attention_backward<B: Backend>(
    [q, k, v, p, dout]: [FloatTensor<B>; 5],
    heads: usize,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let (rows, h) = (q.shape()[0], q.shape()[1]);
    let l = p.shape()[1];
    let (b, d) = (rows / l, h / heads);
    let split = |t: FloatTensor<B>| B::float_swap_dims(B::float_reshape(t, Shape::new([b, l, heads, d])), 1, 2);
    let merge = |t: FloatTensor<B>| B::float_reshape(B::float_swap_dims(t, 1, 2), Shape::new([rows, h]));
    let squares = |t: FloatTensor<B>| B::float_reshape(t, Shape::new([b, heads, l, l]));
    let rows_of = |t: FloatTensor<B>| B::float_reshape(t, Shape::new([b * heads * l, l]));
    let dout = split(dout);
    let dv = B::float_matmul(B::float_swap_dims(squares(p.clone()), 2, 3), dout.clone());
    let dp = B::float_matmul(dout, B::float_swap_dims(split(v), 2, 3));
    let ds = squares(backend_masked_softmax_backward::<B>(p, rows_of(dp), scale(d)));
    let dq = B::float_matmul(ds.clone(), split(k));
    let dk = B::float_matmul(B::float_swap_dims(ds, 2, 3), split(q));
    (merge(dq), merge(dk), merge(dv))
}

/// The forward on flex; the weights are kept (and returned) when `keep_weights`, else each text's
/// heads reuse one `[L, L]` buffer (inference: no `[B·heads·L, L]` allocation).
fn flex_attention(
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    bias: FlexTensor,
    heads: usize,
    keep_weights: bool,
) -> (FlexTensor, Option<FlexTensor>) {
    if ![&q, &k, &v, &bias].into_iter().all(is_f32_matrix) {
        let (out, p) = backend_masked_attention::<Flex>(q, k, v, bias, heads);
        return (out, keep_weights.then_some(p));
    }
    let [q, k, v, bias] = [q, k, v, bias].map(contiguous);
    let (texts, len) = (bias.layout().shape()[0], bias.layout().shape()[1]);
    let width = q.layout().shape()[1];
    let head = width / heads;
    let (qv, kv, vv, bv) = (f32_values(&q), f32_values(&k), f32_values(&v), f32_values(&bias));
    let scale = scale(head) as f32;
    let square = len * len;
    // text `t`'s output rows, from its heads' weights: `weights` holds every head's (kept) or one
    let attend = |t: usize, out: &mut [f32], weights: &mut [f32]| {
        let first = t * len * width;
        let bias = &bv[t * len..][..len];
        for j in 0..heads {
            let s = &mut weights[if keep_weights { j * square } else { 0 }..][..square];
            let block = |data| View::block(data, first + j * head, len, head, width);
            gemm_into(s, len, &block(qv), &block(kv).t(), false, gemm::Parallelism::None);
            vectorized(SoftmaxRows { rows: s, bias, first: 0, rows_per_batch: len.max(1), k: len, scale });
            let weights = View::block(s, 0, len, len, len);
            gemm_into_rows(&mut out[j * head..], width, &weights, &block(vv), false, gemm::Parallelism::None);
        }
    };
    let mut out = vec![0.0f32; texts * len * width];
    let text_rows = (len * width).max(1);
    let p = if keep_weights {
        let mut p = vec![0.0f32; texts * heads * square];
        (out.par_chunks_mut(text_rows).zip(p.par_chunks_mut((heads * square).max(1))))
            .enumerate()
            .for_each(|(t, (out, p))| attend(t, out, p));
        Some(f32_tensor(p, [texts * heads * len, len]))
    } else {
        (out.par_chunks_mut(text_rows).enumerate())
            .for_each_init(|| vec![0.0f32; square], |scratch, (t, out)| attend(t, out, scratch));
        None
    };
    (f32_tensor(out, [texts * len, width]), p)
}

impl MaskedAttentionBackend for Flex {
    fn masked_attention(q: FlexTensor, k: FlexTensor, v: FlexTensor, bias: FlexTensor, heads: usize) -> FlexTensor {
        flex_attention(q, k, v, bias, heads, false).0
    }

    fn masked_attention_with_weights(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        bias: FlexTensor,
        heads: usize,
    ) -> (FlexTensor, FlexTensor) {
        let (out, p) = flex_attention(q, k, v, bias, heads, true);
        (out, p.expect("kept"))
    }

    fn masked_attention_backward(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        p: FlexTensor,
        dout: FlexTensor,
        heads: usize,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        if ![&q, &k, &v, &p, &dout].into_iter().all(is_f32_matrix) {
            return backend_masked_attention_backward::<Flex>([q, k, v, p, dout], heads);
        }
        let [q, k, v, p, dout] = [q, k, v, p, dout].map(contiguous);
        let (rows, width) = (q.layout().shape()[0], q.layout().shape()[1]);
        let len = p.layout().shape()[1];
        let head = width / heads;
        let (qv, kv, vv, pv, dov) = (f32_values(&q), f32_values(&k), f32_values(&v), f32_values(&p), f32_values(&dout));
        let scale = scale(head) as f32;
        let none = gemm::Parallelism::None;
        let (mut dq, mut dk, mut dv) =
            (vec![0.0f32; rows * width], vec![0.0f32; rows * width], vec![0.0f32; rows * width]);
        let text_rows = (len * width).max(1);
        (dq.par_chunks_mut(text_rows).zip(dk.par_chunks_mut(text_rows)).zip(dv.par_chunks_mut(text_rows)))
            .enumerate()
            .for_each_init(
                || vec![0.0f32; len * len],
                |ds, (t, ((dq, dk), dv))| {
                    let first = t * len * width;
                    for j in 0..heads {
                        let block = |data| View::block(data, first + j * head, len, head, width);
                        let pj = &pv[(t * heads + j) * len * len..][..len * len];
                        let weights = View::block(pj, 0, len, len, len);
                        // dVⱼ = Pᵀ·dOⱼ, then dP = dOⱼ·Vⱼᵀ and dS from it in place
                        gemm_into_rows(&mut dv[j * head..], width, &weights.t(), &block(dov), false, none);
                        gemm_into(ds, len, &block(dov), &block(vv).t(), false, none);
                        vectorized(SoftmaxBackwardRows { p: pj, dp: ds, k: len, scale });
                        let dscores = View::block(ds, 0, len, len, len);
                        gemm_into_rows(&mut dq[j * head..], width, &dscores, &block(kv), false, none);
                        gemm_into_rows(&mut dk[j * head..], width, &dscores.t(), &block(qv), false, none);
                    }
                },
            );
        let tensor = |g| f32_tensor(g, [rows, width]);
        (tensor(dq), tensor(dk), tensor(dv))
    }
}

impl<B: MaskedAttentionBackend, C: CheckpointStrategy> MaskedAttentionBackend for Autodiff<B, C> {
    fn masked_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct MaskedAttention;

        impl<B: MaskedAttentionBackend> Backward<B, 3> for MaskedAttention {
            /// `q`, `k`, `v`, the weights, the number of heads.
            type State = ([FloatTensor<B>; 4], usize);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let ([q, k, v, p], heads) = ops.state;
                let dout = grads.consume::<B>(&ops.node);
                let (dq, dk, dv) = B::masked_attention_backward(q, k, v, p, dout, heads);
                for (node, grad) in ops.parents.into_iter().zip([dq, dk, dv]) {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        // the bias is a constant of the batch (its padding): no gradient flows to it
        let nodes = [q.node(), k.node(), v.node()];
        let [q, k, v, bias] = [q, k, v, bias].map(|t| t.into_primitive());
        match MaskedAttention.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, p) = B::masked_attention_with_weights(q.clone(), k.clone(), v.clone(), bias, heads);
                prep.finish(([q, k, v, p], heads), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::masked_attention(q, k, v, bias, heads)),
        }
    }

    fn masked_attention_with_weights(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // values only (what the backward of the tracked operation above reads)
        let [q, k, v, bias] = [q, k, v, bias].map(|t| t.into_primitive());
        let (out, p) = B::masked_attention_with_weights(q, k, v, bias, heads);
        (Self::from_inner(out), Self::from_inner(p))
    }

    fn masked_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        p: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        heads: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // gradients are not differentiated (no double backward in burn 0.22)
        let [q, k, v, p, dout] = [q, k, v, p, dout].map(|t| t.into_primitive());
        let (dq, dk, dv) = B::masked_attention_backward(q, k, v, p, dout, heads);
        (Self::from_inner(dq), Self::from_inner(dk), Self::from_inner(dv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    fn key_bias(lengths: &[usize], len: usize, device: &Device) -> Tensor<2> {
        let bias: Vec<f32> = (lengths.iter())
            .flat_map(|&n| (0..len).map(move |j| if j < n { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        Tensor::<1>::from_floats(bias.as_slice(), device).reshape([lengths.len(), len])
    }

    /// The output and the gradients of `q`, `k` and `v` equal the plain operations' (burn's
    /// matmuls and softmax) on flex with autodiff: 3 texts with different padding, 4 heads of 5
    /// columns, texts of 37 tokens (a row width that is no multiple of 16) and of 1.
    #[test]
    fn fused_attention_equals_the_plain_operations_forward_and_backward() {
        let device = Device::flex().autodiff();
        let (heads, h) = (4, 20);
        for (len, lengths) in [(37, vec![37, 20, 1]), (1, vec![1, 1, 1])] {
            let rows = lengths.len() * len;
            let inputs: Vec<Tensor<2>> =
                (0..3).map(|_| Tensor::random([rows, h], Distribution::Normal(0.0, 1.5), &device)).collect();
            let upstream = Tensor::<2>::random([rows, h], Distribution::Normal(0.0, 1.0), &device);
            let bias = key_bias(&lengths, len, &device);
            let run = |fused: bool| {
                let [q, k, v] = [0, 1, 2].map(|i| inputs[i].clone().require_grad());
                let f = if fused { masked_attention } else { plain_masked_attention };
                let out = f(q.clone(), k.clone(), v.clone(), bias.clone(), heads);
                let grads = (out.clone() * upstream.clone()).sum().backward();
                let mut all = vec![to_vec(out)];
                all.extend([q, k, v].map(|t| to_vec(t.grad(&grads).unwrap())));
                all
            };
            let (fused, plain) = (run(true), run(false));
            for (what, (a, b)) in ["output", "dq", "dk", "dv"].iter().zip(fused.iter().zip(&plain)) {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "{what}[{i}], {len} tokens: {x} vs {y}");
                }
            }
        }
    }

    /// Without autodiff (inference: one weights buffer a text, none kept) the output equals burn's
    /// attention op given the same padding as a boolean mask.
    #[test]
    fn inference_equals_burns_attention_op() {
        use burn::tensor::{Bool, module::attention, ops::AttentionModuleOptions};
        let device = Device::flex();
        let (heads, h, len, lengths) = (4, 20, 37, [37, 20, 1]);
        let (b, d) = (lengths.len(), h / heads);
        let [q, k, v] = [0; 3].map(|_| Tensor::<2>::random([b * len, h], Distribution::Normal(0.0, 1.5), &device));
        let fused = to_vec(masked_attention(q.clone(), k.clone(), v.clone(), key_bias(&lengths, len, &device), heads));
        let masked: Vec<bool> = lengths.iter().flat_map(|&n| (0..len).map(move |j| j >= n)).collect();
        let mask =
            Tensor::<1, Bool>::from_data(masked.as_slice(), &device).reshape([b, 1, 1, len]).expand([b, 1, len, len]);
        let split = |t: Tensor<2>| t.reshape([b, len, heads, d]).swap_dims(1, 2);
        let burns = attention(split(q), split(k), split(v), Some(mask), None, AttentionModuleOptions::default());
        let burns = to_vec(burns.swap_dims(1, 2).reshape([b * len, h]));
        for (i, (x, y)) in fused.iter().zip(&burns).enumerate() {
            assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "output[{i}]: {x} vs {y}");
        }
    }

    /// The fallback as backend operations (what flex runs for other float types) gives the fused
    /// kernel's output, weights and gradients, here on f32 so that both can run.
    #[test]
    fn backend_operations_equal_the_fused_kernel() {
        let device = Device::flex();
        let (heads, h, len, lengths) = (4, 20, 9, [9, 5, 1]);
        let rows = lengths.len() * len;
        let [q, k, v, dout] =
            [0; 4].map(|_| Tensor::<2>::random([rows, h], Distribution::Normal(0.0, 1.5), &device).into_dispatch());
        let bias = key_bias(&lengths, len, &device).into_dispatch();
        let fused = <Dispatch as MaskedAttentionBackend>::masked_attention_with_weights(
            q.clone(),
            k.clone(),
            v.clone(),
            bias.clone(),
            heads,
        );
        let plain = backend_masked_attention::<Dispatch>(q.clone(), k.clone(), v.clone(), bias, heads);
        let inputs = || [q.clone(), k.clone(), v.clone(), fused.1.clone(), dout.clone()];
        let [fq, fk, fv, fp, fd] = inputs();
        let (dq, dk, dv) = <Dispatch as MaskedAttentionBackend>::masked_attention_backward(fq, fk, fv, fp, fd, heads);
        let (pq, pk, pv) = backend_masked_attention_backward::<Dispatch>(inputs(), heads);
        let pairs = [(fused.0.clone(), plain.0), (fused.1.clone(), plain.1), (dq, pq), (dk, pk), (dv, pv)];
        for (what, (a, b)) in ["output", "weights", "dq", "dk", "dv"].iter().zip(pairs) {
            let (a, b) = (to_vec(Tensor::<2>::from_dispatch(a)), to_vec(Tensor::<2>::from_dispatch(b)));
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "{what}[{i}]: {x} vs {y}");
            }
        }
    }

    /// By hand, one text of two tokens, one head of width 1 (scale 1): q = (1, 0), k = (0, ln 3),
    /// v = (2, 6); the second key masked leaves weight 1 on the first; unmasked, query 1 weighs
    /// the keys 1:3 (output 5) and query 2 (q = 0) evenly (output 4).
    #[test]
    fn by_hand() {
        let device = Device::flex();
        let column = |values: [f32; 2]| Tensor::<1>::from_floats(values, &device).reshape([2, 1]);
        let (q, k, v) = (column([1.0, 0.0]), column([0.0, 3f32.ln()]), column([2.0, 6.0]));
        let out = masked_attention(q.clone(), k.clone(), v.clone(), key_bias(&[2], 2, &device), 1);
        let out = to_vec(out);
        assert!((out[0] - 5.0).abs() < 1e-5 && (out[1] - 4.0).abs() < 1e-5, "{out:?}");
        let out = to_vec(masked_attention(q, k, v, key_bias(&[1], 2, &device), 1));
        assert!((out[0] - 2.0).abs() < 1e-6 && (out[1] - 2.0).abs() < 1e-6, "{out:?}");
    }

    /// A text whose keys are all masked gets a zero output and zero gradients (no NaN).
    #[test]
    fn a_fully_masked_text_gets_zeros() {
        let device = Device::flex().autodiff();
        let [q, k, v] = [0; 3].map(|_| Tensor::<2>::random([3, 4], Distribution::Default, &device).require_grad());
        let out = masked_attention(q.clone(), k.clone(), v.clone(), key_bias(&[0], 3, &device), 2);
        let grads = out.clone().sum().backward();
        assert!(to_vec(out).iter().all(|&x| x == 0.0));
        for t in [q, k, v] {
            assert!(to_vec(t.grad(&grads).unwrap()).iter().all(|&x| x == 0.0));
        }
    }
}
