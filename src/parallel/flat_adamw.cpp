// The AdamW over flat shards shared by DataParallel and Zero3.
#include <torch/torch.h>

#include <cmath>
#include <functional>

#include "cairn/comm/group.h"
#include "parallel/adamw_kernel_impl.h"
#include "parallel/flat_adamw_impl.h"

namespace cairn::parallel {

std::vector<torch::Tensor> shard_parts(const Bucket& plan, int64_t lo, int64_t hi,
                                       const torch::Tensor& shard,
                                       const std::function<bool(int64_t param)>& select) {
  std::vector<torch::Tensor> out;
  for (const BucketSlot& s : plan.slots) {
    if (!select(s.param)) continue;
    const SlotPart part = slot_part(s, lo, hi);  // offsets inside the parameter
    if (part.end > part.begin)
      out.push_back(shard.narrow(0, s.offset + part.begin - lo, part.end - part.begin));
  }
  return out;
}

FlatAdamW::FlatAdamW(AdamHyper hyper, std::vector<FlatParam> params,
                     const std::vector<int64_t>& shard_numels, torch::Device device)
    : hyper_(hyper), params_(std::move(params)) {
  const auto options = torch::TensorOptions(torch::kFloat).device(device);
  for (int64_t n : shard_numels) {
    exp_avg_.push_back(torch::zeros({n}, options));
    exp_avg_sq_.push_back(torch::zeros({n}, options));
  }
}

double FlatAdamW::clip_grad_norm(const std::vector<torch::Tensor>& grads, comm::Group* sum_over,
                                 double max_norm) {
  torch::NoGradGuard no_grad;
  double sq = 0;
  for (const torch::Tensor& g : grads) sq += g.dot(g).item<double>();
  if (sum_over) {  // each rank holds a disjoint part: the squared norm is their sum
    auto t = torch::tensor({sq}, torch::kDouble);
    sum_over->allreduce(t);
    sq = t.item<double>();
  }
  const double norm = std::sqrt(sq);
  clip_to(norm, max_norm);
  return norm;
}

void FlatAdamW::clip_to(double norm, double max_norm) {
  grad_scale_ = max_norm > 0 && norm > max_norm ? float(max_norm / (norm + 1e-6)) : 1.0f;
}

void FlatAdamW::step(const std::vector<FlatShard>& shards, double lr) {
  TORCH_CHECK(shards.size() == exp_avg_.size(), "FlatAdamW::step: ", shards.size(), " shards for ",
              exp_avg_.size(), " moment buffers");
  torch::NoGradGuard no_grad;
  ++steps_;
  const AdamCoeffs c = adam_coeffs(hyper_, steps_, lr, grad_scale_);
  grad_scale_ = 1.0f;
  for (size_t i = 0; i < shards.size(); ++i) {
    const FlatShard& s = shards[i];
    // Buffer positions [b, e) of the shard, which starts at buffer position lo: the CPU kernel,
    // or tensor operations on another device.
    std::function<void(int64_t, int64_t, bool)> update;
    if (s.param.is_cpu()) {
      float* p = s.param.data_ptr<float>();
      const float* g = s.grad.data_ptr<float>();
      float* ma = exp_avg_[i].data_ptr<float>();
      float* va = exp_avg_sq_[i].data_ptr<float>();
      update = [=, &c](int64_t b, int64_t e, bool decay) {
        const int64_t o = b - s.lo;
        adamw_update(p + o, g + o, ma + o, va + o, e - b, c, decay);
      };
    } else {
      update = [&, i](int64_t b, int64_t e, bool decay) {
        const int64_t o = b - s.lo;
        auto p = s.param.narrow(0, o, e - b), m = exp_avg_[i].narrow(0, o, e - b),
             v = exp_avg_sq_[i].narrow(0, o, e - b);
        adamw_update_tensors(p, s.grad.narrow(0, o, e - b), m, v, c, decay);
      };
    }
    int64_t pos = s.lo;
    for (const BucketSlot& slot : s.plan->slots) {
      const SlotPart part = slot_part(slot, s.lo, s.hi);
      if (part.end <= part.begin) continue;
      const int64_t b = slot.offset + part.begin, e = slot.offset + part.end;
      if (b > pos) update(pos, b, false);
      update(b, e, params_[size_t(slot.param)].decay && hyper_.weight_decay != 0);
      pos = e;
    }
    if (s.hi > pos) update(pos, s.hi, false);
  }
}

std::vector<std::pair<std::string, torch::Tensor>> FlatAdamW::gather_state(
    const std::vector<FlatShard>& shards, comm::Group* gather_over) const {
  torch::NoGradGuard no_grad;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> full;
  for (size_t i = 0; i < shards.size(); ++i) {
    if (gather_over) {
      auto a = torch::empty({shards[i].plan->numel}, exp_avg_[i].options()),
           b = torch::empty({shards[i].plan->numel}, exp_avg_[i].options());
      gather_over->allgather(a, exp_avg_[i]);
      gather_over->allgather(b, exp_avg_sq_[i]);
      full.emplace_back(a, b);
    } else {
      full.emplace_back(exp_avg_[i], exp_avg_sq_[i]);
    }
  }
  // Where each parameter lives: (shard, slot).
  std::vector<std::pair<size_t, BucketSlot>> where(params_.size());
  for (size_t i = 0; i < shards.size(); ++i)
    for (const BucketSlot& slot : shards[i].plan->slots) where[size_t(slot.param)] = {i, slot};
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (size_t p = 0; p < params_.size(); ++p) {
    const auto& [i, slot] = where[p];
    auto& [a, b] = full[i];
    out.emplace_back(params_[p].name + ".exp_avg",
                     a.narrow(0, slot.offset, slot.numel).view(params_[p].sizes));
    out.emplace_back(params_[p].name + ".exp_avg_sq",
                     b.narrow(0, slot.offset, slot.numel).view(params_[p].sizes));
  }
  return out;
}

Status FlatAdamW::load_state(const std::vector<FlatShard>& shards,
                             const std::map<std::string, torch::Tensor>& tensors,
                             const std::string& prefix, int64_t step_count) {
  if (step_count < 0)
    return Status::InvalidArgument("optimizer step count must be >= 0, got " +
                                   std::to_string(step_count));
  CAIRN_RETURN_IF_ERROR(check_whole_tensors(params_, tensors, prefix, {".exp_avg", ".exp_avg_sq"},
                                            "optimizer state"));
  load_shard_parts(params_, shards, tensors, prefix, ".exp_avg", exp_avg_);
  load_shard_parts(params_, shards, tensors, prefix, ".exp_avg_sq", exp_avg_sq_);
  steps_ = step_count;
  return Status::Ok();
}

Status check_whole_tensors(const std::vector<FlatParam>& params,
                           const std::map<std::string, torch::Tensor>& tensors,
                           const std::string& prefix, const std::vector<std::string>& suffixes,
                           const char* what) {
  for (const FlatParam& p : params)
    for (const std::string& suffix : suffixes) {
      const std::string key = prefix + p.name + suffix;
      auto it = tensors.find(key);
      if (it == tensors.end())
        return Status::InvalidArgument(std::string(what) + " '" + key +
                                       "' is missing from the checkpoint");
      if (!it->second.defined() || !it->second.sizes().equals(p.sizes) ||
          it->second.scalar_type() != torch::kFloat)
        return Status::InvalidArgument(std::string(what) + " '" + key +
                                       "' has a different shape or dtype than the parameter");
    }
  return Status::Ok();
}

void load_shard_parts(const std::vector<FlatParam>& params, const std::vector<FlatShard>& shards,
                      const std::map<std::string, torch::Tensor>& tensors,
                      const std::string& prefix, const std::string& suffix,
                      const std::vector<torch::Tensor>& dst) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < shards.size(); ++i) {
    const FlatShard& s = shards[i];
    torch::Tensor d = dst[i];
    d.zero_();
    for (const BucketSlot& slot : s.plan->slots) {
      const SlotPart part = slot_part(slot, s.lo, s.hi);
      const int64_t len = part.end - part.begin;
      if (len <= 0) continue;
      const torch::Tensor& src = tensors.at(prefix + params[size_t(slot.param)].name + suffix);
      d.narrow(0, slot.offset + part.begin - s.lo, len)
          .copy_(src.reshape({-1}).narrow(0, part.begin, len));
    }
  }
}

}  // namespace cairn::parallel
