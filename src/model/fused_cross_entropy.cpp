// Chunked linear + cross-entropy. For each block of n rows the (n, V) logits are computed and
// turned into probabilities in place (one softmax pass: each row's maximum, exponentials and
// their sum, then the scaling, while the row is in cache); the loss is -log of the target's
// probability; when gradients are wanted the block becomes softmax - one_hot in place and is
// multiplied back into the (N, C) and (V, C) gradients. Shapes: N rows, C channels, V
// vocabulary, n rows of a chunk.
#include "cairn/model/fused_cross_entropy.h"

#include <torch/torch.h>

#include <limits>

namespace cairn::model {
namespace {

// Each row's loss, -log p[target], from the chunk's probabilities `p` (n, V). A target whose
// probability is below float's normal range cannot be read from `p`: those rows (a model far
// off, e.g. logits tens of units apart) get their loss exactly from their logits, recomputed
// from hc (n, C) and wt (C, V) as logsumexp - logit[target].
torch::Tensor row_losses(const torch::Tensor& p, const torch::Tensor& hc, const torch::Tensor& wt,
                         const torch::Tensor& tc) {
  auto pt = p.gather(1, tc).squeeze(1);  // (n)
  auto loss = pt.log().neg_().to(torch::kDouble);
  auto tiny = pt.lt(std::numeric_limits<float>::min());
  if (!tiny.any().item<bool>()) return loss;
  auto rows = tiny.nonzero().squeeze(1);
  auto z = torch::mm(hc.index_select(0, rows), wt).to(torch::kDouble);  // (k, V)
  auto exact = z.logsumexp(1).sub_(z.gather(1, tc.index_select(0, rows)).squeeze(1));
  return loss.index_copy_(0, rows, exact);
}

class FusedLinearCrossEntropyFn : public torch::autograd::Function<FusedLinearCrossEntropyFn> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& h_in,
                               const torch::Tensor& w, const torch::Tensor& targets,
                               int64_t chunk_rows, int64_t ignore_index, bool need_h, bool need_w) {
    const int64_t N = h_in.size(0), C = h_in.size(1);
    auto h = h_in.contiguous();                              // (N, C)
    auto valid = targets.ne(ignore_index);                   // (N) bool
    auto tgt = targets.masked_fill(valid.logical_not(), 0);  // (N) in [0, V)
    const int64_t count = valid.sum().item<int64_t>();
    const double inv =
        count > 0 ? 1.0 / static_cast<double>(count) : std::numeric_limits<double>::quiet_NaN();
    const bool any_grad = (need_h || need_w) && count > 0;
    const auto fopt = h.options().dtype(torch::kFloat);
    torch::Tensor gh, gw;
    if (any_grad && need_h) gh = torch::empty({N, C}, h.options());  // (N, C)
    if (any_grad && need_w) gw = torch::zeros(w.sizes(), fopt);      // (V, C) float32
    auto total = torch::zeros({}, fopt.dtype(torch::kDouble));
    auto wt = w.t();  // (C, V)
    for (int64_t r = 0; r < N; r += chunk_rows) {
      const int64_t n = std::min(chunk_rows, N - r);
      auto hc = h.narrow(0, r, n);                 // (n, C)
      auto tc = tgt.narrow(0, r, n).unsqueeze(1);  // (n, 1)
      auto vc = valid.narrow(0, r, n);             // (n)
      auto g = torch::mm(hc, wt);                  // (n, V) logits
      if (g.scalar_type() != torch::kFloat) g = g.to(torch::kFloat);
      at::_softmax_out(g, g, 1, false);  // in place: softmax, (n, V)
      total.add_(row_losses(g, hc, wt, tc).masked_fill_(vc.logical_not(), 0).sum(torch::kDouble));
      if (!any_grad) continue;
      g.scatter_add_(1, tc, vc.to(torch::kFloat).neg().unsqueeze(1));
      add_chunk_gradients(g, vc, hc, w, gh, gw, r, inv);
    }
    if (gw.defined() && gw.scalar_type() != w.scalar_type()) gw = gw.to(w.scalar_type());
    ctx->save_for_backward({gh, gw});
    return total.mul_(inv).to(torch::kFloat);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& go = grads[0];  // scalar
    const bool unit = go.numel() == 1 && go.item<double>() == 1.0;
    auto scale = [&](const torch::Tensor& g) {
      if (!g.defined()) return torch::Tensor();
      return unit ? g : g * go.to(g.scalar_type());
    };
    return {scale(saved[0]), scale(saved[1]), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor fused_linear_cross_entropy(const torch::Tensor& h, const torch::Tensor& w,
                                         const torch::Tensor& targets, int64_t chunk_rows,
                                         int64_t ignore_index) {
  TORCH_CHECK(h.dim() == 2 && w.dim() == 2 && h.size(1) == w.size(1),
              "fused_linear_cross_entropy: h must be (N, C) and w (V, C), got ", h.sizes(), " and ",
              w.sizes());
  TORCH_CHECK(h.is_floating_point() && h.scalar_type() == w.scalar_type(),
              "fused_linear_cross_entropy: h and w must share one floating dtype, got ",
              h.scalar_type(), " and ", w.scalar_type());
  TORCH_CHECK(
      targets.dim() == 1 && targets.size(0) == h.size(0) && targets.scalar_type() == torch::kLong,
      "fused_linear_cross_entropy: targets must be int64 (N) with N=", h.size(0), ", got ",
      targets.scalar_type(), " ", targets.sizes());
  TORCH_CHECK(chunk_rows >= 1, "fused_linear_cross_entropy: chunk_rows must be >= 1, got ",
              chunk_rows);
  const int64_t V = w.size(0);
  if (targets.numel() > 0) {
    auto bad = targets.ne(ignore_index).logical_and(targets.lt(0).logical_or(targets.ge(V)));
    TORCH_CHECK(!bad.any().item<bool>(), "fused_linear_cross_entropy: a target is outside [0, ", V,
                ") and is not ignore_index=", ignore_index);
  }
  const bool grad = torch::GradMode::is_enabled();
  return FusedLinearCrossEntropyFn::apply(h, w, targets, chunk_rows, ignore_index,
                                          grad && h.requires_grad(), grad && w.requires_grad());
}

void add_chunk_gradients(torch::Tensor& g, const torch::Tensor& valid, const torch::Tensor& hc,
                         const torch::Tensor& w, torch::Tensor& gh, torch::Tensor& gw, int64_t r,
                         double inv) {
  const int64_t n = g.size(0);
  if (valid.sum().item<int64_t>() < n) g.masked_fill_(valid.logical_not().unsqueeze(1), 0);
  if (gh.defined()) {
    auto gc = g.scalar_type() == w.scalar_type() ? g : g.to(w.scalar_type());
    auto ghc = gh.narrow(0, r, n);  // (n, C)
    at::mm_out(ghc, gc, w);
    ghc.mul_(inv);
  }
  if (gw.defined()) gw.addmm_(g.t(), hc.to(torch::kFloat), 1.0, inv);
}

}  // namespace cairn::model
