// CPU kernels of hotspot_erc::relational_conv (RGCNConv's dense-weight path; schema.cpp).
//
// Relation by relation, the relation's buckets are processed in chunks of kChunk rows: the
// chunk's rows are gathered (mean or sum over each bucket's edges) into a small buffer, multiplied
// by W_r with ATen's CPU matmul called directly (at::cpu::mm_out: the op stays one kernel, as
// segment_matmul does), and added into the destination nodes' output rows. The buffers stay in
// cache and are reused, so neither the [K, in] gathered matrix nor the [K, out] product is ever
// written to memory; the backward gathers the chunk again rather than keeping it (cheaper than the
// memory the kept matrix would cost). GEMM FLOPs are those of the non-empty buckets only.
//
// Deterministic, with no atomics: a node appears at most once per relation (checked), so the
// epilogue's rows never collide; relations and chunks run in a fixed order; the weight gradient
// accumulates chunk by chunk in order; the input gradient's scatter splits the feature columns
// (not the edges) among threads, so each element is summed in edge order by one thread. Our own
// sums are thus the same at any thread count; the GEMMs are ATen's BLAS calls, as for torch.mm.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace hotspot_erc {
namespace relational_conv {
namespace {

using OptT = c10::optional<at::Tensor>;
using T = at::Tensor;

// Bucket rows per GEMM: big enough for the BLAS to run at speed, small enough that the gathered
// chunk and its product stay in L2 between the gather, the GEMM and the epilogue.
constexpr int64_t kChunk = 512;

struct Structure {
  std::vector<int64_t> rel;  // host copy of rel_ptr [R+1]
  const int64_t* ptr;
  const int64_t* col;
  const int64_t* dst;
};

bool defined(const OptT& t) { return t.has_value() && t->defined(); }

Structure check_args(const T& x, const T& weight, const OptT& root, const OptT& bias, const T& rel_ptr,
                     const T& ptr, const T& col, const T& dst) {
  TORCH_CHECK(x.dim() == 2, "relational_conv: x must be 2-D [N, in], got ", x.dim(), " dimensions");
  const auto st = x.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "relational_conv: x must be float32, float64, float16 or bfloat16, got ", st);
  TORCH_CHECK(weight.dim() == 3 && weight.size(1) == x.size(1) && weight.scalar_type() == st,
              "relational_conv: weight must be [R, in=", x.size(1), ", out] in x's dtype, got ", weight.sizes(),
              " ", weight.scalar_type());
  if (defined(root)) {
    TORCH_CHECK(root->dim() == 2 && root->size(0) == x.size(1) && root->size(1) == weight.size(2) &&
                    root->scalar_type() == st,
                "relational_conv: root must be [in, out] = [", x.size(1), ", ", weight.size(2), "] in x's dtype");
  }
  if (defined(bias)) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(2) && bias->scalar_type() == st,
                "relational_conv: bias must be [out] = [", weight.size(2), "] in x's dtype");
  }
  for (const auto& [name, t] : {std::pair<const char*, const T*>{"rel_ptr", &rel_ptr}, {"ptr", &ptr},
                                {"col", &col}, {"dst", &dst}}) {
    TORCH_CHECK(t->dim() == 1 && t->scalar_type() == at::kLong && t->is_contiguous() && t->device().is_cpu(),
                "relational_conv: ", name, " must be a contiguous 1-D int64 CPU tensor");
  }
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(), "relational_conv (CPU kernel): tensors must be on the CPU");
  const int64_t n = x.size(0), r = weight.size(0), k = dst.numel(), e = col.numel();
  TORCH_CHECK(rel_ptr.numel() == r + 1, "relational_conv: rel_ptr must have R+1 = ", r + 1, " entries, got ",
              rel_ptr.numel());
  TORCH_CHECK(ptr.numel() == k + 1, "relational_conv: ptr must have one more entry than dst (", k + 1, "), got ",
              ptr.numel());
  Structure s{std::vector<int64_t>(rel_ptr.data_ptr<int64_t>(), rel_ptr.data_ptr<int64_t>() + r + 1),
              ptr.data_ptr<int64_t>(), col.data_ptr<int64_t>(), dst.data_ptr<int64_t>()};
  // Value checks: O(E + K) reads, nothing next to the GEMMs, and they keep every access in bounds.
  TORCH_CHECK(s.rel.front() == 0 && s.rel.back() == k, "relational_conv: rel_ptr must run from 0 to K = ", k);
  TORCH_CHECK(s.ptr[0] >= 0 && s.ptr[k] <= e, "relational_conv: ptr values must lie in [0, ", e, "]");
  for (int64_t b = 0; b < k; ++b) {
    TORCH_CHECK(s.ptr[b] <= s.ptr[b + 1], "relational_conv: ptr must be non-decreasing (at ", b, ")");
  }
  for (int64_t i = s.ptr[0]; i < s.ptr[k]; ++i) {
    TORCH_CHECK(s.col[i] >= 0 && s.col[i] < n, "relational_conv: col[", i, "] = ", s.col[i], " is not a node in [0, ",
                n, ")");
  }
  std::vector<int64_t> seen(n, -1);
  for (int64_t rr = 0; rr < r; ++rr) {
    TORCH_CHECK(s.rel[rr] <= s.rel[rr + 1], "relational_conv: rel_ptr must be non-decreasing (at ", rr, ")");
    for (int64_t b = s.rel[rr]; b < s.rel[rr + 1]; ++b) {
      const int64_t i = s.dst[b];
      TORCH_CHECK(i >= 0 && i < n, "relational_conv: dst[", b, "] = ", i, " is not a node in [0, ", n, ")");
      TORCH_CHECK(seen[i] != rr, "relational_conv: node ", i, " has two buckets of relation ", rr);
      seen[i] = rr;
    }
  }
  return s;
}

