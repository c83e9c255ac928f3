// Bucketed, overlapped gradient all-reduce and the (optionally sharded) AdamW update.
#include "cairn/parallel/data_parallel.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "cairn/comm/group.h"
#include "cairn/core/mutex.h"
#include "cairn/parallel/buckets.h"
#include "parallel/flat_adamw_impl.h"

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
    torch::Tensor param, grad;  // (numel) padded
    torch::Tensor shard_grad;   // ZeRO-2: the reduced gradient of this rank's shard only
    torch::Tensor staging;      // ZeRO-2: this micro-batch's gradients, until sent
    int64_t lo = 0, hi = 0;     // the shard this rank updates
    int pending = 0;            // gradients still to arrive in a synced backward
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
  torch::TensorOptions buffers = torch::kFloat;  // fp32 on the parameters' device
  bool shard_grads = false;                      // ZeRO-2 with more than one rank
  std::vector<InFlight> in_flight;
  std::vector<Param> params;
  std::vector<Flat> flats;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;  // keeps hooks alive
  core::Mutex mu;  // hooks may run on autograd's thread
  bool sync CAIRN_GUARDED_BY(mu) = false;
  int next_launch CAIRN_GUARDED_BY(mu) = 0;
  std::unique_ptr<FlatAdamW> optimizer;

  int world() const { return group ? group->size() : 1; }
  int rank() const { return group ? group->rank() : 0; }
  // ZeRO-1/2 over more than one rank: each rank updates (and keeps the moments of) its shard.
  bool shard_state() const { return options.zero_stage >= 1 && world() > 1; }

  // This rank's shard of every bucket, as the optimizer updates it.
  std::vector<FlatShard> shards() {
    std::vector<FlatShard> out;
    for (Flat& f : flats)
      out.push_back({&f.plan, f.lo, f.hi, f.param.narrow(0, f.lo, f.hi - f.lo),
                     shard_grads ? f.shard_grad : f.grad.narrow(0, f.lo, f.hi - f.lo)});
    return out;
  }

  // ZeRO-2: moves the parameter's gradient into its bucket's staging buffer and frees it.
  void stage(Param& p) CAIRN_REQUIRES(mu) {
    Flat& f = flats[size_t(p.bucket)];
    if (!f.staging.defined()) f.staging = torch::zeros({f.plan.numel}, buffers);
    f.staging.narrow(0, p.slot.offset, p.slot.numel).copy_(p.tensor.grad().reshape({-1}));
    p.tensor.mutable_grad() = torch::Tensor();
  }

  // ZeRO-2: starts the all-reduce of the bucket's staging buffer (zeros when nothing was staged)
  // and hands the buffer to it. Gloo has no reduce-scatter: the bucket is all-reduced and each
  // rank keeps its shard (drain()).
  void launch_staged(int bucket) CAIRN_REQUIRES(mu) {
    Flat& f = flats[size_t(bucket)];
    if (!f.staging.defined()) f.staging = torch::zeros({f.plan.numel}, buffers);
    InFlight x{bucket, f.staging, {}};
    x.work = group->allreduce_async(x.staging);
    in_flight.push_back(std::move(x));
    f.staging = torch::Tensor();
  }

  void launch_ready() CAIRN_REQUIRES(mu) {
    while (next_launch < int(flats.size()) && flats[size_t(next_launch)].pending == 0) {
      Flat& f = flats[size_t(next_launch)];
      if (shard_grads) {
        launch_staged(next_launch);
      } else {
        f.work = group->allreduce_async(f.grad);
      }
      f.launched = true;
      ++next_launch;
    }
  }

  // ZeRO-2: waits for the reductions in flight and adds each rank's shard to its gradient.
  // Called under mu, or once no hook can run (after backward).
  void drain() {
    for (auto& x : in_flight) {
      x.work.wait();
      Flat& f = flats[size_t(x.bucket)];
      f.shard_grad.add_(x.staging.narrow(0, f.lo, f.hi - f.lo));
    }
    in_flight.clear();
  }

  // reduce_on_flush: the gradients made since the last flush, by bucket, reduced.
  void flush() CAIRN_REQUIRES(mu) {
    drain();  // the previous flush's: one round of staging buffers at a time
    for (Param& p : params)
      if (p.tensor.grad().defined()) stage(p);
    for (size_t b = 0; b < flats.size(); ++b)
      if (flats[b].staging.defined()) launch_staged(int(b));
  }

  void on_grad_ready(int param_index) {
    core::MutexLock lock(mu);
    if (shard_grads && options.reduce_on_flush) return;  // flush() takes them
    if (!group || (!sync && !shard_grads)) return;
    Param& p = params[size_t(param_index)];
    if (shard_grads) stage(p);
    if (--flats[size_t(p.bucket)].pending == 0) launch_ready();
  }
};

