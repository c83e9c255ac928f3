// Bucketed, overlapped gradient all-reduce and the (optionally sharded) AdamW update.
#include "cairn/parallel/data_parallel.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <mutex>

#include "cairn/comm/group.h"
#include "cairn/parallel/buckets.h"
#include "parallel/adamw_kernel_impl.h"

namespace cairn::parallel {

struct DataParallel::Impl {
  struct Param {
    std::string name;
    torch::Tensor tensor;
    bool decay = false;
    int bucket = 0;
    BucketSlot slot;
  };
  struct Flat {
    Bucket plan;
    torch::Tensor param, grad;          // (numel) padded
    torch::Tensor exp_avg, exp_avg_sq;  // the shard this rank updates
    torch::Tensor shard_grad;           // ZeRO-2: the reduced gradient of that shard only
    torch::Tensor staging;              // ZeRO-2: this micro-batch's gradients, until sent
    int64_t lo = 0, hi = 0;             // that shard's range in the bucket
    int pending = 0;                    // gradients still to arrive in a synced backward
    bool launched = false;
    comm::Pending work;
  };

  struct InFlight {  // ZeRO-2: a bucket's gradients being reduced
    int bucket;
    torch::Tensor staging;
    comm::Pending work;
  };

  comm::Group* group = nullptr;
  DataParallelOptions options;
  bool shard_grads = false;  // ZeRO-2 with more than one rank
  std::vector<InFlight> in_flight;
  std::vector<Param> params;
  std::vector<Flat> flats;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;  // keeps hooks alive
  std::mutex mu;  // hooks may run on autograd's thread
  bool sync = false;
  int next_launch = 0;
  int64_t steps = 0;
  float grad_scale = 1.0f;  // clipping factor, applied inside the next update

  int world() const { return group ? group->size() : 1; }
  int rank() const { return group ? group->rank() : 0; }

  void launch_ready() {  // REQUIRES: mu held
    while (next_launch < int(flats.size()) && flats[size_t(next_launch)].pending == 0) {
      Flat& f = flats[size_t(next_launch)];
      if (shard_grads) {
        // Gloo has no reduce-scatter: the bucket is all-reduced and each rank keeps its shard.
        if (!f.staging.defined()) f.staging = torch::zeros({f.plan.numel});
        InFlight x{next_launch, f.staging, {}};
        x.work = group->allreduce_async(x.staging);
        in_flight.push_back(std::move(x));
        f.staging = torch::Tensor();
      } else {
        f.work = group->allreduce_async(f.grad);
      }
      f.launched = true;
      ++next_launch;
    }
  }

  // ZeRO-2: waits for the reductions in flight and adds each rank's shard to its gradient.
  void drain() {
    for (auto& x : in_flight) {
      x.work.wait();
      Flat& f = flats[size_t(x.bucket)];
      f.shard_grad.add_(x.staging.narrow(0, f.lo, f.hi - f.lo));
    }
    in_flight.clear();
  }

  void on_grad_ready(int param_index) {
    std::lock_guard<std::mutex> lock(mu);
    if (!group || (!sync && !shard_grads)) return;
    Param& p = params[size_t(param_index)];
    Flat& f = flats[size_t(p.bucket)];
    if (shard_grads) {
      // Move the gradient into the bucket's staging buffer and free it.
      if (!f.staging.defined()) f.staging = torch::zeros({f.plan.numel});
      f.staging.narrow(0, p.slot.offset, p.slot.numel).copy_(p.tensor.grad().reshape({-1}));
      p.tensor.mutable_grad() = torch::Tensor();
    }
    if (--f.pending == 0) launch_ready();
  }
};

namespace {

// Runs after a parameter's gradient has been accumulated into its bucket view.
class GradReadyHook : public torch::autograd::FunctionPostHook {
 public:
  GradReadyHook(std::weak_ptr<DataParallel::Impl> impl, int param)
      : impl_(std::move(impl)), param_(param) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    if (auto impl = impl_.lock()) impl->on_grad_ready(param_);
    return outputs;
  }

 private:
  std::weak_ptr<DataParallel::Impl> impl_;
  int param_;
};

}  // namespace

