//! A TorchScript module's buffers (BatchNorm's `running_mean`, `running_var`,
//! `num_batches_tracked`, any `register_buffer` tensor) by their full names, which tch does
//! not list: `csrc/buffers.cpp` (compiled by `build.rs` against the linked libtorch) loads
//! the module's bytes once more and hands each buffer over. This file owns that FFI.

use std::ffi::{c_char, c_void, CStr};

use anyhow::{bail, Result};
use tch::Tensor;

extern "C" {
    fn dcs_named_buffers(
        bytes: *const c_char,
        len: usize,
        data: *mut c_void,
        f: extern "C" fn(*mut c_void, *const c_char, *mut c_void),
    ) -> *mut c_char;
}

extern "C" fn push(data: *mut c_void, name: *const c_char, tensor: *mut c_void) {
    // SAFETY: `data` is the `Vec` passed by `named_buffers` below, `name` a C string alive
    // for this call and `tensor` a fresh `at::Tensor*` whose ownership moves to Rust.
    unsafe {
        let out = &mut *(data as *mut Vec<(String, Tensor)>);
        let name = CStr::from_ptr(name).to_string_lossy().into_owned();
        out.push((name, Tensor::from_ptr(tensor as *mut _)));
    }
}

/// The buffers of the TorchScript module saved as `bytes`, recursively, in the module's
/// order, as CPU tensors with their saved values and dtypes.
pub fn named_buffers(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let mut out: Vec<(String, Tensor)> = Vec::new();
    // SAFETY: `bytes` outlives the call; `push` is the only callback and gets `&mut out`.
    let err = unsafe {
        dcs_named_buffers(
            bytes.as_ptr() as *const c_char,
            bytes.len(),
            &mut out as *mut _ as *mut c_void,
            push,
        )
    };
    if !err.is_null() {
        // SAFETY: a malloc'ed C string from the C++ side, freed here once.
        let msg = unsafe {
            let m = CStr::from_ptr(err).to_string_lossy().into_owned();
            libc::free(err as *mut c_void);
            m
        };
        bail!("libtorch cannot list the module's buffers: {msg}");
    }
    Ok(out)
}
