// CPU kernels of hotspot_erc::graph_attention_forward / _backward (schema.cpp).
//
// One destination node per task. A conversation graph gives each node tens of incoming edges, so a
// task scores all of its edges into a small buffer, then forms the softmax and the message in a
// second pass over the same rows: no running rescale of the accumulator, and the weights it
// returns are exact. Keys, values and edge rows are read where they lie, through the source index
// and the edge id: no [E, H, D] tensor exists. The backward's first pass (per destination) writes
// dq, the edge gradient and two [E, H] per-edge terms (the kept probability and the score
// gradient); its second pass (per source, over the transposed CSR) sums dk and dv from them.
//
// Every output row is written by one task, its terms added in CSR order, and the dot products
// keep eight fixed partial sums: the results are the same at any thread count and on any build,
// with no atomics.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

namespace hotspot_erc {
namespace graph_attention {
namespace {

using T = at::Tensor;
using OptT = c10::optional<at::Tensor>;

bool defined(const OptT& t) { return t.has_value() && t->defined(); }

// ---------------------------------------------------------------------------------- checks

void check_index(const char* name, const T& t) {
  TORCH_CHECK(t.dim() == 1 && t.scalar_type() == at::kLong && t.device().is_cpu(), "graph_attention: ", name,
              " must be a 1-D int64 CPU tensor, got ", t.dim(), "-D ", t.scalar_type(), " on ", t.device());
  TORCH_CHECK(t.is_contiguous(), "graph_attention: ", name, " must be contiguous");
}

void check_dense(const char* name, const T& t, const T& like, int64_t dim, bool any_row_stride = false) {
  TORCH_CHECK(t.dim() == dim, "graph_attention: ", name, " must be ", dim, "-D, got ", t.dim(), "-D");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "graph_attention: ", name, " must have q's dtype ",
              like.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.device().is_cpu(), "graph_attention (CPU kernel): ", name, " must be a CPU tensor, got ", t.device());
  if (any_row_stride) {
    // Rows of a wider matrix (e.g. slices of one fused projection) are read in place: each row's
    // [H, D] block must be dense.
    TORCH_CHECK(t.size(0) == 0 || t[0].numel() == 0 || (t[0].is_contiguous() && t.stride(0) >= t[0].numel()),
                "graph_attention: ", name, " must have dense [H, D] rows (any row stride), got strides ", t.strides());
  } else {
    TORCH_CHECK(t.is_contiguous(), "graph_attention: ", name, " must be contiguous");
  }
}

// A CSR over `rows` nodes of all E edges: rowptr runs from 0 to E without decreasing, every
// neighbour lies in [0, others), and the edge ids are a permutation of [0, E) (so the per-edge
// outputs, written through them, are each written once).
void check_csr(const char* what, const T& rowptr, const T& nbr, const T& ids, int64_t rows, int64_t others) {
  const int64_t E = nbr.numel();
  TORCH_CHECK(rowptr.numel() == rows + 1, "graph_attention: ", what, " pointer must have ", rows + 1,
              " entries, got ", rowptr.numel());
  TORCH_CHECK(ids.numel() == E, "graph_attention: ", what, " edge ids must have one entry per edge (", E,
              "), got ", ids.numel());
  const int64_t* p = rowptr.data_ptr<int64_t>();
  TORCH_CHECK(p[0] == 0 && p[rows] == E, "graph_attention: ", what, " pointer must run from 0 to ", E, ", got ",
              p[0], " .. ", p[rows]);
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(p[r] <= p[r + 1], "graph_attention: ", what, " pointer must be non-decreasing (at ", r, ")");
  }
  const int64_t* n = nbr.data_ptr<int64_t>();
  const int64_t* id = ids.data_ptr<int64_t>();
  std::vector<char> seen(E, 0);
  for (int64_t e = 0; e < E; ++e) {
    TORCH_CHECK(n[e] >= 0 && n[e] < others, "graph_attention: ", what, " neighbour ", e, " = ", n[e],
                " is out of range [0, ", others, ")");
    TORCH_CHECK(id[e] >= 0 && id[e] < E && !seen[id[e]], "graph_attention: ", what, " edge ids must be a "
                "permutation of [0, ", E, "), entry ", e, " = ", id[e]);
    seen[id[e]] = 1;
  }
}

struct Shapes {
  int64_t nd, ns, heads, dim, edges;
};

Shapes check_inputs(const T& q, const T& k, const T& v, const OptT& edge, const OptT& mask, const T& rowptr,
                    const T& col, const T& eid) {
  TORCH_CHECK(q.dim() == 3, "graph_attention: q must be [N_dst, H, D], got ", q.dim(), "-D");
  const auto st = q.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "graph_attention: q must be float32, float64, float16 or bfloat16, got ", st);
  check_dense("q", q, q, 3, true);
  check_dense("k", k, q, 3, true);
  check_dense("v", v, q, 3, true);
  TORCH_CHECK(k.size(1) == q.size(1) && k.size(2) == q.size(2), "graph_attention: k must be [N_src, ", q.size(1),
              ", ", q.size(2), "] like q's heads and head dim, got ", k.sizes());
  TORCH_CHECK(v.sizes() == k.sizes(), "graph_attention: v must have k's shape ", k.sizes(), ", got ", v.sizes());
  check_index("rowptr", rowptr);
  check_index("col", col);
  check_index("eid", eid);
  Shapes s{q.size(0), k.size(0), q.size(1), q.size(2), col.numel()};
  if (defined(edge)) {
    check_dense("edge", *edge, q, 3);
    TORCH_CHECK(edge->size(0) == s.edges && edge->size(1) == s.heads && edge->size(2) == s.dim,
                "graph_attention: edge must be [E=", s.edges, ", ", s.heads, ", ", s.dim, "], got ", edge->sizes());
  }
  if (defined(mask)) {
    TORCH_CHECK(mask->dim() == 2 && mask->size(0) == s.edges && mask->size(1) == s.heads,
                "graph_attention: mask must be [E=", s.edges, ", H=", s.heads, "], got ", mask->sizes());
    TORCH_CHECK(at::isFloatingType(mask->scalar_type()) && mask->device().is_cpu(),
                "graph_attention: mask must be a floating-point CPU tensor, got ", mask->scalar_type(), " on ",
                mask->device());
  }
  check_csr("destination", rowptr, col, eid, s.nd, s.ns);
  return s;
}

