// AdamW update.
#include "cairn/train/adamw.h"

#include <torch/torch.h>

#include <cmath>

namespace cairn::train {

AdamW::AdamW(NamedParams params,
             std::function<bool(const std::string&, const torch::Tensor&)> decays,
             AdamWOptions options)
    : options_(options) {
  for (auto& [name, p] : params) {
    slots_.push_back({name, p, torch::zeros_like(p, torch::MemoryFormat::Preserve),
                      torch::zeros_like(p, torch::MemoryFormat::Preserve), decays(name, p)});
  }
}

bool AdamW::default_decay(const std::string& name, const torch::Tensor& p) {
  if (p.dim() < 2) return false;
  const std::string pos = "wpe.weight";
  return !(name.size() >= pos.size() && name.compare(name.size() - pos.size(), pos.size(), pos) == 0);
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bias1 = 1.0 - std::pow(b1, double(step_));
  const double bias2_sqrt = std::sqrt(1.0 - std::pow(b2, double(step_)));
  const double step_size = lr / bias1;
  for (auto& s : slots_) {
    const torch::Tensor& g = s.param.grad();
    if (!g.defined()) continue;
    if (s.decay && options_.weight_decay != 0) s.param.mul_(1.0 - lr * options_.weight_decay);
    s.exp_avg.mul_(b1).add_(g, 1.0 - b1);
    s.exp_avg_sq.mul_(b2).addcmul_(g, g, 1.0 - b2);
    torch::Tensor denom = (s.exp_avg_sq.sqrt() / bias2_sqrt).add_(options_.eps);
    s.param.addcdiv_(s.exp_avg, denom, -step_size);
  }
}

void AdamW::zero_grad() {
  for (auto& s : slots_) s.param.mutable_grad() = torch::Tensor();
}

std::vector<std::pair<std::string, torch::Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& s : slots_) {
    out.emplace_back(s.name + ".exp_avg", s.exp_avg);
    out.emplace_back(s.name + ".exp_avg_sq", s.exp_avg_sq);
  }
  return out;
}

Status AdamW::load_state(const std::map<std::string, torch::Tensor>& tensors,
                         const std::string& prefix, int64_t step_count) {
  for (auto& s : slots_) {
    for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
      auto it = tensors.find(prefix + s.name + suffix);
      if (it == tensors.end())
        return Status::InvalidArgument("optimizer state '" + prefix + s.name + suffix +
                                       "' is missing from the checkpoint");
      if (!it->second.sizes().equals(s.param.sizes()) ||
          it->second.scalar_type() != s.param.scalar_type())
        return Status::InvalidArgument("optimizer state '" + it->first +
                                       "' has a different shape or dtype than the parameter");
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& s : slots_) {
    s.exp_avg.copy_(tensors.at(prefix + s.name + ".exp_avg"));
    s.exp_avg_sq.copy_(tensors.at(prefix + s.name + ".exp_avg_sq"));
  }
  step_ = step_count;
  return Status::Ok();
}

}  // namespace cairn::train
