//! Fused CPU kernels for mtrec's hot layers, as burn backend extensions of the flex backend (and
//! of autodiff over it, with hand-written backward passes).
//!
//! A training step of the census models is hundreds of small tensor operations; on flex each one
//! allocates its output, and most of them run on one core. The kernels here do what several burn
//! operations do in one pass: a dense layer with its bias and ReLU ([`dense_relu`]), a softmax
//! gate's mixing of expert outputs ([`gate_mix`]), an embedding lookup whose backward adds rows
//! instead of scattering ([`embedding_rows`]) and Adam's update ([`FusedAdamBackend`]); for the
//! text encoder, the projections ([`linear`]), GELU ([`gelu`]), dropout ([`dropout`]), LayerNorm's backward
//! ([`layer_norm`]), the attention weights ([`masked_softmax`]) and the whole attention of a
//! trained layer ([`masked_attention`]).
//!
//! Every kernel has a plain-burn twin that other backends (and the switch
//! [`set_fused_kernels`]`(false)`, `model.fused_kernels = false`) run, and a test that both give
//! the same values and gradients.
//!
//! # Guide
//!
//! Each kernel is a function on burn tensors that takes the fused path on flex and the plain one
//! elsewhere (or with the switch off); both give the same values:
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use mtrec_kernels::{dense_relu, plain_dense_relu};
//!
//! let device = Device::flex();
//! let x = Tensor::<2>::from_floats([[1.0, -2.0], [0.5, 3.0]], &device);
//! let w = Tensor::<2>::from_floats([[1.0, -1.0, 0.5], [0.25, 2.0, -1.0]], &device);
//! let b = Tensor::<1>::from_floats([0.1, 0.2, -0.3], &device);
//! let fused = dense_relu(x.clone(), w.clone(), b.clone()).into_data().to_vec::<f32>().unwrap();
//! let plain = plain_dense_relu(x, w, b).into_data().to_vec::<f32>().unwrap();
//! // relu(x·W + b), by hand: [0.6, 0, 2.2] and [1.35, 5.7, 0]
//! for (f, (p, e)) in fused.iter().zip(plain.iter().zip([0.6, 0.0, 2.2, 1.35, 5.7, 0.0])) {
//!     assert!((f - p).abs() < 1e-6 && (f - e).abs() < 1e-6);
//! }
//! ```

#![deny(missing_docs)]

mod adam;
mod attention;
mod denormals;
mod dense;
mod dense_relu;
mod dropout;
mod embedding_rows;
mod exp;
mod flex_tensor;
mod gate_mix;
mod gelu;
mod layer_norm;
mod masked_softmax;
mod simd;
mod strided_gemm;
mod switch;

pub use adam::FusedAdamBackend;
pub use attention::{MaskedAttentionBackend, masked_attention, plain_masked_attention};
pub use denormals::{flush_denormals, flush_denormals_on_this_thread};
pub use dense::{FusedLinearBackend, linear};
pub use dense_relu::{FusedDenseBackend, dense_relu, linear_relu, plain_dense_relu};
pub use dropout::{DropoutBackend, dropout};
pub use embedding_rows::{EmbeddingRowsBackend, embedding_rows, weight_rows};
pub use flex_tensor::f32_tensor;
use flex_tensor::{contiguous, f32_values, whole};
pub use gate_mix::{GateMixBackend, gate_mix, plain_gate_mix};
pub use gelu::{GeluBackend, gelu};
pub use layer_norm::{LayerNormBackend, layer_norm};
pub use masked_softmax::{MaskedSoftmaxBackend, masked_softmax, plain_masked_softmax};
pub use simd::{ElementLoop, vectorized};
pub use switch::{fused_kernels, set_fused_kernels, use_fused};
