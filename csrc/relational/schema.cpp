// Schema of the relational message-passing op (DESIGN §3.5).
//
// relational_aggregate(src, ptr, idx, wkey, t_ptr, t_idx, t_wkey, count_ptr, mean) -> [n, d] with
//   out[o] = sum_{e in [ptr[o], ptr[o+1])} w(wkey[e]) * src[idx[e]],
//   w(k) = 1 / (count_ptr[k+1] - count_ptr[k]) when mean, else 1.
// (t_ptr, t_idx, t_wkey) is the transposed structure: the gradient w.r.t. src is the same op on
// the output gradient with the two structures swapped, so backward (and double backward) is one
// deterministic segment reduction too. The structure decides what is computed: CSR by
// (destination, relation) gives Z[i, r] of relational_aggregate, CSR by destination over
// (source, relation) rows gives relational_message_sum; hotspot_erc.ops.relational builds both.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(hotspot_erc, m) {
  m.def(
      "relational_aggregate(Tensor src, Tensor ptr, Tensor idx, Tensor wkey, Tensor t_ptr, Tensor t_idx, "
      "Tensor t_wkey, Tensor count_ptr, bool mean) -> Tensor");
}
