// The C face of libtorch's AOTInductor package loader for tensorgate's
// AOTInductor backend (crates/backends/aoti/src/lib.rs). Tensors cross as
// `at::Tensor*`, the same handles tch uses (torch-sys: `typedef
// torch::Tensor *tensor`), so tch owns what this returns. No C++ exception
// crosses into Rust: each becomes an error string (freed by
// tg_aoti_free_string).
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using torch::inductor::AOTIModelPackageLoader;

static char* dup(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p != nullptr) {
    std::memcpy(p, s.c_str(), s.size() + 1);
  }
  return p;
}

#define TG_CATCH(error, failed)                      \
  catch (const c10::Error& e) {                      \
    *(error) = dup(e.what_without_backtrace());      \
    return failed;                                   \
  }                                                  \
  catch (const std::exception& e) {                  \
    *(error) = dup(e.what());                        \
    return failed;                                   \
  }                                                  \
  catch (...) {                                      \
    *(error) = dup("unknown C++ exception");         \
    return failed;                                   \
  }

// Packages are compiled without linking libtorch (`aot_inductor.link_libtorch
// = False`: the slim libtorch's libtorch.so needs libtorch_cuda.so, absent
// on a CPU machine); their `aoti_torch_*` calls bind to the libtorch of the
// process at dlopen. Makes sure libtorch_cpu's symbols are global (they are
// when the executable links it; this also covers a RTLD_LOCAL load).
static void libtorch_symbols_global() {
  static bool done = false;
  if (done) {
    return;
  }
  done = true;
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&aoti_torch_dtype_float32), &info) != 0 && info.dli_fname != nullptr) {
    dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
  }
}

extern "C" {

void* tg_aoti_load(const char* path, int device_index, char** error) {
  try {
    libtorch_symbols_global();
    return new AOTIModelPackageLoader(path, "model", false, 1, static_cast<c10::DeviceIndex>(device_index));
  }
  TG_CATCH(error, nullptr)
}

void tg_aoti_free(void* loader) {
  delete static_cast<AOTIModelPackageLoader*>(loader);
}

void tg_aoti_free_string(char* s) {
  std::free(s);
}

// Runs the package on `n` inputs; on success `*outputs` is a malloc'd
// array of `*n_out` new tensors (free the array with tg_aoti_free_outputs,
// each tensor as tch does) and 0 is returned.
int tg_aoti_run(void* loader, at::Tensor** inputs, size_t n, at::Tensor*** outputs, size_t* n_out, char** error) {
  try {
    std::vector<at::Tensor> in;
    in.reserve(n);
    for (size_t i = 0; i < n; i++) {
      in.push_back(*inputs[i]);
    }
    std::vector<at::Tensor> out = static_cast<AOTIModelPackageLoader*>(loader)->run(in);
    auto** array = static_cast<at::Tensor**>(std::malloc(sizeof(at::Tensor*) * (out.empty() ? 1 : out.size())));
    if (array == nullptr) {
      *error = dup("out of memory");
      return 1;
    }
    for (size_t i = 0; i < out.size(); i++) {
      array[i] = new at::Tensor(std::move(out[i]));
    }
    *outputs = array;
    *n_out = out.size();
    return 0;
  }
  TG_CATCH(error, 1)
}

void tg_aoti_free_outputs(at::Tensor** outputs) {
  std::free(outputs);
}

// The package's call spec (`which` 0: inputs, 1: outputs; pytree JSON), or
// null with `*error` set.
char* tg_aoti_call_spec(void* loader, int which, char** error) {
  try {
    std::vector<std::string> spec = static_cast<AOTIModelPackageLoader*>(loader)->get_call_spec();
    if (which < 0 || static_cast<size_t>(which) >= spec.size()) {
      *error = dup("no such call spec");
      return nullptr;
    }
    return dup(spec[which]);
  }
  TG_CATCH(error, nullptr)
}

}  // extern "C"
