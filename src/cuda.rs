//! libtorch's CUDA part, loaded at start-up: the binary links only libtorch's CPU part, and
//! libtorch registers its CUDA kernels when `libtorch_cuda.so` is loaded into the process
//! with its symbols global. [`load`] finds that library beside the `libtorch_cpu.so` this
//! process runs with (the libtorch of `scripts/setup.sh`, of `LIBTORCH`, or of an installed
//! PyTorch put first on `LD_LIBRARY_PATH`) and `dlopen`s it with `RTLD_GLOBAL`; [`devices`]
//! then asks the NVIDIA driver. Every failure is a [`NoGpu`] saying why there is no usable GPU:
//! no CUDA part, a CUDA part that does not load, no driver, a driver older than libtorch's
//! CUDA, or no device visible. [`make_deterministic`] chooses libtorch's deterministic
//! algorithms for a run on the GPU.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The CUDA version libtorch 2.11.0's CUDA part is built for (`cudaRuntimeGetVersion` form).
pub const CUDA_BUILT_FOR: i32 = 13000;

/// Why no GPU is usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoGpu {
    /// This process does not run a libtorch (cannot happen in the binary).
    NoLibtorch,
    /// The libtorch in use is its CPU part only.
    NoCudaPart(PathBuf),
    /// `libtorch_cuda.so` is there but does not load.
    DoesNotLoad(PathBuf, String),
    /// No NVIDIA driver (`libcuda.so.1`) on this machine.
    NoDriver(String),
    /// The driver supports an older CUDA than libtorch's (`cuDriverGetVersion`).
    OldDriver(i32),
    /// The driver sees no device.
    NoDevice,
}

impl NoGpu {
    /// The cause in a few words, for `--device auto`'s device line.
    pub fn short(&self) -> String {
        match self {
            NoGpu::NoLibtorch => "no libtorch mapped".into(),
            NoGpu::NoCudaPart(_) => "libtorch is its CPU part".into(),
            NoGpu::DoesNotLoad(..) => "libtorch_cuda.so does not load".into(),
            NoGpu::NoDriver(_) => "no NVIDIA driver".into(),
            NoGpu::OldDriver(v) => format!("the NVIDIA driver supports only CUDA {}", version(*v)),
            NoGpu::NoDevice => "no GPU visible".into(),
        }
    }
}

fn version(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

impl std::fmt::Display for NoGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoGpu::NoLibtorch => write!(f, "this process has no libtorch_cpu.so mapped"),
            NoGpu::NoCudaPart(dir) => write!(
                f,
                "the libtorch in {} is its CPU part (no libtorch_cuda.so): on a GPU machine run \
                 `DC_SEARCH_CUDA=1 scripts/setup.sh` and build again",
                dir.display()
            ),
            NoGpu::DoesNotLoad(lib, why) => write!(
                f,
                "{} does not load ({why}): its NVIDIA libraries are missing or of another version; \
                 run `DC_SEARCH_CUDA=1 scripts/setup.sh`",
                lib.display()
            ),
            NoGpu::NoDriver(why) => write!(
                f,
                "no NVIDIA driver on this machine ({why}); libtorch's CUDA part is \
                 loaded but has no GPU to use"
            ),
            NoGpu::OldDriver(v) => write!(
                f,
                "the NVIDIA driver supports CUDA up to {}, and this libtorch needs CUDA {}: update the \
                 driver",
                version(*v),
                version(CUDA_BUILT_FOR)
            ),
            NoGpu::NoDevice => write!(
                f,
                "the NVIDIA driver sees no GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
            ),
        }
    }
}

/// The folder of the `libtorch_cpu.so` mapped into this process (from `/proc/self/maps`).
fn libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| PathBuf::from(p).parent().map(|d| d.to_path_buf()))
}