DataParallel::DataParallel(NamedParams named, DecayFn decays, comm::Group* group,
                           DataParallelOptions options)
    : impl_(std::make_shared<Impl>()) {
  Impl& m = *impl_;
  m.group = group;
  m.options = options;
  TORCH_CHECK(options.zero_stage >= 0 && options.zero_stage <= 2,
              "DataParallel: zero_stage must be 0, 1 or 2, got ", options.zero_stage);
  std::vector<int64_t> numels;
  for (auto& [name, t] : named) {
    TORCH_CHECK(t.scalar_type() == torch::kFloat && t.device().is_cpu(), "DataParallel: parameter ",
                name, " must be fp32 on CPU");
    m.params.push_back({name, t, decays(name, t), 0, {}});
    numels.push_back(t.numel());
  }
  const int world = m.world();
  m.shard_grads = options.zero_stage >= 2 && world > 1;
  auto plan = plan_buckets(numels, std::max<int64_t>(1, options.bucket_bytes / 4), world);
  torch::NoGradGuard no_grad;
  for (size_t b = 0; b < plan.size(); ++b) {
    Impl::Flat f;
    f.plan = plan[b];
    f.param = torch::zeros({f.plan.numel});
    if (!m.shard_grads) f.grad = torch::zeros({f.plan.numel});
    int64_t shard = f.plan.numel / world;
    f.lo = options.zero_stage >= 1 ? m.rank() * shard : 0;
    f.hi = options.zero_stage >= 1 ? f.lo + shard : f.plan.numel;
    f.exp_avg = torch::zeros({f.hi - f.lo});
    f.exp_avg_sq = torch::zeros({f.hi - f.lo});
    if (m.shard_grads) f.shard_grad = torch::zeros({f.hi - f.lo});
    for (auto& s : f.plan.slots) {
      Impl::Param& p = m.params[size_t(s.param)];
      p.bucket = int(b);
      p.slot = s;
      auto view = f.param.narrow(0, s.offset, s.numel).view(p.tensor.sizes());
      view.copy_(p.tensor);
      p.tensor.set_data(view);
      if (!m.shard_grads)
        p.tensor.mutable_grad() = f.grad.narrow(0, s.offset, s.numel).view(p.tensor.sizes());
    }
    m.flats.push_back(std::move(f));
  }
  if (group && world > 1) {
    for (size_t i = 0; i < m.params.size(); ++i) {
      auto acc = torch::autograd::impl::grad_accumulator(m.params[i].tensor);
      TORCH_CHECK(acc, "DataParallel: parameter ", m.params[i].name, " does not require grad");
      acc->add_post_hook(std::make_unique<GradReadyHook>(impl_, int(i)));
      m.accumulators.push_back(std::move(acc));
    }
  }
}

DataParallel::~DataParallel() {
  // Outstanding collectives must finish before their buffers go away.
  for (auto& f : impl_->flats) {
    try {
      f.work.wait();
    } catch (const std::exception&) {
    }
  }
  for (auto& x : impl_->in_flight) {
    try {
      x.work.wait();
    } catch (const std::exception&) {
    }
  }
}

void DataParallel::broadcast_parameters() {
  if (!impl_->group || impl_->world() == 1) return;
  for (auto& f : impl_->flats) impl_->group->broadcast(f.param, 0);
}

void DataParallel::zero_grad() {
  for (auto& f : impl_->flats) {
    if (impl_->shard_grads) {
      f.shard_grad.zero_();
    } else {
      f.grad.zero_();
    }
  }
  if (impl_->shard_grads)
    for (auto& p : impl_->params) p.tensor.mutable_grad() = torch::Tensor();
}

void DataParallel::set_sync(bool on) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  // ZeRO-2 reduces every micro-batch (no full gradient is kept between them).
  if (impl_->shard_grads) impl_->drain();
  impl_->sync = on;
  impl_->next_launch = 0;
  for (auto& f : impl_->flats) {
    f.pending = int(f.plan.slots.size());
    f.launched = false;
  }
}

void DataParallel::finish_backward() {
  Impl& m = *impl_;
  if (!m.group || m.world() == 1) return;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    TORCH_CHECK(m.sync, "finish_backward without set_sync(true)");
    // Parameters that got no gradient this step: send their buckets anyway, in order.
    for (auto& f : m.flats) f.pending = 0;
    m.launch_ready();
    m.sync = false;
  }
  const double inv = 1.0 / double(m.world());
  if (m.shard_grads) {
    m.drain();
    for (auto& f : m.flats) f.shard_grad.mul_(inv);
    return;
  }
  for (auto& f : m.flats) {
    f.work.wait();
    f.grad.mul_(inv);
  }
}

double DataParallel::clip_grad_norm(double max_norm) {
  torch::NoGradGuard no_grad;
  double sq = 0;
  for (auto& f : impl_->flats) {
    const torch::Tensor& g = impl_->shard_grads ? f.shard_grad : f.grad;
    sq += g.dot(g).item<double>();
  }
  if (impl_->shard_grads) {  // each rank holds a disjoint shard: the norm is their sum
    auto t = torch::tensor({sq}, torch::kDouble);
    impl_->group->allreduce(t);
    sq = t.item<double>();
  }
  double norm = std::sqrt(sq);
  impl_->grad_scale = max_norm > 0 && norm > max_norm ? float(max_norm / (norm + 1e-6)) : 1.0f;
  return norm;
}