at::ScalarType stat_type(const T& q) { return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// ---------------------------------------------------------------------------------- row math

// a . b with eight fixed partial sums (vectorisable without reassociation: same value everywhere).
template <typename S, typename A>
inline A dot(const S* a, const S* b, int64_t n) {
  A s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) {
    for (int u = 0; u < 8; ++u) s[u] += A(a[d + u]) * A(b[d + u]);
  }
  A tail = 0;
  for (; d < n; ++d) tail += A(a[d]) * A(b[d]);
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])) + tail;
}

// a . (b + c), c optional (an edge row added to a key or value row).
template <typename S, typename A>
inline A dot_plus(const S* a, const S* b, const S* c, int64_t n) {
  if (c == nullptr) return dot<S, A>(a, b, n);
  A s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) {
    for (int u = 0; u < 8; ++u) s[u] += A(a[d + u]) * (A(b[d + u]) + A(c[d + u]));
  }
  A tail = 0;
  for (; d < n; ++d) tail += A(a[d]) * (A(b[d]) + A(c[d]));
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])) + tail;
}

// acc += w * (b + c), c optional.
template <typename S, typename A>
inline void axpy_plus(A* acc, A w, const S* b, const S* c, int64_t n) {
  if (c == nullptr) {
    for (int64_t d = 0; d < n; ++d) acc[d] += w * A(b[d]);
  } else {
    for (int64_t d = 0; d < n; ++d) acc[d] += w * (A(b[d]) + A(c[d]));
  }
}

template <typename S, typename A>
inline void store(S* dst, const A* src, int64_t n) {
  for (int64_t d = 0; d < n; ++d) dst[d] = static_cast<S>(src[d]);
}

// Rows per task: enough work to amortise the hand-off between threads.
int64_t grain(int64_t row_elems) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(row_elems, 1)); }

// ---------------------------------------------------------------------------------- row loops

template <typename S, typename A>
struct Args {
  const S *q, *k, *v, *edge, *grad, *out;
  const A *mask, *lse;
  const int64_t *rowptr, *col, *eid, *t_rowptr, *t_dst, *t_eid;
  S *dst_out, *dq, *dk, *dv, *dedge;
  A *lse_out, *alpha, *kept, *dscore;
  int64_t heads, dim;
  int64_t q_row, k_row, v_row;  // row strides (elements) of q, k, v
  A scale;
};

#define HOTSPOT_ALWAYS_INLINE inline __attribute__((always_inline))