/// The last `dlerror` message.
fn dl_error() -> String {
    // SAFETY: dlerror returns a C string owned by libc (or null).
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown error".to_string()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// `dlopen(path, RTLD_NOW | flags)`; the handle is kept for the life of the process.
fn dl_open(path: &str, flags: c_int) -> Result<*mut c_void, String> {
    let c = CString::new(path).map_err(|_| format!("{path} is not a loadable path"))?;
    // SAFETY: dlopen with a valid C string.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | flags) };
    if handle.is_null() {
        Err(dl_error())
    } else {
        Ok(handle)
    }
}

fn try_load() -> Result<PathBuf, NoGpu> {
    let dir = libtorch_dir().ok_or(NoGpu::NoLibtorch)?;
    let lib = dir.join("libtorch_cuda.so");
    if !lib.is_file() {
        return Err(NoGpu::NoCudaPart(dir));
    }
    dl_open(&lib.to_string_lossy(), libc::RTLD_GLOBAL)
        .map_err(|why| NoGpu::DoesNotLoad(lib.clone(), why))?;
    Ok(lib)
}

/// Loads libtorch's CUDA part once; `Err` says why there is none.
pub fn load() -> Result<PathBuf, NoGpu> {
    static LOADED: OnceLock<Result<PathBuf, NoGpu>> = OnceLock::new();
    LOADED.get_or_init(try_load).clone()
}

/// The CUDA version the NVIDIA driver supports, asked from `libcuda.so.1` itself.
fn driver_version() -> Result<i32, NoGpu> {
    let handle = dl_open("libcuda.so.1", libc::RTLD_LOCAL).map_err(NoGpu::NoDriver)?;
    // SAFETY: the symbol name is a valid C string; the handle is live.
    let sym = unsafe { libc::dlsym(handle, c"cuDriverGetVersion".as_ptr()) };
    if sym.is_null() {
        return Err(NoGpu::NoDriver("it has no cuDriverGetVersion".to_string()));
    }
    // SAFETY: cuDriverGetVersion has this signature in every CUDA driver API version.
    let get: extern "C" fn(*mut c_int) -> c_int = unsafe { std::mem::transmute(sym) };
    let mut v: c_int = 0;
    match get(&mut v) {
        0 => Ok(v),
        code => Err(NoGpu::NoDriver(format!(
            "cuDriverGetVersion failed with {code}"
        ))),
    }
}

/// The name of CUDA device `n` as the driver gives it (`NVIDIA H200`), when it does.
pub fn device_name(n: usize) -> Option<String> {
    let handle = dl_open("libcuda.so.1", libc::RTLD_LOCAL).ok()?;
    // SAFETY: symbol names are valid C strings; the handle is live; the signatures are those
    // of the CUDA driver API (cuInit(flags), cuDeviceGet(&device, ordinal),
    // cuDeviceGetName(buffer, length, device)), unchanged since CUDA 2.
    unsafe {
        let init = libc::dlsym(handle, c"cuInit".as_ptr());
        let get = libc::dlsym(handle, c"cuDeviceGet".as_ptr());
        let name = libc::dlsym(handle, c"cuDeviceGetName".as_ptr());
        if init.is_null() || get.is_null() || name.is_null() {
            return None;
        }
        let init: extern "C" fn(u32) -> c_int = std::mem::transmute(init);
        let get: extern "C" fn(*mut c_int, c_int) -> c_int = std::mem::transmute(get);
        let name: extern "C" fn(*mut c_char, c_int, c_int) -> c_int = std::mem::transmute(name);
        let mut dev: c_int = 0;
        let mut buf = [0 as c_char; 256];
        if init(0) != 0 || get(&mut dev, n as c_int) != 0 || name(buf.as_mut_ptr(), 256, dev) != 0 {
            return None;
        }
        Some(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned())
    }
}

/// CUDA devices libtorch sees once its CUDA part is loaded; `Err` says why none is usable.
pub fn devices() -> Result<usize, NoGpu> {
    load()?;
    let driver = driver_version()?;
    if driver < CUDA_BUILT_FOR {
        return Err(NoGpu::OldDriver(driver));
    }
    match tch::Cuda::device_count() {
        0 => Err(NoGpu::NoDevice),
        n => Ok(n as usize),
    }
}

extern "C" {
    fn dcs_deterministic(on: c_int) -> *mut c_char;
    fn dcs_is_deterministic() -> c_int;
}

/// Chooses libtorch's deterministic algorithms (warning, not failing, for an operation that
/// has none), deterministic cuDNN convolutions without autotuning, and a fixed cuBLAS
/// workspace (`CUBLAS_WORKSPACE_CONFIG=:4096:8`, unless set): the same seed then gives the
/// same model on the same GPU and libtorch. Called before the first CUDA operation.
pub fn make_deterministic() -> Result<(), String> {
    if std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
    }
    set_deterministic(true)
}

fn set_deterministic(on: bool) -> Result<(), String> {
    // SAFETY: the C function takes an int and returns null or a malloc'ed message.
    let err = unsafe { dcs_deterministic(on as c_int) };
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null result is a NUL-terminated malloc'ed string we now own.
    let msg = unsafe { CStr::from_ptr(err).to_string_lossy().into_owned() };
    unsafe { libc::free(err.cast()) };
    Err(msg)
}

/// Whether libtorch's deterministic algorithms are chosen.
pub fn is_deterministic() -> bool {
    // SAFETY: a plain getter of libtorch's global context.
    unsafe { dcs_is_deterministic() != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_cause_and_the_remedy() {
        let s = NoGpu::OldDriver(12040).to_string();
        assert!(
            s.contains("up to 12.4") && s.contains("needs CUDA 13.0"),
            "{s}"
        );
        let s = NoGpu::NoCudaPart(PathBuf::from("/x/lib")).to_string();
        assert!(
            s.contains("/x/lib") && s.contains("DC_SEARCH_CUDA=1"),
            "{s}"
        );
        assert!(NoGpu::NoDevice.to_string().contains("CUDA_VISIBLE_DEVICES"));
    }

    #[test]
    fn this_machine_says_why_it_has_no_gpu_or_counts_its_gpus() {
        match devices() {
            Ok(n) => assert!(n > 0 && device_name(0).is_some()),
            Err(NoGpu::NoDriver(_)) => assert_eq!(device_name(0), None),
            // The libtorch of set-up is either its CPU part, or a CUDA one on a machine
            // without a driver or a GPU: the reason is one of those.
            Err(why) => assert!(
                matches!(
                    why,
                    NoGpu::NoCudaPart(_) | NoGpu::NoDriver(_) | NoGpu::NoDevice
                ),
                "{why}"
            ),
        }
    }

    #[test]
    fn deterministic_algorithms_switch_on_and_off() {
        let before = is_deterministic();
        set_deterministic(true).unwrap();
        assert!(is_deterministic());
        set_deterministic(before).unwrap();
        assert_eq!(is_deterministic(), before);
    }
}
