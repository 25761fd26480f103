// Autograd of hotspot_erc::relational_conv: one call of relational_conv_backward through the
// dispatcher, which returns the gradients of x, the relation weights, root and bias together.
// Not twice differentiable (the backward op has no autograd formula of its own).
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace hotspot_erc {
namespace relational_conv {
namespace {

using OptT = c10::optional<at::Tensor>;
using T = at::Tensor;

T call_forward(const T& x, const T& weight, const OptT& root, const OptT& bias, const T& rel_ptr, const T& ptr,
               const T& col, const T& dst, bool mean) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("hotspot_erc::relational_conv", "")
                       .typed<T(const T&, const T&, const OptT&, const OptT&, const T&, const T&, const T&,
                                const T&, bool)>();
  return op.call(x, weight, root, bias, rel_ptr, ptr, col, dst, mean);
}

std::tuple<T, T, T, T> call_backward(const T& grad, const T& x, const T& weight, const OptT& root, bool has_bias,
                                     const T& rel_ptr, const T& ptr, const T& col, const T& dst, bool mean) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("hotspot_erc::relational_conv_backward", "")
                       .typed<std::tuple<T, T, T, T>(const T&, const T&, const T&, const OptT&, bool, const T&,
                                                     const T&, const T&, const T&, bool)>();
  return op.call(grad, x, weight, root, has_bias, rel_ptr, ptr, col, dst, mean);
}

class RelationalConv : public torch::autograd::Function<RelationalConv> {
 public:
  static T forward(torch::autograd::AutogradContext* ctx, const T& x, const T& weight, const OptT& root,
                   const OptT& bias, const T& rel_ptr, const T& ptr, const T& col, const T& dst, bool mean) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const bool has_root = root.has_value() && root->defined();
    const bool has_bias = bias.has_value() && bias->defined();
    // The inputs only: the backward gathers the bucket rows again instead of keeping them.
    ctx->save_for_backward({x, weight, has_root ? *root : T(), rel_ptr, ptr, col, dst});
    ctx->saved_data["has_root"] = has_root;
    ctx->saved_data["has_bias"] = has_bias;
    ctx->saved_data["mean"] = mean;
    return call_forward(x, weight, root, bias, rel_ptr, ptr, col, dst, mean);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const bool has_root = ctx->saved_data["has_root"].toBool();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    torch::autograd::variable_list none(9);
    if (!grads[0].defined()) return none;
    const OptT root = has_root ? OptT(s[2]) : OptT();
    auto [gx, gw, groot, gb] = call_backward(grads[0].contiguous(), s[0], s[1], root, has_bias, s[3], s[4], s[5],
                                             s[6], ctx->saved_data["mean"].toBool());
    none[0] = gx;
    none[1] = gw;
    if (has_root) none[2] = groot;
    if (has_bias) none[3] = gb;
    return none;
  }
};

T relational_conv_autograd(const T& x, const T& weight, const OptT& root, const OptT& bias, const T& rel_ptr,
                           const T& ptr, const T& col, const T& dst, bool mean) {
  return RelationalConv::apply(x, weight, root, bias, rel_ptr, ptr, col, dst, mean);
}

}  // namespace
}  // namespace relational_conv
}  // namespace hotspot_erc

TORCH_LIBRARY_IMPL(hotspot_erc, Autograd, m) {
  m.impl("relational_conv", &hotspot_erc::relational_conv::relational_conv_autograd);
}
