//! Build script: embeds an rpath to libtorch's `lib/` so `dc-search` runs without
//! LD_LIBRARY_PATH (torch-sys links libtorch but adds no rpath), and compiles `csrc/`
//! (`buffers.cpp`: a TorchScript module's buffers, which tch does not list; `context.cpp`:
//! libtorch's deterministic-algorithm settings) against the same libtorch's headers.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    // scripts/setup.sh rewrites this file when it links another libtorch as .libtorch.
    if std::path::Path::new(".libtorch.path").exists() {
        println!("cargo:rerun-if-changed=.libtorch.path");
    }
    println!("cargo:rerun-if-changed=csrc/buffers.cpp");
    println!("cargo:rerun-if-changed=csrc/context.cpp");
    let libtorch = std::path::PathBuf::from(
        std::env::var("LIBTORCH").expect("LIBTORCH names libtorch (set by .cargo/config.toml)"),
    );
    let lib = libtorch.join("lib");
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let include = libtorch.join("include");
    cc::Build::new()
        .cpp(true)
        .file("csrc/buffers.cpp")
        .file("csrc/context.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false)
        .compile("dcs_buffers");
}
