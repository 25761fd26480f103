// Autograd of hotspot_erc::segment_matmul: the backward is one call of segment_matmul_backward
// (through the dispatcher, so each device runs its own kernel), which returns the gradients of a,
// the group weights, the root weight and the bias together: one launch on the CPU.
// Not twice differentiable (the backward op has no autograd formula of its own).
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace hotspot_erc {
namespace segment_matmul {
namespace {

using OptT = c10::optional<at::Tensor>;

at::Tensor call_forward(const at::Tensor& a, const at::Tensor& ptr, const at::Tensor& weight, const OptT& root,
                        const OptT& bias, const OptT& tiles) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("hotspot_erc::segment_matmul", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptT&,
                                         const OptT&, const OptT&)>();
  return op.call(a, ptr, weight, root, bias, tiles);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> call_backward(
    const at::Tensor& grad, const at::Tensor& a, const at::Tensor& ptr, const at::Tensor& weight, const OptT& root,
    bool has_bias, const OptT& tiles) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("hotspot_erc::segment_matmul_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptT&, bool,
              const OptT&)>();
  return op.call(grad, a, ptr, weight, root, has_bias, tiles);
}

class SegmentMatmul : public torch::autograd::Function<SegmentMatmul> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& a, const at::Tensor& ptr,
                            const at::Tensor& weight, const OptT& root, const OptT& bias, const OptT& tiles) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const bool has_root = root.has_value() && root->defined();
    const bool has_bias = bias.has_value() && bias->defined();
    ctx->save_for_backward({a, ptr, weight, has_root ? *root : at::Tensor(),
                            (tiles.has_value() && tiles->defined()) ? *tiles : at::Tensor()});
    ctx->saved_data["has_root"] = has_root;
    ctx->saved_data["has_bias"] = has_bias;
    return call_forward(a, ptr, weight, root, bias, tiles);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool has_root = ctx->saved_data["has_root"].toBool();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    if (!grads[0].defined()) {
      return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    }
    const OptT root = has_root ? OptT(saved[3]) : OptT();
    const OptT tiles = saved[4].defined() ? OptT(saved[4]) : OptT();
    auto [ga, gw, groot, gbias] = call_backward(grads[0].contiguous(), saved[0], saved[1], saved[2], root, has_bias,
                                                tiles);
    return {ga, at::Tensor(), gw, has_root ? groot : at::Tensor(), has_bias ? gbias : at::Tensor(), at::Tensor()};
  }
};

at::Tensor segment_matmul_autograd(const at::Tensor& a, const at::Tensor& ptr, const at::Tensor& weight,
                                   const OptT& root, const OptT& bias, const OptT& tiles) {
  return SegmentMatmul::apply(a, ptr, weight, root, bias, tiles);
}

}  // namespace
}  // namespace segment_matmul
}  // namespace hotspot_erc

TORCH_LIBRARY_IMPL(hotspot_erc, Autograd, m) {
  m.impl("segment_matmul", &hotspot_erc::segment_matmul::segment_matmul_autograd);
}
