// ZeRO-3 optimizer and state: gradient clipping, the sharded AdamW step, optimizer state and
// parameter (re)loading from whole tensors, and the memory report.
#include <torch/torch.h>

#include <cmath>

#include "parallel/adamw_kernel_impl.h"
#include "parallel/zero3_impl.h"

namespace cairn::parallel {
namespace {

// Checks that `tensors` holds "<prefix><param><suffix>" for every parameter and suffix, fp32
// and of the parameter's shape.
Status check_tensors(const Zero3::Impl& m, const std::map<std::string, torch::Tensor>& tensors,
                     const std::string& prefix, const std::vector<std::string>& suffixes,
                     const char* what) {
  for (const auto& p : m.params)
    for (const auto& suffix : suffixes) {
      const std::string key = prefix + p.name + suffix;
      auto it = tensors.find(key);
      if (it == tensors.end())
        return Status::InvalidArgument(std::string(what) + " '" + key + "' is missing");
      if (!it->second.defined() || !it->second.sizes().equals(p.sizes) ||
          it->second.scalar_type() != torch::kFloat)
        return Status::InvalidArgument(std::string(what) + " '" + key +
                                       "' has a different shape or dtype than the parameter");
    }
  return Status::Ok();
}

// Copies this rank's part of whole tensors "<prefix><param><suffix>" into the shard buffers
// `shard(flat)`; padding becomes zero. REQUIRES: check_tensors passed.
template <typename ShardFn>
void load_shards(Zero3::Impl& m, const std::map<std::string, torch::Tensor>& tensors,
                 const std::string& prefix, const std::string& suffix, ShardFn shard) {
  torch::NoGradGuard no_grad;
  for (auto& fl : m.flats) {
    torch::Tensor& dst = shard(fl);
    dst.zero_();
    for (const auto& slot : fl.plan.slots) {
      auto part = slot_part(slot, fl.lo, fl.hi);
      const int64_t len = part.end - part.begin;
      if (len <= 0) continue;
      const auto& src = tensors.at(prefix + m.params[size_t(slot.param)].name + suffix);
      dst.narrow(0, slot.offset + part.begin - fl.lo, len)
          .copy_(src.reshape({-1}).narrow(0, part.begin, len));
    }
  }
}

}  // namespace

double Zero3::clip_grad_norm(double max_norm) {
  Impl& m = *impl_;
  torch::NoGradGuard no_grad;
  double sq = 0;
  for (auto& fl : m.flats) sq += fl.grad.dot(fl.grad).item<double>();
  if (m.world() > 1) {  // each rank holds a disjoint shard: the squared norm is their sum
    auto t = torch::tensor({sq}, torch::kDouble);
    m.group->allreduce(t);
    sq = t.item<double>();
  }
  const double norm = std::sqrt(sq);
  m.grad_scale = max_norm > 0 && norm > max_norm ? float(max_norm / (norm + 1e-6)) : 1.0f;
  return norm;
}

void Zero3::step(double lr) {
  Impl& m = *impl_;
  TORCH_CHECK(!m.full_params, "Zero3::step: call release_full_params() first");
  torch::NoGradGuard no_grad;
  ++m.steps;
  const AdamHyper& h = m.adam;
  const AdamCoeffs c = adam_coeffs(h, m.steps, lr, m.grad_scale);
  m.grad_scale = 1.0f;
  for (auto& fl : m.flats) {
    float* p = fl.param.data_ptr<float>();
    const float* g = fl.grad.data_ptr<float>();
    float* ma = fl.exp_avg.data_ptr<float>();
    float* va = fl.exp_avg_sq.data_ptr<float>();
    // Updates buffer positions [b, e) of the shard, which starts at buffer position lo.
    auto update = [&](int64_t b, int64_t e, bool decay) {
      const int64_t o = b - fl.lo;
      adamw_update(p + o, g + o, ma + o, va + o, e - b, c, decay);
    };
    // Runs of one parameter each (decay is per parameter); padding is updated without decay
    // and stays zero (its gradient is zero).
    int64_t pos = fl.lo;
    for (const auto& slot : fl.plan.slots) {
      auto part = slot_part(slot, fl.lo, fl.hi);
      if (part.end <= part.begin) continue;
      const int64_t b = slot.offset + part.begin, e = slot.offset + part.end;
      if (b > pos) update(pos, b, false);
      update(b, e, m.params[size_t(slot.param)].decay && h.weight_decay != 0);
      pos = e;
    }
    if (fl.hi > pos) update(pos, fl.hi, false);
  }
}

int64_t Zero3::step_count() const { return impl_->steps; }

Zero3::NamedParams Zero3::gather_state() {
  Impl& m = *impl_;
  torch::NoGradGuard no_grad;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> full;
  for (auto& fl : m.flats) {
    if (m.world() > 1) {
      auto a = torch::empty({fl.plan.numel}), b = torch::empty({fl.plan.numel});
      m.group->allgather(a, fl.exp_avg);
      m.group->allgather(b, fl.exp_avg_sq);
      full.emplace_back(a, b);
    } else {
      full.emplace_back(fl.exp_avg, fl.exp_avg_sq);
    }
  }
  NamedParams out;
  for (const auto& p : m.params) {
    auto& [a, b] = full[size_t(p.flat)];
    out.emplace_back(p.name + ".exp_avg",
                     a.narrow(0, p.slot.offset, p.slot.numel).view(p.sizes).clone());
    out.emplace_back(p.name + ".exp_avg_sq",
                     b.narrow(0, p.slot.offset, p.slot.numel).view(p.sizes).clone());
  }
  return out;
}

Status Zero3::load_state(const std::map<std::string, torch::Tensor>& tensors,
                         const std::string& prefix, int64_t step_count) {
  Impl& m = *impl_;
  if (step_count < 0)
    return Status::InvalidArgument("optimizer step count must be >= 0, got " +
                                   std::to_string(step_count));
  CAIRN_RETURN_IF_ERROR(
      check_tensors(m, tensors, prefix, {".exp_avg", ".exp_avg_sq"}, "optimizer state"));
  load_shards(m, tensors, prefix, ".exp_avg",
              [](Impl::Flat& fl) -> torch::Tensor& { return fl.exp_avg; });
  load_shards(m, tensors, prefix, ".exp_avg_sq",
              [](Impl::Flat& fl) -> torch::Tensor& { return fl.exp_avg_sq; });
  m.steps = step_count;
  return Status::Ok();
}

Status Zero3::load_params(const std::map<std::string, torch::Tensor>& tensors,
                          const std::string& prefix) {
  Impl& m = *impl_;
  TORCH_CHECK(!m.full_params, "Zero3::load_params: call release_full_params() first");
  CAIRN_RETURN_IF_ERROR(check_tensors(m, tensors, prefix, {""}, "parameter"));
  load_shards(m, tensors, prefix, "", [](Impl::Flat& fl) -> torch::Tensor& { return fl.param; });
  return Status::Ok();
}

MemoryReport Zero3::memory_report() const {
  MemoryReport r;
  int64_t shard = 0;
  for (const auto& p : impl_->params) r.params += p.slot.numel;
  for (const auto& fl : impl_->flats) shard += fl.hi - fl.lo;
  const double n = double(std::max<int64_t>(1, r.params));
  r.param_bytes = 4.0 * double(shard) / n;
  r.grad_bytes = 4.0 * double(shard) / n;
  r.optimizer_bytes = 8.0 * double(shard) / n;
  return r;
}

}  // namespace cairn::parallel
