//! libtorch's CUDA part, loaded at start-up: the binary links only libtorch's CPU part, and
//! libtorch registers its CUDA kernels when `libtorch_cuda.so` is loaded into the process
//! with its symbols global. [`load`] finds that library beside the `libtorch_cpu.so` this
//! process runs with (the libtorch of `scripts/setup.sh`, of `LIBTORCH`, or of an installed
//! PyTorch put first on `LD_LIBRARY_PATH`) and `dlopen`s it with `RTLD_GLOBAL`; every failure
//! comes back as a sentence saying why there is no usable GPU.

use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The folder of the `libtorch_cpu.so` mapped into this process (from `/proc/self/maps`).
fn libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| PathBuf::from(p).parent().map(|d| d.to_path_buf()))
}

fn try_load() -> Result<PathBuf, String> {
    let dir = libtorch_dir()
        .ok_or("this process has no libtorch_cpu.so mapped (cannot tell which libtorch it runs)")?;
    let lib = dir.join("libtorch_cuda.so");
    if !lib.is_file() {
        return Err(format!(
            "the libtorch in {} has no libtorch_cuda.so (it is libtorch's CPU part): on a GPU machine run \
             `DC_SEARCH_CUDA=1 scripts/setup.sh` (it uses an installed PyTorch 2.11 with CUDA), or put such a \
             PyTorch's torch/lib first on LD_LIBRARY_PATH",
            dir.display()
        ));
    }
    let c = CString::new(lib.to_string_lossy().as_bytes())
        .map_err(|_| format!("{} is not a loadable path", lib.display()))?;
    // SAFETY: dlopen with a valid C string; the handle is kept for the life of the process.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a C string owned by libc (or null).
        let why = unsafe {
            let e = libc::dlerror();
            if e.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(e).to_string_lossy().into_owned()
            }
        };
        return Err(format!(
            "{} does not load ({why}): its CUDA libraries are missing or of another version",
            lib.display()
        ));
    }
    Ok(lib)
}

/// Loads libtorch's CUDA part once; `Err` says why there is none.
pub fn load() -> Result<PathBuf, String> {
    static LOADED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    LOADED.get_or_init(try_load).clone()
}

/// CUDA devices libtorch sees once its CUDA part is loaded; `Err` says why none is usable.
pub fn devices() -> Result<usize, String> {
    load()?;
    match tch::Cuda::device_count() {
        0 => Err(
            "libtorch's CUDA part is loaded but sees no GPU (no NVIDIA driver, or no device visible: check \
             nvidia-smi and CUDA_VISIBLE_DEVICES)"
                .to_string(),
        ),
        n => Ok(n as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_libtorch_says_why_it_has_no_gpu() {
        // The test binary runs with the libtorch of set-up (its CPU part, or a CUDA build
        // where LIBTORCH points at one): either a GPU is found or the reason names a cause.
        let _ = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu));
        match devices() {
            Ok(n) => assert!(n > 0),
            Err(why) => assert!(
                why.contains("libtorch_cuda.so")
                    || why.contains("no GPU")
                    || why.contains("libtorch"),
                "{why}"
            ),
        }
    }
}