// Destinations [begin, end) of the forward.
template <typename S, typename A>
HOTSPOT_ALWAYS_INLINE void forward_rows(const Args<S, A>& a, int64_t begin, int64_t end) {
  const int64_t H = a.heads, D = a.dim, HD = H * D;
  std::vector<A> w, acc(HD), peak(H), total(H);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t p0 = a.rowptr[i], deg = a.rowptr[i + 1] - p0;
    if (deg == 0) {
      std::fill(a.dst_out + i * HD, a.dst_out + (i + 1) * HD, S(0));
      std::fill(a.lse_out + i * H, a.lse_out + (i + 1) * H, -std::numeric_limits<A>::infinity());
      continue;
    }
    const S* qi = a.q + i * a.q_row;
    w.resize(deg * H);
    std::fill(peak.begin(), peak.end(), -std::numeric_limits<A>::infinity());
    for (int64_t p = 0; p < deg; ++p) {
      const S* kj = a.k + a.col[p0 + p] * a.k_row;
      const S* ee = a.edge ? a.edge + a.eid[p0 + p] * HD : nullptr;
      for (int64_t h = 0; h < H; ++h) {
        const A sv = dot_plus<S, A>(qi + h * D, kj + h * D, ee ? ee + h * D : nullptr, D) * a.scale;
        w[p * H + h] = sv;
        peak[h] = std::max(peak[h], sv);
      }
    }
    std::fill(total.begin(), total.end(), A(0));
    for (int64_t p = 0; p < deg; ++p) {
      for (int64_t h = 0; h < H; ++h) {
        w[p * H + h] = std::exp(w[p * H + h] - peak[h]);
        total[h] += w[p * H + h];
      }
    }
    for (int64_t h = 0; h < H; ++h) a.lse_out[i * H + h] = peak[h] + std::log(total[h]);
    std::fill(acc.begin(), acc.end(), A(0));
    for (int64_t p = 0; p < deg; ++p) {
      const int64_t e = a.eid[p0 + p];
      const S* vj = a.v + a.col[p0 + p] * a.v_row;
      const S* ee = a.edge ? a.edge + e * HD : nullptr;
      for (int64_t h = 0; h < H; ++h) {
        A wt = w[p * H + h] / total[h];
        if (a.alpha) a.alpha[e * H + h] = wt;
        if (a.mask) wt *= a.mask[e * H + h];
        axpy_plus<S, A>(acc.data() + h * D, wt, vj + h * D, ee ? ee + h * D : nullptr, D);
      }
    }
    store(a.dst_out + i * HD, acc.data(), HD);
  }
}

// Destinations [begin, end) of the backward's first pass: dq, the edge gradient, per-edge terms.
template <typename S, typename A>
HOTSPOT_ALWAYS_INLINE void backward_dst_rows(const Args<S, A>& a, int64_t begin, int64_t end) {
  const int64_t H = a.heads, D = a.dim, HD = H * D;
  std::vector<A> acc(HD), delta(H);
  for (int64_t i = begin; i < end; ++i) {
    const S* qi = a.q + i * a.q_row;
    const S* gi = a.grad + i * HD;
    for (int64_t h = 0; h < H; ++h) delta[h] = dot<S, A>(gi + h * D, a.out + i * HD + h * D, D);
    std::fill(acc.begin(), acc.end(), A(0));
    for (int64_t p = a.rowptr[i]; p < a.rowptr[i + 1]; ++p) {
      const int64_t e = a.eid[p];
      const S* kj = a.k + a.col[p] * a.k_row;
      const S* vj = a.v + a.col[p] * a.v_row;
      const S* ee = a.edge ? a.edge + e * HD : nullptr;
      for (int64_t h = 0; h < H; ++h) {
        const S* eh = ee ? ee + h * D : nullptr;
        const A prob = std::exp(dot_plus<S, A>(qi + h * D, kj + h * D, eh, D) * a.scale - a.lse[i * H + h]);
        const A m = a.mask ? a.mask[e * H + h] : A(1);
        const A g = m * dot_plus<S, A>(gi + h * D, vj + h * D, eh, D);
        const A ds = prob * (g - delta[h]);
        a.kept[e * H + h] = prob * m;
        a.dscore[e * H + h] = ds;
        axpy_plus<S, A>(acc.data() + h * D, ds * a.scale, kj + h * D, eh, D);
        if (a.dedge) {
          S* de = a.dedge + e * HD + h * D;
          const A pm = prob * m, dss = ds * a.scale;
          for (int64_t d = 0; d < D; ++d) de[d] = static_cast<S>(pm * A(gi[h * D + d]) + dss * A(qi[h * D + d]));
        }
      }
    }
    store(a.dq + i * HD, acc.data(), HD);
  }
}

