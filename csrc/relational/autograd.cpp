// Autograd of hotspot_erc::relational_aggregate. The op is linear in src and its gradient is the
// same gather over the transposed structure (with the same mean weights), so backward calls the
// op again with the structures swapped: deterministic, a kernel on every device, and twice
// differentiable for free.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "relational/checks.h"

namespace hotspot_erc {
namespace relational {
namespace {

at::Tensor call_gather(const at::Tensor& src, const at::Tensor& ptr, const at::Tensor& idx, const at::Tensor& wkey,
                       const at::Tensor& t_ptr, const at::Tensor& t_idx, const at::Tensor& t_wkey,
                       const at::Tensor& count_ptr, bool mean) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("hotspot_erc::relational_aggregate", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, const at::Tensor&, bool)>();
  return op.call(src, ptr, idx, wkey, t_ptr, t_idx, t_wkey, count_ptr, mean);
}

class RelationalGather : public torch::autograd::Function<RelationalGather> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& src, const at::Tensor& ptr,
                            const at::Tensor& idx, const at::Tensor& wkey, const at::Tensor& t_ptr,
                            const at::Tensor& t_idx, const at::Tensor& t_wkey, const at::Tensor& count_ptr,
                            bool mean) {
    // Sizes are checked by the device kernels; here they may be symbolic (torch.compile).
    check_src_meta(src);
    check_index_meta("ptr", ptr, src);
    check_index_meta("idx", idx, src);
    check_index_meta("wkey", wkey, src);
    check_index_meta("t_ptr", t_ptr, src);
    check_index_meta("t_idx", t_idx, src);
    check_index_meta("t_wkey", t_wkey, src);
    check_index_meta("count_ptr", count_ptr, src);
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({ptr, idx, wkey, t_ptr, t_idx, t_wkey, count_ptr});
    ctx->saved_data["mean"] = mean;
    return call_gather(src, ptr, idx, wkey, t_ptr, t_idx, t_wkey, count_ptr, mean);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool mean = ctx->saved_data["mean"].toBool();
    at::Tensor grad_src;
    if (grads[0].defined()) {
      // Through the dispatcher (not at the kernel) so that double backward records this call.
      grad_src = call_gather(grads[0].contiguous(), saved[3], saved[4], saved[5], saved[0], saved[1], saved[2],
                             saved[6], mean);
    }
    return {grad_src,   at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor relational_aggregate_autograd(const at::Tensor& src, const at::Tensor& ptr, const at::Tensor& idx,
                                      const at::Tensor& wkey, const at::Tensor& t_ptr, const at::Tensor& t_idx,
                                      const at::Tensor& t_wkey, const at::Tensor& count_ptr, bool mean) {
  return RelationalGather::apply(src, ptr, idx, wkey, t_ptr, t_idx, t_wkey, count_ptr, mean);
}

}  // namespace
}  // namespace relational
}  // namespace hotspot_erc

TORCH_LIBRARY_IMPL(hotspot_erc, Autograd, m) {
  m.impl("relational_aggregate", &hotspot_erc::relational::relational_aggregate_autograd);
}