template <typename scalar_t>
void fill(T& t, scalar_t v) {
  scalar_t* p = t.data_ptr<scalar_t>();
  std::fill(p, p + t.numel(), v);
}

// z[i] = reduce over bucket b0+i's edges of x[col[e]] (mean: each term weighted 1/|bucket|, as
// relational_aggregate does), accumulated in opmath precision in edge order.
template <typename scalar_t>
void gather(const scalar_t* x, int64_t d, const Structure& s, int64_t b0, int64_t c, bool mean, scalar_t* z) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, c, 32, [&](int64_t lo, int64_t hi) {
    std::vector<acc_t> acc(d);
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t e0 = s.ptr[b0 + i], e1 = s.ptr[b0 + i + 1];
      const acc_t w = (mean && e1 > e0) ? acc_t(1) / static_cast<acc_t>(e1 - e0) : acc_t(1);
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t e = e0; e < e1; ++e) {
        const scalar_t* xr = x + s.col[e] * d;
        for (int64_t k = 0; k < d; ++k) acc[k] += w * static_cast<acc_t>(xr[k]);
      }
      scalar_t* zr = z + i * d;
      for (int64_t k = 0; k < d; ++k) zr[k] = static_cast<scalar_t>(acc[k]);
    }
  });
}

void matmul(T& out, const T& a, const T& b) {
  if (a.size(1) == 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "relational_conv_zero",
                                    [&] { fill<scalar_t>(out, scalar_t(0)); });
  } else {
    at::cpu::mm_out(out, a, b);
  }
}

T relational_conv_cpu(const T& x_in, const T& weight_in, const OptT& root, const OptT& bias, const T& rel_ptr,
                      const T& ptr, const T& col, const T& dst, bool mean) {
  const Structure s = check_args(x_in, weight_in, root, bias, rel_ptr, ptr, col, dst);
  const T x = x_in.contiguous();
  const T weight = weight_in.contiguous();
  const int64_t n = x.size(0), d_in = x.size(1), d_out = weight.size(2), r = weight.size(0);
  T out = at::empty({n, d_out}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "relational_conv", [&] {
    if (defined(root)) {
      matmul(out, x, root->contiguous());
    } else {
      fill<scalar_t>(out, scalar_t(0));
    }
    scalar_t* o = out.data_ptr<scalar_t>();
    if (defined(bias)) {
      const T b = bias->contiguous();
      const scalar_t* bp = b.data_ptr<scalar_t>();
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < d_out; ++j) o[i * d_out + j] += bp[j];
      }
    }
    if (d_out == 0 || s.rel.back() == 0) return;
    T zbuf = at::empty({kChunk, d_in}, x.options());
    T ybuf = at::empty({kChunk, d_out}, x.options());
    for (int64_t rr = 0; rr < r; ++rr) {
      const T w = weight.select(0, rr);
      for (int64_t b0 = s.rel[rr]; b0 < s.rel[rr + 1]; b0 += kChunk) {
        const int64_t c = std::min(kChunk, s.rel[rr + 1] - b0);
        T z = zbuf.narrow(0, 0, c);
        T y = ybuf.narrow(0, 0, c);
        gather<scalar_t>(x.data_ptr<scalar_t>(), d_in, s, b0, c, mean, z.data_ptr<scalar_t>());
        matmul(y, z, w);
        const scalar_t* yp = y.data_ptr<scalar_t>();
        // One bucket per node per relation: rows never collide, any thread split is exact.
        at::parallel_for(0, c, 64, [&](int64_t lo, int64_t hi) {
          for (int64_t i = lo; i < hi; ++i) {
            scalar_t* orow = o + s.dst[b0 + i] * d_out;
            const scalar_t* yrow = yp + i * d_out;
            for (int64_t j = 0; j < d_out; ++j) orow[j] += yrow[j];
          }
        });
      }
    }
  });
  return out;
}