void DataParallel::step(double lr) {
  Impl& m = *impl_;
  torch::NoGradGuard no_grad;
  ++m.steps;
  const AdamHyper& h = m.options.adam;
  const AdamCoeffs c = adam_coeffs(h, m.steps, lr, m.grad_scale);
  m.grad_scale = 1.0f;
  for (auto& f : m.flats) {
    float* p = f.param.data_ptr<float>();
    // Gradient of bucket position i: the full bucket, or (ZeRO-2) the shard starting at lo.
    const float* gfull = m.shard_grads ? nullptr : f.grad.data_ptr<float>();
    const float* gshard = m.shard_grads ? f.shard_grad.data_ptr<float>() : nullptr;
    auto g = [&](int64_t i) { return gfull ? gfull + i : gshard + (i - f.lo); };
    float* ma = f.exp_avg.data_ptr<float>();
    float* va = f.exp_avg_sq.data_ptr<float>();
    // Walk the shard [lo, hi) as runs of one parameter each (decay is per parameter); the
    // padding after the last slot is updated too (it stays zero: its gradient is zero).
    int64_t pos = f.lo;
    for (auto& s : f.plan.slots) {
      auto part = slot_part(s, f.lo, f.hi);
      if (part.end <= part.begin) continue;
      int64_t b = s.offset + part.begin, e = s.offset + part.end;
      if (b > pos)
        adamw_update(p + pos, g(pos), ma + (pos - f.lo), va + (pos - f.lo), b - pos, c, false);
      adamw_update(p + b, g(b), ma + (b - f.lo), va + (b - f.lo), e - b, c,
                   m.params[size_t(s.param)].decay && h.weight_decay != 0);
      pos = e;
    }
    if (f.hi > pos)
      adamw_update(p + pos, g(pos), ma + (pos - f.lo), va + (pos - f.lo), f.hi - pos, c, false);
    if (m.options.zero_stage >= 1 && m.world() > 1) {
      auto mine = f.param.narrow(0, f.lo, f.hi - f.lo).clone();
      m.group->allgather(f.param, mine);
    }
  }
}

int64_t DataParallel::step_count() const { return impl_->steps; }

DataParallel::NamedParams DataParallel::gather_state() {
  Impl& m = *impl_;
  NamedParams out;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> full;
  for (auto& f : m.flats) {
    if (m.options.zero_stage >= 1 && m.world() > 1) {
      auto a = torch::empty({f.plan.numel}), b = torch::empty({f.plan.numel});
      m.group->allgather(a, f.exp_avg);
      m.group->allgather(b, f.exp_avg_sq);
      full.emplace_back(a, b);
    } else {
      full.emplace_back(f.exp_avg, f.exp_avg_sq);
    }
  }
  for (auto& p : m.params) {
    auto& [a, b] = full[size_t(p.bucket)];
    out.emplace_back(p.name + ".exp_avg",
                     a.narrow(0, p.slot.offset, p.slot.numel).view(p.tensor.sizes()));
    out.emplace_back(p.name + ".exp_avg_sq",
                     b.narrow(0, p.slot.offset, p.slot.numel).view(p.tensor.sizes()));
  }
  return out;
}

Status DataParallel::load_state(const std::map<std::string, torch::Tensor>& tensors,
                                const std::string& prefix, int64_t step_count) {
  Impl& m = *impl_;
  for (auto& p : m.params)
    for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
      auto it = tensors.find(prefix + p.name + suffix);
      if (it == tensors.end())
        return Status::InvalidArgument("optimizer state '" + prefix + p.name + suffix +
                                       "' is missing from the checkpoint");
      if (!it->second.sizes().equals(p.tensor.sizes()) || it->second.scalar_type() != torch::kFloat)
        return Status::InvalidArgument("optimizer state '" + it->first +
                                       "' has a different shape or dtype than the parameter");
    }
  torch::NoGradGuard no_grad;
  // Each parameter's part inside this rank's [lo, hi) goes straight into the moments; what no
  // parameter covers there (bucket padding) is zero.
  for (auto& f : m.flats) {
    int64_t covered = 0;
    for (auto& s : f.plan.slots) {
      const int64_t b = std::max(s.offset, f.lo), e = std::min(s.offset + s.numel, f.hi);
      if (e > b) covered += e - b;
    }
    if (covered < f.hi - f.lo) {
      f.exp_avg.zero_();
      f.exp_avg_sq.zero_();
    }
    for (auto& s : f.plan.slots) {
      const int64_t b = std::max(s.offset, f.lo), e = std::min(s.offset + s.numel, f.hi);
      if (e <= b) continue;
      const auto& name = m.params[size_t(s.param)].name;
      f.exp_avg.narrow(0, b - f.lo, e - b)
          .copy_(
              tensors.at(prefix + name + ".exp_avg").reshape({-1}).narrow(0, b - s.offset, e - b));
      f.exp_avg_sq.narrow(0, b - f.lo, e - b)
          .copy_(tensors.at(prefix + name + ".exp_avg_sq")
                     .reshape({-1})
                     .narrow(0, b - s.offset, e - b));
    }
  }
  m.steps = step_count;
  return Status::Ok();
}

MemoryReport DataParallel::memory_report() const {
  MemoryReport r;
  int64_t padded = 0, shard = 0;
  for (auto& p : impl_->params) r.params += p.tensor.numel();
  for (auto& f : impl_->flats) {
    padded += f.plan.numel;
    shard += f.hi - f.lo;
  }
  const double n = double(std::max<int64_t>(1, r.params));
  r.param_bytes = 4.0 * double(padded) / n;
  r.grad_bytes = 4.0 * double(impl_->shard_grads ? shard : padded) / n;
  r.optimizer_bytes = 8.0 * double(shard) / n;
  return r;
}

}  // namespace cairn::parallel
