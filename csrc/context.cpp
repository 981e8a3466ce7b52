// libtorch's global context settings that tch does not wrap: deterministic algorithms and
// cuDNN's deterministic, non-autotuned convolutions, chosen for runs on a GPU. Read by
// src/cuda.rs.
#include <cstring>

#include <ATen/Context.h>

extern "C" {

// Chooses (or leaves) deterministic algorithms; an operation without one warns instead of
// failing. Returns null, or a malloc'ed message on failure.
char *dcs_deterministic(int on) {
  try {
    auto &ctx = at::globalContext();
    ctx.setDeterministicAlgorithms(on != 0, /*warn_only=*/true);
    ctx.setDeterministicCuDNN(on != 0);
    ctx.setBenchmarkCuDNN(false);
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}

int dcs_is_deterministic() { return at::globalContext().deterministicAlgorithms() ? 1 : 0; }
}
