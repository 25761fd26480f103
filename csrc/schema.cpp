// The hotspot_erc op library. This file owns the namespace; every compiled op adds its schema with
// TORCH_LIBRARY_FRAGMENT(hotspot_erc, m) in its own folder (csrc/<op>/schema.cpp), and its CPU,
// CUDA and Autograd kernels with TORCH_LIBRARY_IMPL in separate files.
#include <torch/library.h>

TORCH_LIBRARY(hotspot_erc, m) {}
