// Argument checks of hotspot_erc::relational_aggregate, shared by the CPU, CUDA and autograd kernels
// so that a direct torch.ops call with bad tensors fails with a message, never a crash.
#pragma once

#include <ATen/ATen.h>

namespace hotspot_erc {
namespace relational {

// Rank, dtype and device only: these hold for the symbolic-shape tensors torch.compile traces the
// autograd kernel with (sizes and strides may not be read there).
inline void check_index_meta(const char* name, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK(t.dim() == 1, "relational_aggregate: ", name, " must be 1-D, got ", t.dim(), " dimensions");
  TORCH_CHECK(t.scalar_type() == at::kLong, "relational_aggregate: ", name, " must be int64, got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), "relational_aggregate: ", name, " must be on ", like.device(),
              " like src, got ", t.device());
}

inline void check_src_meta(const at::Tensor& src) {
  TORCH_CHECK(src.dim() == 2, "relational_aggregate: src must be 2-D [rows, features], got ", src.dim(),
              " dimensions");
  const auto st = src.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "relational_aggregate: src must be float32, float64, float16 or bfloat16, got ", st);
}

inline void check_index(const char* name, const at::Tensor& t, const at::Tensor& like) {
  check_index_meta(name, t, like);
  TORCH_CHECK(t.is_contiguous(), "relational_aggregate: ", name, " must be contiguous");
}

// src [M, d]; (ptr [n+1], idx [E], wkey [E]) the structure gathered by this call; count_ptr
// [B+1] the bucket pointer that defines mean weights.
inline void check_gather_args(const at::Tensor& src, const at::Tensor& ptr, const at::Tensor& idx,
                              const at::Tensor& wkey, const at::Tensor& count_ptr) {
  check_src_meta(src);
  TORCH_CHECK(src.is_contiguous(), "relational_aggregate: src must be contiguous");
  check_index("ptr", ptr, src);
  check_index("idx", idx, src);
  check_index("wkey", wkey, src);
  check_index("count_ptr", count_ptr, src);
  TORCH_CHECK(ptr.numel() >= 1, "relational_aggregate: ptr must have at least one element");
  TORCH_CHECK(count_ptr.numel() >= 1, "relational_aggregate: count_ptr must have at least one element");
  TORCH_CHECK(idx.numel() == wkey.numel(), "relational_aggregate: idx and wkey must have the same length, got ",
              idx.numel(), " and ", wkey.numel());
}

// The transposed structure gathers gradients back into src's rows: one segment per src row.
inline void check_transposed_args(const at::Tensor& src, const at::Tensor& t_ptr, const at::Tensor& t_idx,
                                  const at::Tensor& t_wkey) {
  check_index("t_ptr", t_ptr, src);
  check_index("t_idx", t_idx, src);
  check_index("t_wkey", t_wkey, src);
  TORCH_CHECK(t_ptr.numel() == src.size(0) + 1, "relational_aggregate: t_ptr must have src.size(0) + 1 = ",
              src.size(0) + 1, " entries, got ", t_ptr.numel());
  TORCH_CHECK(t_idx.numel() == t_wkey.numel(), "relational_aggregate: t_idx and t_wkey must have the same length, got ",
              t_idx.numel(), " and ", t_wkey.numel());
}

}  // namespace relational
}  // namespace hotspot_erc
