// Schema of the segment (grouped) matrix product used by RGCNConv: rows of `a` come in
// groups given by `ptr`, each group multiplied by its own weight; with k = 1 and unit gates it is
// grouped_expert_linear, and pyg-lib's segment_matmul.
//
// segment_matmul(a [M, in], ptr, weight [G, in, out], root [in, out]?, bias [out]?) -> [M, out]:
//   without root: ptr [G+1], rows [ptr[g], ptr[g+1]) = a_rows @ weight[g];
//   with root:    ptr [G+2], rows [ptr[0], ptr[1]) = a_rows @ root + bias (the root group),
//                 rows [ptr[g+1], ptr[g+2]) = a_rows @ weight[g];
//   rows outside [ptr[0], ptr[last]) are zero. `tiles` is the CUDA kernel's row-tile map (built
//   once per graph, hotspot_erc.ops.segment_matmul); the CPU kernel ignores it.
// segment_matmul_backward(grad, a, ptr, weight, root?, has_bias, tiles?) ->
//   (grad_a, grad_weight, grad_root, grad_bias); grad_root/grad_bias are empty [0] when absent.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(hotspot_erc, m) {
  m.def("segment_matmul(Tensor a, Tensor ptr, Tensor weight, Tensor? root, Tensor? bias, Tensor? tiles) -> Tensor");
  m.def(
      "segment_matmul_backward(Tensor grad, Tensor a, Tensor ptr, Tensor weight, Tensor? root, bool has_bias, "
      "Tensor? tiles) -> (Tensor, Tensor, Tensor, Tensor)");
}
