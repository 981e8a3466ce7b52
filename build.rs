//! Build script: embeds an rpath to libtorch's `lib/` so `dc-search` runs without
//! LD_LIBRARY_PATH (torch-sys links libtorch but adds no rpath).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&libtorch).join("lib");
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
