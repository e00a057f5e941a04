//! Matrix products of flex tensors straight into a kernel's own buffer, with the `gemm` crate:
//! the operands are read through their strides (a transposed weight is a view, not a copy), and
//! the output is a `Vec<f32>` the kernel wraps without the copy flex's matmul makes of its output.

use burn::backend::flex::FlexTensor;

/// A 2-D f32 view of a flex tensor: pointer to its first element and its strides.
pub(crate) struct View<'a> {
    data: &'a [f32],
    offset: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    row_stride: isize,
    col_stride: isize,
}

impl<'a> View<'a> {
    pub(crate) fn of(t: &'a FlexTensor) -> Self {
        let layout = t.layout();
        let shape = layout.shape();
        let strides = layout.strides();
        Self {
            data: t.storage::<f32>(),
            offset: layout.start_offset(),
            rows: shape[0],
            cols: shape[1],
            row_stride: strides[0],
            col_stride: strides[1],
        }
    }

    /// The row-major block of `data` with `rows × cols` elements from `offset`, rows `row_stride`
    /// apart (a head's columns of a `[L, H]` matrix: `row_stride` H).
    pub(crate) fn block(data: &'a [f32], offset: usize, rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(rows == 0 || offset + (rows - 1) * row_stride + cols <= data.len(), "the block lies inside its data");
        Self { data, offset, rows, cols, row_stride: row_stride as isize, col_stride: 1 }
    }

    /// The transposed view (no copy).
    pub(crate) fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    fn ptr(&self) -> *const f32 {
        self.data[self.offset..].as_ptr()
    }
}

/// `out[m×n] (= out if accumulate) + lhs·rhs`, row-major contiguous `out`.
pub(crate) fn gemm_into(
    out: &mut [f32],
    n: usize,
    lhs: &View,
    rhs: &View,
    accumulate: bool,
    threads: gemm::Parallelism,
) {
    assert!(out.len() == lhs.rows * n, "gemm_into: shapes do not match");
    gemm_into_rows(out, n, lhs, rhs, accumulate, threads);
}

/// The same into `m` rows of `out` that lie `row_stride` apart from its start (a head's columns of
/// a `[L, H]` matrix: `row_stride` H, `out` from the head's first column); the elements between
/// them are left as they are.
#[allow(unsafe_code)]
pub(crate) fn gemm_into_rows(
    out: &mut [f32],
    row_stride: usize,
    lhs: &View,
    rhs: &View,
    accumulate: bool,
    threads: gemm::Parallelism,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert!(rhs.rows == k && n <= row_stride, "gemm_into: shapes do not match");
    assert!(m == 0 || (m - 1) * row_stride + n <= out.len(), "gemm_into: the output lies inside its buffer");
    // SAFETY: the views cover their shapes (flex layouts, or blocks checked on creation), and the
    // m rows of n elements, `row_stride` apart, lie inside `out` (checked above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            row_stride as isize,
            accumulate,
            lhs.ptr(),
            lhs.col_stride,
            lhs.row_stride,
            rhs.ptr(),
            rhs.col_stride,
            rhs.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            threads,
        );
    }
}

/// `x·w + b` for a dense layer, x `[m, k]` and w `[k, n]` read through their strides, `bias` its
/// `n` values: the rows filled with the bias, then one GEMM accumulates the product into them.
/// Returns the `m × n` row-major values and `[m, n]`.
pub(crate) fn affine(x: &FlexTensor, w: &FlexTensor, bias: &[f32]) -> (Vec<f32>, [usize; 2]) {
    let (xv, wv) = (View::of(x), View::of(w));
    let (m, k, n) = (xv.rows, xv.cols, wv.cols);
    let mut y = Vec::with_capacity(m * n);
    for _ in 0..m {
        y.extend_from_slice(bias);
    }
    gemm_into(&mut y, n, &xv, &wv, true, parallelism(m, n, k));
    (y, [m, n])
}

/// Below this many multiply-adds a GEMM runs on one thread (flex uses the same threshold).
const PARALLEL_GEMM_MACS: usize = 7 * 1024 * 1024;

pub(crate) fn parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    if m * n * k >= PARALLEL_GEMM_MACS { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None }
}
