// CPU kernels of hotspot_erc::segment_matmul: one GEMM per group through ATen's CPU matmul kernel
// called directly (at::cpu::mm_out, not through the dispatcher): the op is one kernel launch,
// as its CUDA counterpart is, and every group's product uses the same BLAS as torch.mm.
// Deterministic: each output element is written by exactly one GEMM; the bias gradient sums rows
// in order.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace hotspot_erc {
namespace segment_matmul {
namespace {

struct Groups {
  std::vector<int64_t> ptr;  // host copy of ptr (a CPU tensor: no sync)
  bool has_root;
};

Groups check_args(const at::Tensor& a, const at::Tensor& ptr, const at::Tensor& weight,
                  const c10::optional<at::Tensor>& root, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(a.dim() == 2, "segment_matmul: a must be 2-D [rows, in], got ", a.dim(), " dimensions");
  const auto st = a.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "segment_matmul: a must be float32, float64, float16 or bfloat16, got ", st);
  TORCH_CHECK(weight.dim() == 3 && weight.size(1) == a.size(1) && weight.scalar_type() == st,
              "segment_matmul: weight must be [G, in=", a.size(1), ", out] in a's dtype, got ", weight.sizes(), " ",
              weight.scalar_type());
  TORCH_CHECK(ptr.dim() == 1 && ptr.scalar_type() == at::kLong && ptr.is_contiguous(),
              "segment_matmul: ptr must be a contiguous 1-D int64 tensor");
  const bool has_root = root.has_value() && root->defined();
  const int64_t groups = weight.size(0) + (has_root ? 1 : 0);
  TORCH_CHECK(ptr.numel() == groups + 1, "segment_matmul: ptr must have ", groups + 1, " entries (",
              weight.size(0), " weights", has_root ? " + the root group" : "", "), got ", ptr.numel());
  if (has_root) {
    TORCH_CHECK(root->dim() == 2 && root->size(0) == a.size(1) && root->size(1) == weight.size(2) &&
                    root->scalar_type() == st,
                "segment_matmul: root must be [in, out] = [", a.size(1), ", ", weight.size(2), "] in a's dtype");
  }
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(has_root, "segment_matmul: bias is added to the root group: pass root with it");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(2) && bias->scalar_type() == st,
                "segment_matmul: bias must be [out] = [", weight.size(2), "] in a's dtype");
  }
  for (const auto* t : {&a, &ptr, &weight}) {
    TORCH_CHECK(t->device().is_cpu(), "segment_matmul (CPU kernel): every tensor must be on the CPU");
  }
  Groups g{std::vector<int64_t>(ptr.data_ptr<int64_t>(), ptr.data_ptr<int64_t>() + ptr.numel()), has_root};
  TORCH_CHECK(g.ptr.front() >= 0 && g.ptr.back() <= a.size(0), "segment_matmul: ptr values must lie in [0, ",
              a.size(0), "]");
  for (size_t i = 0; i + 1 < g.ptr.size(); ++i) {
    TORCH_CHECK(g.ptr[i] <= g.ptr[i + 1], "segment_matmul: ptr must be non-decreasing (at ", i, ")");
  }
  return g;
}

// Zero rows [r0, r1) of a contiguous 2-D tensor without dispatching a kernel.
void zero_rows(at::Tensor& t, int64_t r0, int64_t r1) {
  if (r1 <= r0 || t.size(1) == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "segment_matmul_zero", [&] {
    scalar_t* p = t.data_ptr<scalar_t>() + r0 * t.size(1);
    std::fill(p, p + (r1 - r0) * t.size(1), scalar_t(0));
  });
}

