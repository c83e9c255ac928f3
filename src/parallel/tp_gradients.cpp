#include <torch/torch.h>

#include "cairn/comm/group.h"
#include "cairn/parallel/tensor_parallel.h"
#include "parallel/tp_gradients_impl.h"

namespace cairn::parallel {
namespace {

int64_t total_numel(const std::vector<torch::Tensor>& parts) {
  int64_t n = 0;
  for (const auto& t : parts) n += t.numel();
  return n;
}

double sum_of_squares(const std::vector<torch::Tensor>& parts) {
  double sq = 0;
  for (const auto& g : parts) sq += g.dot(g).item<double>();
  return sq;
}

}  // namespace

TpGradients::TpGradients(const model::ModelConfig& config, comm::Group* tp, bool sequence_parallel)
    : config_(config), tp_(tp), sp_(sequence_parallel), specs_(model::param_specs(config)) {}

bool TpGradients::whole(const std::string& name) const {
  const model::ParamSpec* s = model::find_spec(specs_, name);
  TORCH_CHECK(s, "no spec for parameter ", name);
  return s->tp == model::TpSplit::kReplicated;
}

bool TpGradients::kv(const std::string& name) const {
  const model::ParamSpec* s = model::find_spec(specs_, name);
  TORCH_CHECK(s, "no spec for parameter ", name);
  return tp_kv_replicated(*s, config_, tp_ ? tp_->size() : 1);
}

// Each rank puts its whole parameters' parts first, then its key/value head's parts in that
// head's slot of a buffer of every head's slots (zeros elsewhere: K times the bytes of one
// head's gradients, for no sub-groups of tp), all-reduces, and copies its parts back.
void TpGradients::sum_partial(const Parts& parts) const {
  if (!tp_ || tp_->size() == 1) return;
  std::vector<torch::Tensor> w, k;
  if (sp_) w = parts([this](const std::string& n) { return whole(n); });
  k = parts([this](const std::string& n) { return kv(n); });
  if (w.empty() && k.empty()) return;
  torch::NoGradGuard no_grad;
  const int64_t nw = total_numel(w), nk = total_numel(k);
  const int64_t heads = config_.kv_heads();
  const int64_t slot = tp_->rank() / tp_kv_replicas(config_, tp_->size());
  auto flat = torch::zeros({nw + (k.empty() ? 0 : nk * heads)}, (w.empty() ? k : w)[0].options());
  auto copy = [&flat](std::vector<torch::Tensor>& ps, int64_t at, bool into_flat) {
    for (auto& g : ps) {
      auto f = flat.narrow(0, at, g.numel());
      into_flat ? f.copy_(g.view({-1})) : g.view({-1}).copy_(f);
      at += g.numel();
    }
  };
  copy(w, 0, true);
  copy(k, nw + slot * nk, true);
  tp_->allreduce(flat);
  copy(w, 0, false);
  copy(k, nw + slot * nk, false);
}

torch::Tensor TpGradients::squares(const Parts& parts) const {
  torch::NoGradGuard no_grad;
  const int tp = tp_ ? tp_->size() : 1;
  const bool first_replica = !tp_ || tp_->rank() % tp_kv_replicas(config_, tp) == 0;
  const double s = sum_of_squares(parts([this](const std::string& n) { return split(n); }));
  const double k =
      first_replica ? sum_of_squares(parts([this](const std::string& n) { return kv(n); })) : 0.0;
  const double w = sum_of_squares(parts([this](const std::string& n) { return whole(n); }));
  return torch::tensor({s + k, w}, torch::kDouble);
}

double TpGradients::total(const torch::Tensor& squares) const {
  auto split_sq = squares.narrow(0, 0, 1).clone();
  if (tp_ && tp_->size() > 1) tp_->allreduce(split_sq);
  return split_sq.item<double>() + squares[1].item<double>();
}

}  // namespace cairn::parallel
