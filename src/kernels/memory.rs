//! Tensor data as plain slices, and buffers written before they are read.

use std::mem::MaybeUninit;

use candle_core::{DType, Result, Storage, Tensor, WithDType};

/// Whether the direct CPU kernels apply to this tensor.
pub(super) fn on_cpu_f32(tensor: &Tensor) -> bool {
    tensor.device().is_cpu() && tensor.dtype() == DType::F32
}

/// Runs `f` over the tensor's data as one contiguous f32 slice (CPU only).
pub(super) fn with_f32<R>(tensor: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    with_data(tensor, f)
}

/// Runs `f` over the tensor's data as one contiguous slice of its dtype `T` (CPU only).
pub(super) fn with_data<T: WithDType, R>(
    tensor: &Tensor,
    f: impl FnOnce(&[T]) -> Result<R>,
) -> Result<R> {
    let tensor = tensor.contiguous()?;
    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("expected a CPU tensor");
    };
    let data = cpu.as_slice::<T>()?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("expected a contiguous tensor");
    };
    f(&data[start..end])
}

/// A vector of `len` values to be written before being read.
pub(super) fn uninit_vec<T>(len: usize) -> Vec<MaybeUninit<T>> {
    let mut data = Vec::with_capacity(len);
    // SAFETY: `MaybeUninit` needs no initialisation.
    unsafe { data.set_len(len) };
    data
}

/// The values of a vector every element of which has been written.
///
/// # Safety
/// Every element must be initialised.
pub(super) unsafe fn assume_init<T>(data: Vec<MaybeUninit<T>>) -> Vec<T> {
    let mut data = std::mem::ManuallyDrop::new(data);
    // SAFETY: same layout, length and capacity; the caller guarantees initialisation.
    unsafe { Vec::from_raw_parts(data.as_mut_ptr().cast::<T>(), data.len(), data.capacity()) }
}

/// A raw pointer that parallel tasks share to write disjoint parts of one buffer.
///
/// Only the matrix products use it (`product.rs`, and the packed bf16 kernels they call):
/// a task's block of a row-major output is a range of columns of a range of rows, which no
/// slice type describes when the columns are split, and `gemm` and the packed kernels take
/// a block as a pointer and a row stride anyway. Everything else writes through
/// `par_chunks_mut` slices.
#[derive(Clone, Copy)]
pub(super) struct SharedMut(pub(super) *mut f32);

// SAFETY: the tasks holding it write disjoint elements and finish before the buffer is used.
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer `count` elements further.
    pub(super) fn offset(self, count: usize) -> Self {
        Self(self.0.wrapping_add(count))
    }

    /// The raw pointer.
    pub(super) fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Runs `f` over the bias's f32 data, or `None`.
pub(super) fn with_optional_f32<R>(
    tensor: Option<&Tensor>,
    f: impl FnOnce(Option<&[f32]>) -> Result<R>,
) -> Result<R> {
    match tensor {
        Some(tensor) => with_f32(tensor, |data| f(Some(data))),
        None => f(None),
    }
}
