// Activation checkpointing as a custom autograd Function whose inputs are the block input and
// the block's parameters, so the autograd engine routes the recomputed gradients to them.
#include "cairn/model/checkpoint.h"

#include <torch/torch.h>

#include <utility>

namespace cairn::model {
namespace {

// Carries the block closure inside the autograd context.
struct FnHolder : torch::CustomClassHolder {
  explicit FnHolder(BlockFn f) : fn(std::move(f)) {}
  BlockFn fn;
};

class CheckpointFn : public torch::autograd::Function<CheckpointFn> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               torch::TensorList params, const BlockFn& fn) {
    ctx->saved_data["fn"] = c10::IValue::make_capsule(c10::make_intrusive<FnHolder>(fn));
    std::vector<torch::Tensor> keep{x};
    keep.insert(keep.end(), params.begin(), params.end());
    ctx->save_for_backward(keep);
    return fn(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto holder = ctx->saved_data["fn"].toCapsule();
    const BlockFn& fn = static_cast<FnHolder*>(holder.get())->fn;
    auto x = saved[0].detach();
    x.requires_grad_(saved[0].requires_grad());
    // Positions in `saved` of the tensors whose gradients are wanted.
    std::vector<size_t> want;
    torch::autograd::variable_list inputs;
    for (size_t i = 0; i < saved.size(); ++i) {
      const auto& t = i == 0 ? x : saved[i];
      if (t.requires_grad()) {
        want.push_back(i);
        inputs.push_back(t);
      }
    }
    torch::autograd::variable_list result(saved.size() + 1);  // + the fn argument
    if (inputs.empty()) return result;
    torch::Tensor y;
    {
      torch::AutoGradMode enable(true);
      y = fn(x);
    }
    if (!y.requires_grad()) return result;
    auto g = torch::autograd::grad({y}, inputs, {grads[0]}, /*retain_graph=*/false,
                                   /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t j = 0; j < want.size(); ++j) result[want[j]] = g[j];
    return result;
  }
};

}  // namespace

torch::Tensor checkpoint(const BlockFn& fn, const torch::Tensor& x,
                         const std::vector<torch::Tensor>& params) {
  TORCH_CHECK(fn, "checkpoint: empty block function");
  return CheckpointFn::apply(x, torch::TensorList(params), fn);
}

}  // namespace cairn::model
