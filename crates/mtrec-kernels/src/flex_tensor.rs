//! Flex tensors built straight from a `Vec<f32>`, and the kernels' views of their inputs.
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

/// `t` itself when its layout is contiguous, else a contiguous copy: what [`f32_values`] reads.
pub(crate) fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() { t } else { t.to_contiguous() }
}

/// The elements of a contiguous f32 tensor, in order.
pub(crate) fn f32_values(t: &FlexTensor) -> &[f32] {
    &t.storage::<f32>()[t.layout().start_offset()..][..t.layout().num_elements()]
}

/// `t` itself when its elements are its whole buffer from the first byte, else a contiguous copy:
/// `storage_mut` then writes exactly the tensor's elements (copying first only if the buffer is
/// shared).
pub(crate) fn whole(t: FlexTensor) -> FlexTensor {
    let covers = t.is_contiguous()
        && t.layout().start_offset() == 0
        && t.bytes().len() == t.layout().num_elements() * t.dtype().size();
    if covers { t } else { t.to_contiguous() }
}
