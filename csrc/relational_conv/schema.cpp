// Schema of the fused relational convolution RGCNConv runs on the CPU:
//
// relational_conv(x [N, in], weight [R, in, out], root [in, out]?, bias [out]?, rel_ptr [R+1],
//                 ptr [K+1], col [E'], dst [K], mean) -> [N, out]:
//   out[i] = x_i @ root + bias + sum over the K non-empty (node, relation) buckets b with
//            dst[b] = i of (reduce_{e in [ptr[b], ptr[b+1])} x[col[e]]) @ weight[r(b)],
//   where buckets [rel_ptr[r], rel_ptr[r+1]) belong to relation r (relation-major, each node at
//   most once per relation) and reduce is the mean (mean=true) or the sum of the bucket's edges.
// relational_conv_backward(grad, x, weight, root?, has_bias, rel_ptr, ptr, col, dst, mean) ->
//   (grad_x, grad_weight, grad_root, grad_bias); grad_root/grad_bias are empty [0] when absent.
//
// It is segment_matmul with the gather of its rows fused into the A-operand load and the per-node
// row sum fused into its epilogue: the [K + N, in] gathered matrix and the [K + N, out] product
// never exist (on a 2-core CPU their page faults alone cost as much as a GEMM).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(hotspot_erc, m) {
  m.def(
      "relational_conv(Tensor x, Tensor weight, Tensor? root, Tensor? bias, Tensor rel_ptr, Tensor ptr, "
      "Tensor col, Tensor dst, bool mean) -> Tensor");
  m.def(
      "relational_conv_backward(Tensor grad, Tensor x, Tensor weight, Tensor? root, bool has_bias, "
      "Tensor rel_ptr, Tensor ptr, Tensor col, Tensor dst, bool mean) -> (Tensor, Tensor, Tensor, Tensor)");
}
