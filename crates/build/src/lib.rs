//! Called from the build script of every package whose binaries or tests
//! link libtorch (each must depend on `torch-sys` directly, which is what
//! hands its build script `DEP_TCH_LIBTORCH_LIB`).

/// Gives the package's binaries and tests an rpath to libtorch (torch-sys
/// sets none, so they would exit 127 without `LD_LIBRARY_PATH`), and with
/// the package's `cuda` feature links `libtorch_cuda` in despite
/// `--as-needed` (rustc drops it otherwise: nothing references it by name).
pub fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
