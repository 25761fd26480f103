// The hotspot_erc op library. Every compiled op adds its schema with TORCH_LIBRARY_FRAGMENT in its
// own folder; this file owns the namespace and a trivial op used to prove which backends were
// compiled (tests check that the CUDA key has a kernel whenever torch has CUDA).
#include <torch/library.h>
#include <ATen/ATen.h>

TORCH_LIBRARY(hotspot_erc, m) {
  m.def("_build_probe(Tensor x) -> Tensor");
}

namespace hotspot_erc {
at::Tensor build_probe_cpu(const at::Tensor& x) { return x.clone(); }
}  // namespace hotspot_erc

TORCH_LIBRARY_IMPL(hotspot_erc, CPU, m) {
  m.impl("_build_probe", &hotspot_erc::build_probe_cpu);
}