namespace {

// Runs after a parameter's gradient has been accumulated into its bucket view.
class GradReadyHook : public torch::autograd::FunctionPostHook {
 public:
  GradReadyHook(std::weak_ptr<DataParallel::Impl> impl, int param)
      : impl_(std::move(impl)), param_(param) {}
  // Autograd calls a parameter's accumulator (and this hook) with an undefined gradient when the
  // function using it gave none, e.g. a projection whose weight gradient is deferred to a later
  // pass (model::WeightGradStore): such a parameter is not ready.
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& inputs) override {
    if (inputs.empty() || !inputs[0].defined()) return outputs;
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
  if (!named.empty())
    m.buffers = torch::TensorOptions(torch::kFloat).device(named[0].second.device());
  for (auto& [name, t] : named) {
    TORCH_CHECK(t.scalar_type() == torch::kFloat && t.device() == named[0].second.device(),
                "DataParallel: parameter ", name, " must be fp32 on ", named[0].second.device(),
                " like the others");
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
    f.param = torch::zeros({f.plan.numel}, m.buffers);
    if (!m.shard_grads) f.grad = torch::zeros({f.plan.numel}, m.buffers);
    int64_t shard = f.plan.numel / world;
    f.lo = options.zero_stage >= 1 ? m.rank() * shard : 0;
    f.hi = options.zero_stage >= 1 ? f.lo + shard : f.plan.numel;
    if (m.shard_grads) f.shard_grad = torch::zeros({f.hi - f.lo}, m.buffers);
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
  std::vector<FlatParam> fps;
  for (const Impl::Param& p : m.params) fps.push_back({p.name, p.tensor.sizes().vec(), p.decay});
  std::vector<int64_t> shard_numels;
  for (const Impl::Flat& f : m.flats) shard_numels.push_back(f.hi - f.lo);
  m.optimizer =
      std::make_unique<FlatAdamW>(options.adam, std::move(fps), shard_numels, m.buffers.device());
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

void DataParallel::scale_grads(double factor) {
  torch::NoGradGuard no_grad;
  for (auto& f : impl_->flats) (impl_->shard_grads ? f.shard_grad : f.grad).mul_(factor);
}

void DataParallel::set_sync(bool on) {
  core::MutexLock lock(impl_->mu);
  if (impl_->shard_grads && impl_->options.reduce_on_flush) {
    impl_->sync = on;
    return;
  }
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
    core::MutexLock lock(m.mu);
    TORCH_CHECK(m.sync, "finish_backward without set_sync(true)");
    if (m.shard_grads && m.options.reduce_on_flush) {
      m.flush();  // what came since the last flush
    } else {
      // Parameters that got no gradient this step: send their buckets anyway, in order.
      for (auto& f : m.flats) f.pending = 0;
      m.launch_ready();
    }
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
  Impl& m = *impl_;
  std::vector<torch::Tensor> grads;
  for (auto& f : m.flats) grads.push_back(m.shard_grads ? f.shard_grad : f.grad);
  return m.optimizer->clip_grad_norm(grads, m.shard_grads ? m.group : nullptr, max_norm);
}

void DataParallel::clip_to(double norm, double max_norm) {
  impl_->optimizer->clip_to(norm, max_norm);
}

void DataParallel::flush_grads() {
  Impl& m = *impl_;
  TORCH_CHECK(m.options.reduce_on_flush, "flush_grads without options.reduce_on_flush");
  if (!m.shard_grads) return;
  core::MutexLock lock(m.mu);
  m.flush();
}

bool DataParallel::shards_gradients() const { return impl_->shard_grads; }

std::vector<torch::Tensor> DataParallel::grad_parts(
    const std::function<bool(const std::string&)>& select) {
  Impl& m = *impl_;
  std::vector<torch::Tensor> out;
  auto by_name = [&](int64_t param) { return select(m.params[size_t(param)].name); };
  for (auto& f : m.flats) {
    // Without ZeRO-2 every rank holds the whole buffer's gradient.
    auto parts = m.shard_grads ? shard_parts(f.plan, f.lo, f.hi, f.shard_grad, by_name)
                               : shard_parts(f.plan, 0, f.plan.numel, f.grad, by_name);
    for (auto& part : parts) out.push_back(part);
  }
  return out;
}

void DataParallel::step(double lr) {
  Impl& m = *impl_;
  m.optimizer->step(m.shards(), lr);
  if (!m.shard_state()) return;
  torch::NoGradGuard no_grad;
  for (auto& f : m.flats) {  // every rank takes the others' updated shards
    auto mine = f.param.narrow(0, f.lo, f.hi - f.lo).clone();
    m.group->allgather(f.param, mine);
  }
}

int64_t DataParallel::step_count() const { return impl_->optimizer->step_count(); }

DataParallel::NamedParams DataParallel::gather_state() {
  Impl& m = *impl_;
  return m.optimizer->gather_state(m.shards(), m.shard_state() ? m.group : nullptr);
}

Status DataParallel::load_state(const std::map<std::string, torch::Tensor>& tensors,
                                const std::string& prefix, int64_t step_count) {
  Impl& m = *impl_;
  return m.optimizer->load_state(m.shards(), tensors, prefix, step_count);
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
