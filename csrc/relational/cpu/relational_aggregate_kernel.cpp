// CPU kernel of hotspot_erc::relational_aggregate: one output row per task of at::parallel_for, each
// gathered source row streamed once into a float accumulator row (the inner loop over features is
// a contiguous fused multiply-add the compiler vectorises). Deterministic: edges are summed in
// their CSR order, no atomics.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "relational/checks.h"
#include "relational/relational_row.h"

namespace hotspot_erc {
namespace relational {
namespace {

// On the CPU the index values can be checked without a device sync, so malformed structures
// raise instead of being silently clamped (the CUDA kernel can only clamp).
void check_values_cpu(const at::Tensor& src, const at::Tensor& ptr, const at::Tensor& idx,
                      const at::Tensor& wkey, const at::Tensor& count_ptr) {
  const int64_t* p = ptr.data_ptr<int64_t>();
  const int64_t n = ptr.numel() - 1;
  const int64_t E = idx.numel();
  TORCH_CHECK(p[0] >= 0 && p[n] <= E, "relational_aggregate: ptr values must lie in [0, ", E, "], got ", p[0],
              " .. ", p[n]);
  for (int64_t o = 0; o < n; ++o) {
    TORCH_CHECK(p[o] <= p[o + 1], "relational_aggregate: ptr must be non-decreasing (at ", o, ")");
  }
  const int64_t* ix = idx.data_ptr<int64_t>();
  const int64_t* wk = wkey.data_ptr<int64_t>();
  const int64_t M = src.size(0);
  const int64_t B = count_ptr.numel() - 1;
  for (int64_t e = p[0]; e < p[n]; ++e) {
    TORCH_CHECK(ix[e] >= 0 && ix[e] < M, "relational_aggregate: idx[", e, "] = ", ix[e],
                " is out of range for src with ", M, " rows");
    TORCH_CHECK(wk[e] >= 0 && wk[e] < B, "relational_aggregate: wkey[", e, "] = ", wk[e],
                " is out of range for count_ptr with ", B, " buckets");
  }
}

at::Tensor relational_aggregate_cpu(const at::Tensor& src, const at::Tensor& ptr, const at::Tensor& idx,
                                 const at::Tensor& wkey, const at::Tensor& t_ptr, const at::Tensor& t_idx,
                                 const at::Tensor& t_wkey, const at::Tensor& count_ptr, bool mean) {
  check_gather_args(src, ptr, idx, wkey, count_ptr);
  check_transposed_args(src, t_ptr, t_idx, t_wkey);
  TORCH_CHECK(src.device().is_cpu(), "relational_aggregate (CPU kernel): src must be a CPU tensor");
  check_values_cpu(src, ptr, idx, wkey, count_ptr);

  const int64_t n = ptr.numel() - 1;
  const int64_t d = src.size(1);
  auto out = at::empty({n, d}, src.options());
  if (n == 0 || d == 0) return out;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "relational_aggregate_cpu", [&] {
    using acc_t = typename AccType<scalar_t>::type;
    const scalar_t* s = src.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const int64_t* p = ptr.data_ptr<int64_t>();
    const int64_t* ix = idx.data_ptr<int64_t>();
    const int64_t* wk = wkey.data_ptr<int64_t>();
    const int64_t* cp = count_ptr.data_ptr<int64_t>();
    const int64_t M = src.size(0);
    const int64_t E = idx.numel();
    const int64_t B = count_ptr.numel() - 1;
    // Rows are cheap when segments are short: batch enough of them per task to amortise the
    // thread hand-off.
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(d, 1));
    at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(d);
      for (int64_t r = begin; r < end; ++r) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        gather_row(acc.data(), s, M, d, int64_t(0), ix, wk, cp, B, mean, segment_bounds(p, r, E), d);
        scalar_t* dst = o + r * d;
        for (int64_t v = 0; v < d; ++v) dst[v] = static_cast<scalar_t>(acc[v]);
      }
    });
  });
  return out;
}

}  // namespace
}  // namespace relational
}  // namespace hotspot_erc

TORCH_LIBRARY_IMPL(hotspot_erc, CPU, m) {
  m.impl("relational_aggregate", &hotspot_erc::relational::relational_aggregate_cpu);
}
