// Schema of attention over incoming graph edges (DESIGN §3.8), the CPU kernels behind
// hotspot_erc.ops.graph_attention (which owns autograd and the Triton path for CUDA tensors).
//
// graph_attention_forward(q [Nd, H, D], k [Ns, H, D], v [Ns, H, D], edge [E, H, D]?, mask [E, H]?,
//                         rowptr [Nd+1], col [E], eid [E], scale, need_alpha) -> (out, lse, alpha):
//   for destination i and head h, over the edges p in [rowptr[i], rowptr[i+1]) (source col[p],
//   original edge id eid[p]): s_p = scale * q_i . (k_col[p] + edge_eid[p]); alpha = softmax of s
//   over i's edges; out_i = sum_p alpha_p * mask_eid[p] * (v_col[p] + edge_eid[p]); lse_i = log sum
//   exp s (-inf without edges, where out_i = 0). alpha [E, H] (float32, float64 for float64) is in
//   original edge order, empty unless need_alpha.
// graph_attention_backward(grad_out, q, k, v, edge?, mask?, out, lse, rowptr, col, eid, t_rowptr
//                          [Ns+1], t_dst [E], t_eid [E], scale, need_edge_grad) -> (dq, dk, dv, dedge):
//   (t_rowptr, t_dst, t_eid) are the same edges grouped by source; dedge is empty unless
//   need_edge_grad and edge is given.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(hotspot_erc, m) {
  m.def(
      "graph_attention_forward(Tensor q, Tensor k, Tensor v, Tensor? edge, Tensor? mask, Tensor rowptr, "
      "Tensor col, Tensor eid, float scale, bool need_alpha) -> (Tensor, Tensor, Tensor)");
  m.def(
      "graph_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor? edge, Tensor? mask, "
      "Tensor out, Tensor lse, Tensor rowptr, Tensor col, Tensor eid, Tensor t_rowptr, Tensor t_dst, "
      "Tensor t_eid, float scale, bool need_edge_grad) -> (Tensor, Tensor, Tensor, Tensor)");
}
