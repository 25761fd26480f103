// CUDA kernel of hotspot_erc::relational_aggregate. One thread owns V consecutive features of one
// output row (consecutive threads read consecutive features of a gathered row: coalesced) and
// runs the shared per-row arithmetic of relational_row.h in registers, in CSR edge order: the same
// sums as the CPU kernel, deterministic, no atomics. Index values are guarded, never trusted.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <type_traits>

#include "relational/checks.h"
#include "relational/relational_row.h"

namespace hotspot_erc {
namespace relational {
namespace {

template <typename scalar_t, int V>
__global__ void relational_aggregate_kernel(const scalar_t* __restrict__ src, int64_t num_src, int64_t d,
                                         const int64_t* __restrict__ ptr, int64_t num_rows,
                                         const int64_t* __restrict__ idx, const int64_t* __restrict__ wkey,
                                         int64_t num_edges, const int64_t* __restrict__ count_ptr,
                                         int64_t num_buckets, bool mean, scalar_t* __restrict__ out) {
  using acc_t = typename AccType<scalar_t>::type;
  const int64_t chunks = d / V;
  const int64_t total = num_rows * chunks;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += stride) {
    const int64_t row = t / chunks;
    const int64_t f0 = (t - row * chunks) * V;
    acc_t acc[V];
#pragma unroll
    for (int v = 0; v < V; ++v) acc[v] = acc_t(0);
    gather_row(acc, src, num_src, d, f0, idx, wkey, count_ptr, num_buckets, mean,
               segment_bounds(ptr, row, num_edges), std::integral_constant<int, V>{});
    scalar_t* dst = out + row * d + f0;
#pragma unroll
    for (int v = 0; v < V; ++v) dst[v] = static_cast<scalar_t>(acc[v]);
  }
}

template <typename scalar_t, int V>
void launch(const at::Tensor& src, const at::Tensor& ptr, const at::Tensor& idx, const at::Tensor& wkey,
            const at::Tensor& count_ptr, bool mean, at::Tensor& out) {
  const int64_t n = ptr.numel() - 1;
  const int64_t d = src.size(1);
  const int64_t total = n * (d / V);
  constexpr int threads = 256;
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>((total + threads - 1) / threads, sms * 32));
  relational_aggregate_kernel<scalar_t, V><<<blocks, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
      src.data_ptr<scalar_t>(), src.size(0), d, ptr.data_ptr<int64_t>(), n, idx.data_ptr<int64_t>(),
      wkey.data_ptr<int64_t>(), idx.numel(), count_ptr.data_ptr<int64_t>(), count_ptr.numel() - 1, mean,
      out.data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor relational_aggregate_cuda(const at::Tensor& src, const at::Tensor& ptr, const at::Tensor& idx,
                                  const at::Tensor& wkey, const at::Tensor& t_ptr, const at::Tensor& t_idx,
                                  const at::Tensor& t_wkey, const at::Tensor& count_ptr, bool mean) {
  check_gather_args(src, ptr, idx, wkey, count_ptr);
  check_transposed_args(src, t_ptr, t_idx, t_wkey);
  TORCH_CHECK(src.is_cuda(), "relational_aggregate (CUDA kernel): src must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(src.device());

  const int64_t n = ptr.numel() - 1;
  const int64_t d = src.size(1);
  auto out = at::empty({n, d}, src.options());
  if (n == 0 || d == 0) return out;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "relational_aggregate_cuda", [&] {
    // Four features per thread when rows allow it: fewer index loads per gathered byte.
    if (d % 4 == 0) {
      launch<scalar_t, 4>(src, ptr, idx, wkey, count_ptr, mean, out);
    } else {
      launch<scalar_t, 1>(src, ptr, idx, wkey, count_ptr, mean, out);
    }
  });
  return out;
}

}  // namespace
}  // namespace relational
}  // namespace hotspot_erc

TORCH_LIBRARY_IMPL(hotspot_erc, CUDA, m) {
  m.impl("relational_aggregate", &hotspot_erc::relational::relational_aggregate_cuda);
}