// Sources [begin, end) of the backward's second pass: dk and dv over each source's out-edges.
template <typename S, typename A>
HOTSPOT_ALWAYS_INLINE void backward_src_rows(const Args<S, A>& a, int64_t begin, int64_t end) {
  const int64_t H = a.heads, D = a.dim, HD = H * D;
  std::vector<A> ak(HD), av(HD);
  for (int64_t j = begin; j < end; ++j) {
    std::fill(ak.begin(), ak.end(), A(0));
    std::fill(av.begin(), av.end(), A(0));
    for (int64_t p = a.t_rowptr[j]; p < a.t_rowptr[j + 1]; ++p) {
      const int64_t e = a.t_eid[p], i = a.t_dst[p];
      for (int64_t h = 0; h < H; ++h) {
        axpy_plus<S, A>(ak.data() + h * D, a.dscore[e * H + h] * a.scale, a.q + i * a.q_row + h * D, nullptr, D);
        axpy_plus<S, A>(av.data() + h * D, a.kept[e * H + h], a.grad + i * HD + h * D, nullptr, D);
      }
    }
    store(a.dk + j * HD, ak.data(), HD);
    store(a.dv + j * HD, av.data(), HD);
  }
}

// float32 copies of the loops compiled for AVX2, chosen at run time. AVX2 without FMA: the same
// products and the same eight partial sums as the baseline build, so the same bits on every CPU.
using F = Args<float, float>;
__attribute__((target("avx2"))) void forward_rows_avx2(const F& a, int64_t b, int64_t e) { forward_rows(a, b, e); }
__attribute__((target("avx2"))) void backward_dst_rows_avx2(const F& a, int64_t b, int64_t e) {
  backward_dst_rows(a, b, e);
}
__attribute__((target("avx2"))) void backward_src_rows_avx2(const F& a, int64_t b, int64_t e) {
  backward_src_rows(a, b, e);
}

bool has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool ok = __builtin_cpu_supports("avx2");
  return ok;
#else
  return false;
#endif
}

enum class Pass { kForward, kBackwardDst, kBackwardSrc };

template <typename S, typename A>
void run_pass(Pass pass, const Args<S, A>& a, int64_t rows) {
  const int64_t g = grain(a.heads * a.dim);
  at::parallel_for(0, rows, g, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<S, float>) {
      if (has_avx2()) {
        if (pass == Pass::kForward) forward_rows_avx2(a, begin, end);
        else if (pass == Pass::kBackwardDst) backward_dst_rows_avx2(a, begin, end);
        else backward_src_rows_avx2(a, begin, end);
        return;
      }
    }
    if (pass == Pass::kForward) forward_rows(a, begin, end);
    else if (pass == Pass::kBackwardDst) backward_dst_rows(a, begin, end);
    else backward_src_rows(a, begin, end);
  });
}

template <typename S>
const S* ptr_or_null(const OptT& t) {
  return defined(t) ? t->data_ptr<S>() : nullptr;
}

// The inputs both entry points share: q, k, v (read at their row strides), the optional edge rows
// and mask, the destination CSR, the shape and the scale.
template <typename S, typename A>
Args<S, A> input_args(const T& q, const T& k, const T& v, const OptT& edge, const T& maskc, const T& rowptr,
                      const T& col, const T& eid, const Shapes& s, double scale) {
  Args<S, A> a{};
  a.q = q.data_ptr<S>();
  a.k = k.data_ptr<S>();
  a.v = v.data_ptr<S>();
  a.edge = ptr_or_null<S>(edge);
  a.mask = maskc.defined() ? maskc.data_ptr<A>() : nullptr;
  a.rowptr = rowptr.data_ptr<int64_t>();
  a.col = col.data_ptr<int64_t>();
  a.eid = eid.data_ptr<int64_t>();
  a.heads = s.heads;
  a.dim = s.dim;
  a.q_row = q.size(0) > 1 ? q.stride(0) : s.heads * s.dim;
  a.k_row = k.size(0) > 1 ? k.stride(0) : s.heads * s.dim;
  a.v_row = v.size(0) > 1 ? v.stride(0) : s.heads * s.dim;
  a.scale = static_cast<A>(scale);
  return a;
}

// ---------------------------------------------------------------------------------- entry points