std::tuple<T, T, T, T> relational_conv_backward_cpu(const T& grad_in, const T& x_in, const T& weight_in,
                                                    const OptT& root, bool has_bias, const T& rel_ptr, const T& ptr,
                                                    const T& col, const T& dst, bool mean) {
  const Structure s = check_args(x_in, weight_in, root, c10::nullopt, rel_ptr, ptr, col, dst);
  const T x = x_in.contiguous();
  const T weight = weight_in.contiguous();
  const T grad = grad_in.contiguous();
  const int64_t n = x.size(0), d_in = x.size(1), d_out = weight.size(2), r = weight.size(0);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == n && grad.size(1) == d_out && grad.scalar_type() == x.scalar_type(),
              "relational_conv_backward: grad must be [", n, ", ", d_out, "] in x's dtype");
  T gx = at::empty({n, d_in}, x.options());
  T gw = at::empty(weight.sizes(), weight.options());
  T groot = defined(root) ? at::empty({d_in, d_out}, x.options()) : at::empty({0}, x.options());
  T gb = has_bias ? at::empty({d_out}, x.options()) : at::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "relational_conv_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (defined(root)) {
      matmul(gx, grad, root->contiguous().t());
      matmul(groot, x.t(), grad);
    } else {
      fill<scalar_t>(gx, scalar_t(0));
    }
    if (has_bias) {
      const scalar_t* gp = grad.data_ptr<scalar_t>();
      std::vector<acc_t> acc(d_out, acc_t(0));
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < d_out; ++j) acc[j] += static_cast<acc_t>(gp[i * d_out + j]);
      }
      scalar_t* db = gb.data_ptr<scalar_t>();
      for (int64_t j = 0; j < d_out; ++j) db[j] = static_cast<scalar_t>(acc[j]);
    }
    T zbuf = at::empty({kChunk, d_in}, x.options());
    T gbuf = at::empty({kChunk, d_out}, x.options());
    T dzbuf = at::empty({kChunk, d_in}, x.options());
    const scalar_t* gp = grad.data_ptr<scalar_t>();
    scalar_t* gxp = gx.data_ptr<scalar_t>();
    for (int64_t rr = 0; rr < r; ++rr) {
      T gw_r = gw.select(0, rr);
      const T w = weight.select(0, rr);
      bool first = true;
      for (int64_t b0 = s.rel[rr]; b0 < s.rel[rr + 1]; b0 += kChunk) {
        const int64_t c = std::min(kChunk, s.rel[rr + 1] - b0);
        T z = zbuf.narrow(0, 0, c);
        T g = gbuf.narrow(0, 0, c);
        T dz = dzbuf.narrow(0, 0, c);
        gather<scalar_t>(x.data_ptr<scalar_t>(), d_in, s, b0, c, mean, z.data_ptr<scalar_t>());
        scalar_t* g_rows = g.data_ptr<scalar_t>();
        at::parallel_for(0, c, 64, [&](int64_t lo, int64_t hi) {
          for (int64_t i = lo; i < hi; ++i) {
            std::memcpy(g_rows + i * d_out, gp + s.dst[b0 + i] * d_out, sizeof(scalar_t) * d_out);
          }
        });
        if (d_in > 0 && d_out > 0) {
          if (first) {
            at::cpu::mm_out(gw_r, z.t(), g);
          } else {
            at::cpu::addmm_out(gw_r, gw_r, z.t(), g, 1, 1);  // out is self: no copy, in place
          }
          first = false;
        }
        if (d_in == 0) continue;
        matmul(dz, g, w.t());
        const scalar_t* dzp = dz.data_ptr<scalar_t>();
        // dx[col[e]] += w_b * dz[b] over the chunk's edges: threads split the feature columns, so
        // every element is summed in edge order by exactly one thread.
        at::parallel_for(0, d_in, 16, [&](int64_t k0, int64_t k1) {
          for (int64_t i = 0; i < c; ++i) {
            const int64_t e0 = s.ptr[b0 + i], e1 = s.ptr[b0 + i + 1];
            if (e1 == e0) continue;
            const acc_t wb = mean ? acc_t(1) / static_cast<acc_t>(e1 - e0) : acc_t(1);
            const scalar_t* dzr = dzp + i * d_in;
            for (int64_t e = e0; e < e1; ++e) {
              scalar_t* gxr = gxp + s.col[e] * d_in;
              for (int64_t k = k0; k < k1; ++k) {
                gxr[k] = static_cast<scalar_t>(static_cast<acc_t>(gxr[k]) + wb * static_cast<acc_t>(dzr[k]));
              }
            }
          }
        });
      }
      if (first) fill<scalar_t>(gw_r, scalar_t(0));  // no bucket of this relation (or no features)
    }
  });
  return {gx, gw, groot, gb};
}

}  // namespace
}  // namespace relational_conv
}  // namespace hotspot_erc

TORCH_LIBRARY_IMPL(hotspot_erc, CPU, m) {
  m.impl("relational_conv", &hotspot_erc::relational_conv::relational_conv_cpu);
  m.impl("relational_conv_backward", &hotspot_erc::relational_conv::relational_conv_backward_cpu);
}
