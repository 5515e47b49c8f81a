//! Links libtorch for this package's tests (`tensorgate-build`).
fn main() {
    tensorgate_build::link_libtorch();
}
