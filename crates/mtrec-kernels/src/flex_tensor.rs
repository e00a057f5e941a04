//! Flex tensors built straight from a `Vec<f32>`.
//!
//! `FlexTensor::empty` allocates zeroed bytes and then copies them into a 16-byte aligned buffer
//! (`Bytes::from_bytes_vec` checks the declared alignment of `u8`, 1, not the pointer's); every
//! flex operation pays that copy. The kernels build their outputs as `Vec<f32>` (4-byte aligned,
//! all f32 needs) and wrap them without a copy.

use burn::{
    backend::{
        DType,
        flex::{FlexTensor, Layout},
    },
    tensor::{Bytes, Shape},
};

/// A contiguous f32 flex tensor over `values`, without the copy `FlexTensor::empty` makes (it
/// allocates bytes and then copies them into a 16-byte aligned buffer; f32 needs 4).
pub fn f32_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(Shape::new(shape)), DType::F32)
}