at::Tensor segment_matmul_cpu(const at::Tensor& a_in, const at::Tensor& ptr, const at::Tensor& weight_in,
                              const c10::optional<at::Tensor>& root_in, const c10::optional<at::Tensor>& bias,
                              const c10::optional<at::Tensor>& /*tiles*/) {
  const Groups g = check_args(a_in, ptr, weight_in, root_in, bias);
  const at::Tensor a = a_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  const int64_t m = a.size(0), n_out = weight.size(2);
  at::Tensor out = at::empty({m, n_out}, a.options());
  zero_rows(out, 0, g.ptr.front());
  zero_rows(out, g.ptr.back(), m);
  const int64_t groups = static_cast<int64_t>(g.ptr.size()) - 1;
  for (int64_t k = 0; k < groups; ++k) {
    const int64_t r0 = g.ptr[k], r1 = g.ptr[k + 1];
    if (r1 == r0) continue;
    at::Tensor dst = out.narrow(0, r0, r1 - r0);
    const at::Tensor w = (g.has_root && k == 0) ? *root_in : weight.select(0, g.has_root ? k - 1 : k);
    if (a.size(1) == 0) {
      zero_rows(out, r0, r1);
    } else {
      at::cpu::mm_out(dst, a.narrow(0, r0, r1 - r0), w);
    }
    if (g.has_root && k == 0 && bias.has_value() && bias->defined()) {
      // Added in place here (at::cpu::addmm_out would dispatch a copy of the bias first): the
      // same rounding as torch.mm followed by + bias.
      const at::Tensor b = bias->contiguous();
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "segment_matmul_bias", [&] {
        const scalar_t* bp = b.data_ptr<scalar_t>();
        scalar_t* o = out.data_ptr<scalar_t>();
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t j = 0; j < n_out; ++j) o[r * n_out + j] += bp[j];
        }
      });
    }
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> segment_matmul_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& a_in, const at::Tensor& ptr, const at::Tensor& weight_in,
    const c10::optional<at::Tensor>& root_in, bool has_bias, const c10::optional<at::Tensor>& /*tiles*/) {
  const Groups g = check_args(a_in, ptr, weight_in, root_in, c10::nullopt);
  TORCH_CHECK(!has_bias || g.has_root, "segment_matmul_backward: has_bias needs the root group");
  const at::Tensor a = a_in.contiguous();
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor grad = grad_in.contiguous();
  const int64_t m = a.size(0), n_in = a.size(1), n_out = weight.size(2);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == m && grad.size(1) == n_out && grad.scalar_type() == a.scalar_type(),
              "segment_matmul_backward: grad must be [", m, ", ", n_out, "] in a's dtype");
  at::Tensor grad_a = at::empty({m, n_in}, a.options());
  at::Tensor grad_w = at::empty(weight.sizes(), weight.options());
  at::Tensor grad_root = g.has_root ? at::empty({n_in, n_out}, a.options()) : at::empty({0}, a.options());
  at::Tensor grad_bias = has_bias ? at::empty({n_out}, a.options()) : at::empty({0}, a.options());
  zero_rows(grad_a, 0, g.ptr.front());
  zero_rows(grad_a, g.ptr.back(), m);
  const int64_t groups = static_cast<int64_t>(g.ptr.size()) - 1;
  for (int64_t k = 0; k < groups; ++k) {
    const int64_t r0 = g.ptr[k], r1 = g.ptr[k + 1];
    const bool is_root = g.has_root && k == 0;
    at::Tensor gw = is_root ? grad_root : grad_w.select(0, g.has_root ? k - 1 : k);
    const at::Tensor w = is_root ? root_in->contiguous() : weight.select(0, g.has_root ? k - 1 : k);
    if (r1 == r0 || n_out == 0) {
      // No rows (or no output features): zero weight gradient, zero input gradient rows.
      if (gw.numel()) zero_rows(gw, 0, n_in);
      zero_rows(grad_a, r0, r1);
    } else {
      const at::Tensor a_g = a.narrow(0, r0, r1 - r0);
      const at::Tensor g_g = grad.narrow(0, r0, r1 - r0);
      if (n_in > 0) {
        at::Tensor da = grad_a.narrow(0, r0, r1 - r0);
        at::cpu::mm_out(da, g_g, w.t());
        at::cpu::mm_out(gw, a_g.t(), g_g);
      }
    }
    if (is_root && has_bias) {
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "segment_matmul_dbias", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const scalar_t* gp = grad.data_ptr<scalar_t>();
        scalar_t* db = grad_bias.data_ptr<scalar_t>();
        std::vector<acc_t> acc(n_out, acc_t(0));
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t j = 0; j < n_out; ++j) acc[j] += static_cast<acc_t>(gp[r * n_out + j]);
        }
        for (int64_t j = 0; j < n_out; ++j) db[j] = static_cast<scalar_t>(acc[j]);
      });
    }
  }
  return {grad_a, grad_w, grad_root, grad_bias};
}

}  // namespace
}  // namespace segment_matmul
}  // namespace hotspot_erc

TORCH_LIBRARY_IMPL(hotspot_erc, CPU, m) {
  m.impl("segment_matmul", &hotspot_erc::segment_matmul::segment_matmul_cpu);
  m.impl("segment_matmul_backward", &hotspot_erc::segment_matmul::segment_matmul_backward_cpu);
}
