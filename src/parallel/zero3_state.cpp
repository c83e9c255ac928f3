// ZeRO-3's optimizer (the shared FlatAdamW over this rank's shards), parameter (re)loading from
// whole tensors, and the memory report.
#include <torch/torch.h>

#include <cmath>

#include "parallel/zero3_impl.h"

namespace cairn::parallel {

double Zero3::clip_grad_norm(double max_norm) {
  Impl& m = *impl_;
  std::vector<torch::Tensor> grads;
  for (auto& fl : m.flats) grads.push_back(fl.grad);
  return m.optimizer->clip_grad_norm(grads, m.world() > 1 ? m.group : nullptr, max_norm);
}

void Zero3::clip_to(double norm, double max_norm) { impl_->optimizer->clip_to(norm, max_norm); }

std::vector<torch::Tensor> Zero3::grad_parts(
    const std::function<bool(const std::string&)>& select) {
  Impl& m = *impl_;
  std::vector<torch::Tensor> out;
  auto by_name = [&](int64_t param) { return select(m.params[size_t(param)].name); };
  for (auto& fl : m.flats)
    for (auto& part : shard_parts(fl.plan, fl.lo, fl.hi, fl.grad, by_name)) out.push_back(part);
  return out;
}

void Zero3::step(double lr) {
  Impl& m = *impl_;
  TORCH_CHECK(!m.full_params, "Zero3::step: call release_full_params() first");
  m.optimizer->step(m.shards(), lr);
}

int64_t Zero3::step_count() const { return impl_->optimizer->step_count(); }

Zero3::NamedParams Zero3::gather_state() {
  Impl& m = *impl_;
  if (m.world() > 1)  // all-gathered into fresh buffers: already a snapshot
    return m.optimizer->gather_state(m.shards(), m.group);
  NamedParams out = m.optimizer->gather_state(m.shards(), nullptr);
  for (auto& [name, t] : out) t = t.clone();  // views of the live moments: a snapshot
  return out;
}

Status Zero3::load_state(const std::map<std::string, torch::Tensor>& tensors,
                         const std::string& prefix, int64_t step_count) {
  return impl_->optimizer->load_state(impl_->shards(), tensors, prefix, step_count);
}

Status Zero3::load_params(const std::map<std::string, torch::Tensor>& tensors,
                          const std::string& prefix) {
  Impl& m = *impl_;
  TORCH_CHECK(!m.full_params, "Zero3::load_params: call release_full_params() first");
  const std::vector<FlatParam>& params = m.optimizer->params();
  CAIRN_RETURN_IF_ERROR(check_whole_tensors(params, tensors, prefix, {""}, "parameter"));
  std::vector<torch::Tensor> dst;
  for (auto& fl : m.flats) dst.push_back(fl.param);
  load_shard_parts(params, m.shards(), tensors, prefix, "", dst);
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
