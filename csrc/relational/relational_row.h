// Per-row arithmetic of the relational gather, shared verbatim by the CPU and the CUDA kernel.
//
// The CUDA kernel cannot run in CI, so everything it computes that can be checked on the CPU is
// written once here: segment bounds, the per-edge mean weight and the float32 (float64 for double)
// accumulation in edge order. Both kernels call `gather_row`, so the CPU tests exercise exactly the
// arithmetic (and the out-of-range guards) the GPU executes.
#pragma once

#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#define HOTSPOT_HD __host__ __device__ __forceinline__
#else
#define HOTSPOT_HD inline
#endif

namespace hotspot_erc {
namespace relational {

// Half and bfloat16 accumulate in float32; double stays double so gradcheck sees exact sums.
template <typename scalar_t>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

struct Segment {
  int64_t begin;
  int64_t end;
};

// Edges [ptr[row], ptr[row+1]) clamped to [0, num_edges]: a malformed pointer array can shorten a
// segment but never makes a kernel read outside the index arrays.
HOTSPOT_HD Segment segment_bounds(const int64_t* ptr, int64_t row, int64_t num_edges) {
  int64_t b = ptr[row];
  int64_t e = ptr[row + 1];
  b = b < 0 ? 0 : (b > num_edges ? num_edges : b);
  e = e < b ? b : (e > num_edges ? num_edges : e);
  return {b, e};
}

// Weight of one edge term: 1 for a sum, 1/|bucket| for a mean, where bucket `key` (a
// (destination, relation) pair) spans [count_ptr[key], count_ptr[key+1]). An out-of-range key
// contributes nothing.
template <typename acc_t>
HOTSPOT_HD acc_t edge_weight(const int64_t* count_ptr, int64_t num_buckets, int64_t key, bool mean) {
  if (key < 0 || key >= num_buckets) return acc_t(0);
  if (!mean) return acc_t(1);
  const int64_t c = count_ptr[key + 1] - count_ptr[key];
  return c > 0 ? acc_t(1) / static_cast<acc_t>(c) : acc_t(0);
}

// acc[v] += w_e * src[idx[e], f0 + v] for e in [begin, end) (in edge order) and v < width.
// `width` is a runtime int64_t on the CPU (one pass over each gathered row) and a
// std::integral_constant on the GPU (register accumulators, unrolled). Source rows outside
// [0, num_src) are skipped.
template <typename scalar_t, typename acc_t, typename Width>
HOTSPOT_HD void gather_row(acc_t* __restrict__ acc, const scalar_t* __restrict__ src, int64_t num_src,
                           int64_t ld, int64_t f0, const int64_t* __restrict__ idx,
                           const int64_t* __restrict__ wkey, const int64_t* __restrict__ count_ptr,
                           int64_t num_buckets, bool mean, Segment seg, Width width) {
  for (int64_t e = seg.begin; e < seg.end; ++e) {
    const int64_t j = idx[e];
    if (j < 0 || j >= num_src) continue;
    const acc_t w = edge_weight<acc_t>(count_ptr, num_buckets, wkey[e], mean);
    const scalar_t* __restrict__ row = src + j * ld + f0;
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int64_t v = 0; v < static_cast<int64_t>(width); ++v) {
      acc[v] += w * static_cast<acc_t>(row[v]);
    }
  }
}

}  // namespace relational
}  // namespace hotspot_erc
