// ZeRO-3 stage execution: per-stage parameter gathering and release, the stage autograd node
// (recompute in backward) and gradient reduction into the shards.
#include "cairn/parallel/zero3.h"

#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/torch.h>

#include <algorithm>
#include <unordered_map>

#include "parallel/zero3_impl.h"

namespace cairn::parallel {
namespace {

// Autocast on the CPU and on the GPU (CUDA's is libtorch's "enabled" / "gpu dtype").
struct AutocastState {
  bool cpu = false, gpu = false;
  at::ScalarType cpu_dtype = at::kBFloat16, gpu_dtype = at::kHalf;
  static AutocastState current() {
    return {at::autocast::is_cpu_enabled(), at::autocast::is_enabled(),
            at::autocast::get_autocast_cpu_dtype(), at::autocast::get_autocast_gpu_dtype()};
  }
  void apply() const {
    at::autocast::set_cpu_enabled(cpu);
    at::autocast::set_autocast_cpu_dtype(cpu_dtype);
    at::autocast::set_enabled(gpu);
    at::autocast::set_autocast_gpu_dtype(gpu_dtype);
  }
};

// Sets autocast to `state` with the cast cache off, and restores the previous settings on
// exit. The cache would keep cast copies of parameters alive after their stage is released
// (and serve them after the parameter has been re-pointed), so stages never use it.
class AutocastGuard {
 public:
  explicit AutocastGuard(const AutocastState& state)
      : prev_(AutocastState::current()), prev_cache_(at::autocast::is_autocast_cache_enabled()) {
    state.apply();
    at::autocast::set_autocast_cache_enabled(false);
  }
  ~AutocastGuard() {
    prev_.apply();
    at::autocast::set_autocast_cache_enabled(prev_cache_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  AutocastState prev_;
  bool prev_cache_;
};

// Stage s's full parameters for the lifetime of this object (gathering is collective).
class GatheredStage {
 public:
  GatheredStage(Zero3::Impl& m, int64_t s) : m_(m), s_(s) {
    try {
      for (int f : m.stage_flats[size_t(s)]) m.point(f, m.gather(f));
    } catch (...) {
      release();
      throw;
    }
  }
  ~GatheredStage() { release(); }
  GatheredStage(const GatheredStage&) = delete;
  GatheredStage& operator=(const GatheredStage&) = delete;

 private:
  void release() {
    for (int f : m_.stage_flats[size_t(s_)]) m_.point(f, torch::Tensor());
  }
  Zero3::Impl& m_;
  int64_t s_;
};

// Backward of one stage: gathers its parameters, recomputes it from the saved input with
// grad enabled, backpropagates the incoming gradient, and hands the parameter gradients to
// Impl::reduce. One next edge: the stage input (invalid for stage 0 and inputs without grad).
class StageBackward : public torch::autograd::Node {
 public:
  StageBackward(std::weak_ptr<Zero3::Impl> impl, int64_t stage, const torch::Tensor& input,
                const torch::Tensor& targets, bool input_grad, AutocastState autocast)
      : impl_(std::move(impl)),
        stage_(stage),
        input_(input.detach()),
        targets_(targets.defined() ? targets.detach() : targets),
        version_(input._version()),
        input_grad_(input_grad),
        autocast_(autocast) {}

  std::string name() const override { return "Zero3StageBackward"; }
  void release_variables() override {
    input_.reset();
    targets_.reset();
  }

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    auto impl = impl_.lock();
    TORCH_CHECK(impl, "Zero3: backward after the Zero3 object was destroyed");
    TORCH_CHECK(input_.defined(), "Zero3: backward through stage ", stage_,
                " a second time; use retain_graph=true for that");
    TORCH_CHECK(input_._version() == version_, "Zero3: the input of stage ", stage_,
                " was modified in place after the forward pass");
    Zero3::Impl& m = *impl;
    torch::Tensor gy = grads[0].defined() ? grads[0] : input_metadata(0).zeros_like();
    const auto& ids = m.stage_params[size_t(stage_)];
    std::vector<torch::Tensor> param_grads(ids.size());
    torch::Tensor gx;
    {
      AutocastGuard autocast(autocast_);
      GatheredStage gathered(m, stage_);
      torch::AutoGradMode grad_on(true);
      torch::Tensor x = input_grad_ ? input_.detach().requires_grad_() : input_;
      torch::Tensor y = m.run(stage_, x, targets_);
      std::vector<torch::Tensor> wrt;
      for (int id : ids) wrt.push_back(m.params[size_t(id)].tensor);
      if (input_grad_) wrt.push_back(x);
      if (y.requires_grad()) {
        auto g = torch::autograd::grad({y}, wrt, {gy}, /*retain_graph=*/false,
                                       /*create_graph=*/false, /*allow_unused=*/true);
        for (size_t i = 0; i < ids.size(); ++i) param_grads[i] = std::move(g[i]);
        if (input_grad_) gx = std::move(g.back());
      }
    }  // the full parameters are released here, before the reduction allocates its buffers
    m.reduce(stage_, param_grads);
    return {gx};
  }

 private:
  std::weak_ptr<Zero3::Impl> impl_;
  int64_t stage_;
  torch::Tensor input_, targets_;  // what the stage ran on (detached)
  uint32_t version_;
  bool input_grad_;
  AutocastState autocast_;
};

// Forward of one stage: gathered parameters, no graph inside; the output gets a
// StageBackward node when grad mode is on.
torch::Tensor run_stage(const std::shared_ptr<Zero3::Impl>& impl, int64_t s, const torch::Tensor& x,
                        const torch::Tensor& targets) {
  Zero3::Impl& m = *impl;
  const bool record = torch::GradMode::is_enabled();
  const AutocastState autocast = AutocastState::current();
  torch::Tensor y;
  {
    AutocastGuard no_cache(autocast);
    GatheredStage gathered(m, s);
    torch::NoGradGuard no_grad;
    y = m.run(s, x, targets);
  }
  if (!record) return y;
  TORCH_CHECK(y.defined() && y.is_floating_point(), "Zero3: stage ", s,
              " must return a floating-point tensor");
  // A fresh tensor without view history, so that it can take the node as its grad_fn.
  y = y.detach();
  const bool input_grad = s > 0 && x.requires_grad();
  auto node = std::make_shared<StageBackward>(impl, s, x, targets, input_grad, autocast);
  node->set_next_edges(torch::autograd::collect_next_edges(input_grad ? x : torch::Tensor()));
  torch::autograd::set_history(y, node);
  return y;
}

}  // namespace

torch::Tensor Zero3::Impl::run(int64_t s, const torch::Tensor& x,
                               const torch::Tensor& targets) const {
  if (s == 0) return model.first(x);
  if (s == num_stages() - 1) return model.last(x, targets);
  return model.middle(s, x);
}

torch::Tensor Zero3::Impl::gather(int f) const {
  const Flat& fl = flats[size_t(f)];
  if (world() == 1) return fl.param;
  auto full = torch::empty({fl.plan.numel}, buffers);
  group->allgather(full, fl.param);
  return full;
}

void Zero3::Impl::point(int f, const torch::Tensor& full) {
  for (const auto& slot : flats[size_t(f)].plan.slots) {
    Param& p = params[size_t(slot.param)];
    if (full.defined()) {
      p.tensor.set_data(full.narrow(0, slot.offset, slot.numel).view(p.sizes));
    } else {
      p.tensor.set_data(torch::empty({0}, buffers));
    }
  }
}

void Zero3::Impl::reduce(int64_t s, const std::vector<torch::Tensor>& grads) {
  torch::NoGradGuard no_grad;
  std::unordered_map<int, torch::Tensor> by_param;
  const auto& ids = stage_params[size_t(s)];
  for (size_t i = 0; i < ids.size(); ++i)
    if (grads[i].defined()) by_param[ids[i]] = grads[i].reshape({-1});
  for (int f : stage_flats[size_t(s)]) {
    Flat& fl = flats[size_t(f)];
    if (world() == 1) {
      for (const auto& slot : fl.plan.slots) {
        auto it = by_param.find(slot.param);
        if (it != by_param.end()) fl.grad.narrow(0, slot.offset, slot.numel).add_(it->second);
      }
      continue;
    }
    // Every rank reduces every buffer of the stage, with or without gradients in it.
    auto buffer = torch::zeros({fl.plan.numel}, buffers);
    for (const auto& slot : fl.plan.slots) {
      auto it = by_param.find(slot.param);
      if (it != by_param.end()) buffer.narrow(0, slot.offset, slot.numel).copy_(it->second);
    }
    drain(kMaxInFlight - 1);
    InFlight x{f, buffer, {}};
    x.work = group->allreduce_async(x.buffer);
    in_flight.push_back(std::move(x));
  }
}

void Zero3::Impl::drain(size_t keep) {
  torch::NoGradGuard no_grad;
  while (in_flight.size() > keep) {
    InFlight& x = in_flight.front();
    x.work.wait();
    Flat& fl = flats[size_t(x.flat)];
    fl.grad.add_(x.buffer.narrow(0, fl.lo, fl.hi - fl.lo));
    in_flight.pop_front();
  }
}

Zero3::Zero3(StagedModel model, DecayFn decays, comm::Group* group, AdamHyper adam)
    : impl_(std::make_shared<Impl>()) {
  Impl& m = *impl_;
  const size_t n = model.stage_params.size();
  TORCH_CHECK(n >= 2, "Zero3: the model needs at least two stages, got ", n);
  TORCH_CHECK(model.first && model.last && (n == 2 || model.middle),
              "Zero3: every stage function must be set");
  m.group = group;
  std::unordered_map<const void*, int> index;  // by TensorImpl: tied parameters are one
  std::vector<int64_t> numels;
  for (size_t s = 0; s < n; ++s) {
    std::vector<int> uses;
    for (auto& [name, t] : model.stage_params[s]) {
      if (m.params.empty()) m.buffers = torch::TensorOptions(torch::kFloat).device(t.device());
      TORCH_CHECK(
          t.defined() && t.scalar_type() == torch::kFloat && t.device() == m.buffers.device(),
          "Zero3: parameter ", name, " must be fp32 on ", m.buffers.device(), " like the others");
      TORCH_CHECK(t.is_leaf() && t.requires_grad(), "Zero3: parameter ", name,
                  " must be a leaf that requires grad");
      auto [it, added] = index.emplace(t.unsafeGetTensorImpl(), int(m.params.size()));
      if (added) {
        m.params.push_back({name, t, t.sizes().vec(), decays(name, t), 0, {}});
        numels.push_back(t.numel());
      }
      if (std::find(uses.begin(), uses.end(), it->second) == uses.end()) uses.push_back(it->second);
    }
    m.stage_params.push_back(std::move(uses));
  }
  m.model = std::move(model);
  const int world = m.world();
  Zero3Layout layout = plan_zero3_layout(m.stage_params, numels, world);
  m.stage_flats = layout.stage_flats;
  torch::NoGradGuard no_grad;
  for (auto& b : layout.flats) {
    Impl::Flat fl;
    fl.plan = b;
    const int64_t shard = b.numel / world;
    fl.lo = m.rank() * shard;
    fl.hi = fl.lo + shard;
    auto full = torch::zeros({b.numel}, m.buffers);
    for (const auto& slot : b.slots)
      full.narrow(0, slot.offset, slot.numel)
          .copy_(m.params[size_t(slot.param)].tensor.reshape({-1}));
    if (world > 1) group->broadcast(full, 0);
    fl.param = world > 1 ? full.narrow(0, fl.lo, shard).clone() : full;
    fl.grad = torch::zeros({shard}, m.buffers);
    m.flats.push_back(std::move(fl));
  }
  std::vector<FlatParam> fps;
  for (const Impl::Param& p : m.params) fps.push_back({p.name, p.sizes, p.decay});
  std::vector<int64_t> shard_numels;
  for (const Impl::Flat& fl : m.flats) shard_numels.push_back(fl.hi - fl.lo);
  m.optimizer = std::make_unique<FlatAdamW>(adam, std::move(fps), shard_numels, m.buffers.device());
  for (size_t i = 0; i < m.params.size(); ++i) {
    Impl::Param& p = m.params[i];
    p.flat = layout.param_flat[i];
    p.slot = layout.param_slot[i];
    p.tensor.mutable_grad() = torch::Tensor();
  }
  for (size_t f = 0; f < m.flats.size(); ++f) m.point(int(f), torch::Tensor());
}

Zero3::~Zero3() {
  // Outstanding collectives must finish before their buffers go away.
  for (auto& x : impl_->in_flight) {
    try {
      x.work.wait();
    } catch (const std::exception&) {
    }
  }
}

torch::Tensor Zero3::loss(const torch::Tensor& idx, const torch::Tensor& targets) {
  TORCH_CHECK(!impl_->full_params, "Zero3::loss: call release_full_params() first");
  const int64_t n = impl_->num_stages();
  torch::Tensor x = run_stage(impl_, 0, idx, torch::Tensor());
  for (int64_t s = 1; s < n - 1; ++s) x = run_stage(impl_, s, x, torch::Tensor());
  return run_stage(impl_, n - 1, x, targets);
}

void Zero3::zero_grad() {
  impl_->drain(0);
  for (auto& fl : impl_->flats) fl.grad.zero_();
}

void Zero3::finish_backward() {
  Impl& m = *impl_;
  m.drain(0);
  if (m.world() == 1) return;
  const double inv = 1.0 / double(m.world());
  for (auto& fl : m.flats) fl.grad.mul_(inv);
}

void Zero3::gather_full_params() {
  Impl& m = *impl_;
  TORCH_CHECK(!m.full_params, "Zero3::gather_full_params: already gathered");
  m.full_params = true;
  torch::NoGradGuard no_grad;
  for (size_t f = 0; f < m.flats.size(); ++f) {
    auto full = m.world() > 1 ? m.gather(int(f)) : m.flats[f].param.clone();
    m.point(int(f), full);
  }
}

void Zero3::release_full_params() {
  Impl& m = *impl_;
  for (size_t f = 0; f < m.flats.size(); ++f) m.point(int(f), torch::Tensor());
  m.full_params = false;
}

bool Zero3::full_params_materialized() const { return impl_->full_params; }

}  // namespace cairn::parallel
