//! Compiles the C++ shim (`src/shim.cpp`) against the headers of the
//! libtorch that torch-sys links (`DEP_TCH_LIBTORCH_LIB/../include`), and
//! gives this package's tests an rpath to it (`tensorgate-build`).
use std::path::PathBuf;

fn main() {
    tensorgate_build::link_libtorch();
    println!("cargo:rerun-if-changed=src/shim.cpp");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB): set LIBTORCH (scripts/env.sh)");
    };
    let include = PathBuf::from(&lib).parent().map(|p| p.join("include")).unwrap_or_default();
    let header = include.join("torch/csrc/inductor/aoti_package/model_package_loader.h");
    assert!(header.is_file(), "{} missing: this libtorch has no AOTInductor package loader", header.display());
    cc::Build::new()
        .cpp(true)
        .file("src/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false)
        .compile("tensorgate_aoti_shim");
}