std::tuple<T, T, T> forward_cpu(const T& q, const T& k, const T& v, const OptT& edge, const OptT& mask,
                                const T& rowptr, const T& col, const T& eid, double scale, bool need_alpha) {
  const Shapes s = check_inputs(q, k, v, edge, mask, rowptr, col, eid);
  const auto stats = stat_type(q);
  T out = at::empty(q.sizes(), q.options());
  T lse = at::empty({s.nd, s.heads}, q.options().dtype(stats));
  T alpha = at::empty({need_alpha ? s.edges : 0, s.heads}, q.options().dtype(stats));
  if (s.nd == 0 || s.heads == 0) return {out, lse, alpha};
  const T maskc = defined(mask) ? mask->to(stats).contiguous() : T();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "graph_attention_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto a = input_args<scalar_t, acc_t>(q, k, v, edge, maskc, rowptr, col, eid, s, scale);
    a.dst_out = out.data_ptr<scalar_t>();
    a.lse_out = lse.data_ptr<acc_t>();
    a.alpha = need_alpha ? alpha.data_ptr<acc_t>() : nullptr;
    run_pass(Pass::kForward, a, s.nd);
  });
  return {out, lse, alpha};
}

std::tuple<T, T, T, T> backward_cpu(const T& grad_out, const T& q, const T& k, const T& v, const OptT& edge,
                                    const OptT& mask, const T& out, const T& lse, const T& rowptr, const T& col,
                                    const T& eid, const T& t_rowptr, const T& t_dst, const T& t_eid, double scale,
                                    bool need_edge_grad) {
  const Shapes s = check_inputs(q, k, v, edge, mask, rowptr, col, eid);
  check_dense("grad_out", grad_out, q, 3);
  check_dense("out", out, q, 3);
  TORCH_CHECK(grad_out.sizes() == q.sizes() && out.sizes() == q.sizes(), "graph_attention: grad_out and out must "
              "have q's shape ", q.sizes());
  const auto stats = stat_type(q);
  TORCH_CHECK(lse.dim() == 2 && lse.size(0) == s.nd && lse.size(1) == s.heads && lse.scalar_type() == stats &&
                  lse.is_contiguous() && lse.device().is_cpu(),
              "graph_attention: lse must be a contiguous [", s.nd, ", ", s.heads, "] ", stats, " CPU tensor");
  check_index("t_rowptr", t_rowptr);
  check_index("t_dst", t_dst);
  check_index("t_eid", t_eid);
  check_csr("source", t_rowptr, t_dst, t_eid, s.ns, s.nd);

  const bool edge_grad = need_edge_grad && defined(edge);
  T dq = at::empty(q.sizes(), q.options()), dk = at::empty(k.sizes(), k.options()),
    dv = at::empty(v.sizes(), v.options());
  T dedge = edge_grad ? at::empty(edge->sizes(), edge->options()) : at::empty({0}, q.options());
  if (s.heads * s.dim == 0) return {dq, dk, dv, dedge};
  // Per edge, in original order: the kept probability p * m and the score gradient.
  T kept = at::empty({s.edges, s.heads}, q.options().dtype(stats));
  T dscore = at::empty({s.edges, s.heads}, q.options().dtype(stats));
  const T maskc = defined(mask) ? mask->to(stats).contiguous() : T();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "graph_attention_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto a = input_args<scalar_t, acc_t>(q, k, v, edge, maskc, rowptr, col, eid, s, scale);
    a.grad = grad_out.data_ptr<scalar_t>();
    a.out = out.data_ptr<scalar_t>();
    a.lse = lse.data_ptr<acc_t>();
    a.t_rowptr = t_rowptr.data_ptr<int64_t>();
    a.t_dst = t_dst.data_ptr<int64_t>();
    a.t_eid = t_eid.data_ptr<int64_t>();
    a.dq = dq.data_ptr<scalar_t>();
    a.dk = dk.data_ptr<scalar_t>();
    a.dv = dv.data_ptr<scalar_t>();
    a.dedge = edge_grad ? dedge.data_ptr<scalar_t>() : nullptr;
    a.kept = kept.data_ptr<acc_t>();
    a.dscore = dscore.data_ptr<acc_t>();
    run_pass(Pass::kBackwardDst, a, s.nd);
    run_pass(Pass::kBackwardSrc, a, s.ns);
  });
  return {dq, dk, dv, dedge};
}

}  // namespace

TORCH_LIBRARY_IMPL(hotspot_erc, CPU, m) {
  m.impl("graph_attention_forward", &forward_cpu);
  m.impl("graph_attention_backward", &backward_cpu);
}

}  // namespace graph_attention
}  // namespace hotspot_erc
