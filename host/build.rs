//! Links libtorch for this package's binaries and tests (`tensorgate-build`).
fn main() {
    tensorgate_build::link_libtorch();
}
