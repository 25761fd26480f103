// CUDA half of the build probe: compiled only in CUDA builds, so its presence in the dispatcher
// proves that nvcc ran on csrc/ (a CUDA syntax error anywhere fails the build and the test).
#include <torch/library.h>
#include <ATen/ATen.h>

namespace hotspot_erc {
at::Tensor build_probe_cuda(const at::Tensor& x) { return x.clone(); }
}  // namespace hotspot_erc

TORCH_LIBRARY_IMPL(hotspot_erc, CUDA, m) {
  m.impl("_build_probe", &hotspot_erc::build_probe_cuda);
}
