// The one thing dc-search needs from libtorch that tch does not wrap: a TorchScript module's
// buffers (BatchNorm's running statistics and step count, any register_buffer tensor), by
// their full names, as the module holds them. Read by src/models/buffers.rs.
#include <cstring>
#include <sstream>
#include <string>

#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>

extern "C" {

// Loads the module saved in `bytes[0..len]` on the CPU and calls `f(data, name, tensor)` for
// each buffer, recursively, in the module's order; `tensor` is a new `torch::Tensor*` (a
// detached copy) that the callee owns. Returns null, or a malloc'ed message on failure.
char *dcs_named_buffers(const char *bytes, size_t len, void *data,
                        void (*f)(void *, const char *, void *)) {
  try {
    std::istringstream in(std::string(bytes, len));
    torch::jit::Module m = torch::jit::load(in, c10::Device(c10::kCPU));
    for (const auto &b : m.named_buffers(/*recurse=*/true)) {
      f(data, b.name.c_str(), new at::Tensor(b.value.detach().clone()));
    }
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}
}
