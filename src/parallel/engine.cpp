// parallelize() and its engines: replicated parameters (DataParallel: DDP, ZeRO-1/2), sharded
// parameters (Zero3), and tensor parallelism over the tp group with DDP or ZeRO-1 over dp.
// Context parallelism wraps them (ContextParallelEngine); a plan with pp above 1 gets the
// pipeline engine (pipeline_engine.cpp). See docs/architecture.md.
#include "cairn/parallel/engine.h"

#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <set>
#include <tuple>
#include <unordered_map>

#include "cairn/comm/group.h"
#include "cairn/comm/mesh_groups.h"
#include "cairn/model/language_model.h"
#include "cairn/model/param_specs.h"
#include "cairn/parallel/context_parallel.h"
#include "cairn/parallel/tensor_parallel.h"
#include "cairn/parallel/zero3.h"
#include "parallel/pipeline_engine_impl.h"
#include "parallel/tp_gradients_impl.h"

namespace cairn::parallel {
namespace {

// Whether a parameter decays, by its spec.
DataParallel::DecayFn decay_rule(const model::ModelConfig& config) {
  return [specs = model::param_specs(config)](const std::string& name, const torch::Tensor&) {
    const model::ParamSpec* spec = model::find_spec(specs, name);
    TORCH_CHECK(spec, "no spec for parameter ", name);
    return spec->decays;
  };
}

// Checks that every parameter of `config`'s model (by its specs) is in `tensors` with its
// shape: before anything is loaded, so that a bad checkpoint changes nothing.
Status check_params(const model::ModelConfig& config,
                    const std::map<std::string, torch::Tensor>& tensors,
                    const std::string& prefix) {
  for (const model::ParamSpec& spec : model::param_specs(config)) {
    auto it = tensors.find(prefix + spec.name);
    if (it == tensors.end())
      return Status::InvalidArgument("parameter '" + spec.name +
                                     "' is missing from the checkpoint");
    if (!it->second.sizes().equals(spec.shape))
      return Status::InvalidArgument("parameter '" + spec.name +
                                     "' has another shape in the checkpoint");
  }
  return Status::Ok();
}

class ReplicatedEngine : public Engine {
 public:
  ReplicatedEngine(std::shared_ptr<model::LanguageModel> m, comm::Group* group,
                   DataParallelOptions o)
      : model_(std::move(m)) {
    DataParallel::NamedParams params;
    for (auto& p : model_->named_parameters()) params.emplace_back(p.key(), p.value());
    dp_ = std::make_unique<DataParallel>(std::move(params), decay_rule(model_->config()), group, o);
    dp_->broadcast_parameters();
  }
  void zero_grad() override { dp_->zero_grad(); }
  torch::Tensor loss(const torch::Tensor& x, const torch::Tensor& y, bool last) override {
    dp_->set_sync(last);
    return model_->loss(x, y);
  }
  torch::Tensor eval_loss(const torch::Tensor& x, const torch::Tensor& y) override {
    return model_->loss(x, y);
  }
  bool set_last(bool last) override {
    dp_->set_sync(last);
    return true;
  }
  void finish_backward() override { dp_->finish_backward(); }
  Status scale_gradients(double factor) override {
    dp_->scale_grads(factor);
    return Status::Ok();
  }
  double clip_grad_norm(double max_norm) override { return dp_->clip_grad_norm(max_norm); }
  void step(double lr) override { dp_->step(lr); }
  int64_t step_count() const override { return dp_->step_count(); }
  NamedTensors gather_params() override {
    NamedTensors out;
    for (auto& p : model_->named_parameters()) out.emplace_back(p.key(), p.value().detach());
    return out;
  }
  NamedTensors gather_optimizer_state() override { return dp_->gather_state(); }
  Status load(const std::map<std::string, torch::Tensor>& tensors, const std::string& model_prefix,
              const std::string& optim_prefix, int64_t step_count) override {
    CAIRN_RETURN_IF_ERROR(check_params(model_->config(), tensors, model_prefix));
    CAIRN_RETURN_IF_ERROR(dp_->load_state(tensors, optim_prefix, step_count));
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : gather_params()) p.copy_(tensors.at(model_prefix + name));
    return Status::Ok();
  }
  MemoryReport memory_report() const override { return dp_->memory_report(); }

 private:
  std::shared_ptr<model::LanguageModel> model_;
  std::unique_ptr<DataParallel> dp_;
};

StagedModel to_staged(const std::shared_ptr<model::LanguageModel>& m);

}  // namespace

Engine::CheckpointShare Engine::checkpoint_share(const std::string& model_prefix,
                                                 const std::string& optim_prefix) {
  CheckpointShare share;
  for (auto& [name, t] : gather_params()) share.replicated.emplace_back(model_prefix + name, t);
  for (auto& [name, t] : gather_optimizer_state())
    share.replicated.emplace_back(optim_prefix + name, t);
  return share;
}

std::vector<double> Engine::forward_backward(const std::vector<MicroBatchInput>& micro_batches) {
  std::vector<double> losses;
  for (size_t i = 0; i < micro_batches.size(); ++i) {
    const MicroBatchInput& mb = micro_batches[i];
    torch::Tensor loss = this->loss(mb.x, mb.y, i + 1 == micro_batches.size());
    (mb.weight == 1 ? loss : loss * mb.weight).backward();
    losses.push_back(loss.item<double>());
  }
  return losses;
}

namespace {

// Tensor parallelism (Megatron's layout) over the tp group, DDP or ZeRO-1/2/3 over the dp group:
// every rank holds its tp slice of every parameter (shard_for_tensor_parallel, from the whole
// parameters every rank starts with) and DataParallel (ZeRO-0/1/2) or Zero3 (its stages then run
// the tensor-parallel model) averages the slices' gradients over dp.
// Under sequence parallelism the parameters every tp rank holds whole (norms, row-parallel
// biases, the position table) see only this rank's tokens: their gradients are summed over tp
// after backward. The clip norm sums the split parameters' squares over tp and counts the whole
// ones once. Checkpoints hold whole tensors (gathered over tp), so any layout loads them.
class TensorParallelEngine : public Engine {
 public:
  TensorParallelEngine(std::shared_ptr<model::LanguageModel> m, comm::Group* tp, comm::Group* dp,
                       bool sequence_parallel, DataParallelOptions o, bool zero3)
      : model_(std::move(m)),
        tp_(tp),
        dp_group_(dp),
        sp_(sequence_parallel),
        specs_(model::param_specs(model_->config())),
        grads_(model_->config(), tp, sequence_parallel) {
    shard_for_tensor_parallel(*model_, tp_, sp_);
    DataParallel::NamedParams params;
    for (auto& p : model_->named_parameters()) params.emplace_back(p.key(), p.value());
    if (zero3) {
      z3_ = std::make_unique<Zero3>(to_staged(model_), decay_rule(model_->config()), dp, o.adam);
      return;
    }
    dp_ = std::make_unique<DataParallel>(std::move(params), decay_rule(model_->config()), dp, o);
    dp_->broadcast_parameters();
  }
  void zero_grad() override { z3_ ? z3_->zero_grad() : dp_->zero_grad(); }
  torch::Tensor loss(const torch::Tensor& x, const torch::Tensor& y, bool last) override {
    if (z3_) return z3_->loss(x, y);
    dp_->set_sync(last);
    return model_->loss(x, y);
  }
  torch::Tensor eval_loss(const torch::Tensor& x, const torch::Tensor& y) override {
    return z3_ ? z3_->loss(x, y) : model_->loss(x, y);
  }
  bool set_last(bool last) override {
    if (z3_) return false;
    dp_->set_sync(last);
    return true;
  }
  void finish_backward() override {
    z3_ ? z3_->finish_backward() : dp_->finish_backward();
    grads_.sum_partial(parts());
  }
  double clip_grad_norm(double max_norm) override {
    // Under ZeRO-2/3 each dp rank holds a part of every gradient.
    auto sq = grads_.squares(parts());
    if (z3_ ? dp_group_ != nullptr : dp_->shards_gradients()) dp_group_->allreduce(sq);
    const double norm = std::sqrt(grads_.total(sq));
    z3_ ? z3_->clip_to(norm, max_norm) : dp_->clip_to(norm, max_norm);
    return norm;
  }
  void step(double lr) override { z3_ ? z3_->step(lr) : dp_->step(lr); }
  int64_t step_count() const override { return z3_ ? z3_->step_count() : dp_->step_count(); }
  NamedTensors gather_params() override {
    if (z3_) z3_->gather_full_params();
    NamedTensors out;
    for (auto& p : model_->named_parameters())
      out.emplace_back(p.key(), tp_gather(p.value(), spec(p.key()), model_->config(), tp_));
    if (z3_) z3_->release_full_params();
    return out;
  }
  NamedTensors gather_optimizer_state() override {
    NamedTensors out;
    for (auto& [name, t] : z3_ ? z3_->gather_state() : dp_->gather_state())
      out.emplace_back(name, tp_gather(t, spec(param_of(name)), model_->config(), tp_));
    return out;
  }
  // Each rank writes its own slices: a split tensor's pieces by the dp rank its index picks
  // (so dp replicas share the writing), the whole ones (norms, biases of row-parallel linears)
  // by whichever rank the caller picks. The optimizer state is first gathered over dp (1/tp of
  // the model's); nothing is gathered over tp.
  bool shares_pieces() const override { return true; }
  CheckpointShare checkpoint_share(const std::string& model_prefix,
                                   const std::string& optim_prefix) override {
    CheckpointShare share;
    const int dp = dp_group_ ? dp_group_->size() : 1, dp_rank = dp_group_ ? dp_group_->rank() : 0;
    int64_t index = 0;
    // copy: `t` is ZeRO-3's gathered parameter, freed before this returns.
    auto add = [&](const std::string& key, const std::string& param, const torch::Tensor& t,
                   bool copy) {
      const model::ParamSpec& s = spec(param);
      if (s.tp == model::TpSplit::kReplicated) {
        share.replicated.emplace_back(key, copy ? t.clone() : t);
        return;
      }
      if (index++ % dp != dp_rank) return;
      for (TpPiece& p : tp_pieces(t, s, model_->config(), tp_->rank(), tp_->size()))
        share.owned.push_back({key, copy ? p.tensor.clone() : p.tensor, s.shape, p.slice});
    };
    if (z3_) z3_->gather_full_params();
    for (auto& p : model_->named_parameters())
      add(model_prefix + p.key(), p.key(), p.value().detach(), z3_ != nullptr);
    if (z3_) z3_->release_full_params();
    for (auto& [name, t] : z3_ ? z3_->gather_state() : dp_->gather_state())
      add(optim_prefix + name, param_of(name), t, false);
    return share;
  }
  Status load(const std::map<std::string, torch::Tensor>& tensors, const std::string& model_prefix,
              const std::string& optim_prefix, int64_t step_count) override {
    CAIRN_RETURN_IF_ERROR(check_params(model_->config(), tensors, model_prefix));
    const int rank = tp_->rank(), size = tp_->size();
    std::map<std::string, torch::Tensor> local;
    for (const auto& [key, t] : tensors) {
      if (key.rfind(optim_prefix, 0) != 0) continue;
      const model::ParamSpec* s =
          model::find_spec(specs_, param_of(key.substr(optim_prefix.size())));
      if (!s || !t.sizes().equals(s->shape))
        return Status::InvalidArgument("optimizer state '" + key +
                                       "' does not match a parameter's shape");
      local[key] = tp_slice(t, *s, model_->config(), rank, size);
    }
    if (z3_) {
      CAIRN_RETURN_IF_ERROR(z3_->load_state(local, optim_prefix, step_count));
      std::map<std::string, torch::Tensor> params;
      for (const model::ParamSpec& s : specs_)
        params[model_prefix + s.name] =
            tp_slice(tensors.at(model_prefix + s.name), s, model_->config(), rank, size);
      return z3_->load_params(params, model_prefix);
    }
    CAIRN_RETURN_IF_ERROR(dp_->load_state(local, optim_prefix, step_count));
    torch::NoGradGuard no_grad;
    for (auto& p : model_->named_parameters())
      p.value().copy_(tp_slice(tensors.at(model_prefix + p.key()), spec(p.key()), model_->config(),
                               rank, size));
    return Status::Ok();
  }
  // Per parameter of the whole model: this rank holds about 1/tp of them (plus vocabulary
  // padding), and DataParallel's and Zero3's figures are per parameter it holds.
  MemoryReport memory_report() const override {
    MemoryReport r = z3_ ? z3_->memory_report() : dp_->memory_report();
    int64_t whole = 0;
    for (const model::ParamSpec& s : specs_) {
      int64_t n = 1;
      for (int64_t d : s.shape) n *= d;
      whole += n;
    }
    const double share = double(r.params) / double(whole);
    r.params = whole;
    r.param_bytes *= share;
    r.grad_bytes *= share;
    r.optimizer_bytes *= share;
    return r;
  }

 private:
  const model::ParamSpec& spec(const std::string& name) const {
    const model::ParamSpec* s = model::find_spec(specs_, name);
    TORCH_CHECK(s, "no spec for parameter ", name);
    return *s;
  }
  TpGradients::Parts parts() {
    return [this](const TpGradients::Select& select) {
      return z3_ ? z3_->grad_parts(select) : dp_->grad_parts(select);
    };
  }
  // "<param>.exp_avg" / "<param>.exp_avg_sq" -> "<param>"
  static std::string param_of(const std::string& state) {
    return state.substr(0, state.rfind('.'));
  }

  std::shared_ptr<model::LanguageModel> model_;
  comm::Group* tp_;
  comm::Group* dp_group_;
  bool sp_;
  std::vector<model::ParamSpec> specs_;
  TpGradients grads_;
  std::unique_ptr<DataParallel> dp_;  // ZeRO-0/1/2, or
  std::unique_ptr<Zero3> z3_;         // ZeRO-3
};

// The model as ZeRO-3 stages: embedding, one stage per block, final norm + head + loss.
StagedModel to_staged(const std::shared_ptr<model::LanguageModel>& m) {
  std::unordered_map<const void*, std::string> name_of;
  for (auto& p : m->named_parameters()) name_of[p.value().unsafeGetTensorImpl()] = p.key();
  const int64_t L = m->config().n_layer;
  const std::vector<model::ParamSpec> specs = model::param_specs(m->config());
  StagedModel s;
  s.stage_params.resize(size_t(L + 2));
  std::set<const void*> in_layer;
  for (int64_t i = 0; i < L; ++i)
    for (auto& p : m->layer_module(i)->parameters()) {
      s.stage_params[size_t(i + 1)].emplace_back(name_of.at(p.unsafeGetTensorImpl()), p);
      in_layer.insert(p.unsafeGetTensorImpl());
    }
  auto head = m->head_weight();
  const void* head_impl = head.unsafeGetTensorImpl();
  // Outside the blocks: the embedding tables belong to the first stage, the rest (final norm,
  // an untied head) to the last; the head is used by the last stage whether tied or not.
  for (auto& p : m->named_parameters()) {
    const void* impl = p.value().unsafeGetTensorImpl();
    if (in_layer.count(impl) || impl == head_impl) continue;
    const model::ParamSpec* spec = model::find_spec(specs, p.key());
    const bool embedding = spec && (spec->role == model::ParamRole::kTokenEmbedding ||
                                    spec->role == model::ParamRole::kPositionEmbedding);
    s.stage_params[embedding ? 0 : size_t(L + 1)].emplace_back(p.key(), p.value());
  }
  if (m->config().is_llama()) {
    s.stage_params[size_t(L + 1)].emplace_back(name_of.at(head_impl), head);
  } else {  // tied: the token table is used by the first and the last stage
    s.stage_params[0].emplace_back(name_of.at(head_impl), head);
    s.stage_params[size_t(L + 1)].emplace_back(name_of.at(head_impl), head);
  }
  s.first = [m](const torch::Tensor& idx) { return m->embed(idx); };
  s.middle = [m](int64_t stage, const torch::Tensor& x) { return m->layer(stage - 1, x); };
  s.last = [m](const torch::Tensor& x, const torch::Tensor& y) {
    return m->head_loss(m->final_norm(x), y);
  };
  return s;
}

class ShardedEngine : public Engine {
 public:
  ShardedEngine(std::shared_ptr<model::LanguageModel> m, comm::Group* group, AdamHyper adam)
      : model_(std::move(m)) {
    z_ = std::make_unique<Zero3>(to_staged(model_), decay_rule(model_->config()), group, adam);
  }
  void zero_grad() override { z_->zero_grad(); }
  torch::Tensor loss(const torch::Tensor& x, const torch::Tensor& y, bool) override {
    return z_->loss(x, y);
  }
  torch::Tensor eval_loss(const torch::Tensor& x, const torch::Tensor& y) override {
    return z_->loss(x, y);
  }
  void finish_backward() override { z_->finish_backward(); }
  double clip_grad_norm(double max_norm) override { return z_->clip_grad_norm(max_norm); }
  void step(double lr) override { z_->step(lr); }
  int64_t step_count() const override { return z_->step_count(); }
  NamedTensors gather_params() override {
    z_->gather_full_params();
    NamedTensors out;
    for (auto& p : model_->named_parameters())
      out.emplace_back(p.key(), p.value().detach().clone());
    z_->release_full_params();
    return out;
  }
  NamedTensors gather_optimizer_state() override { return z_->gather_state(); }
  Status load(const std::map<std::string, torch::Tensor>& tensors, const std::string& model_prefix,
              const std::string& optim_prefix, int64_t step_count) override {
    CAIRN_RETURN_IF_ERROR(check_params(model_->config(), tensors, model_prefix));
    CAIRN_RETURN_IF_ERROR(z_->load_state(tensors, optim_prefix, step_count));
    return z_->load_params(tensors, model_prefix);
  }
  MemoryReport memory_report() const override { return z_->memory_report(); }

 private:
  std::shared_ptr<model::LanguageModel> model_;
  std::unique_ptr<Zero3> z_;
};

// Context parallelism around any of the engines above: they average gradients over dp x cp (the
// ranks holding the same parameters) and this one gives each micro-batch's tokens to the
// model as the cp split says: this rank's share of every sequence (its positions, from the
// hooks), and the loss as the mean over the whole sequence. Each rank's loss is the mean over
// its T / cp tokens, so the mean of the ranks' losses is the whole sequence's and averaging the
// gradients over cp (with dp) gives its gradient. Nothing else depends on cp.
class ContextParallelEngine : public Engine {
 public:
  ContextParallelEngine(std::unique_ptr<Engine> inner, comm::Group* cp,
                        std::shared_ptr<model::ContextParallelHooks> hooks,
                        comm::MeshGroups::ContextSplit split,
                        std::shared_ptr<ContextCommStats> stats)
      : inner_(std::move(inner)),
        cp_(cp),
        hooks_(std::move(hooks)),
        split_(std::move(split)),
        stats_(std::move(stats)) {}

  void zero_grad() override { inner_->zero_grad(); }
  torch::Tensor loss(const torch::Tensor& x, const torch::Tensor& y, bool last) override {
    auto idx = mine(x.size(1), x.device());
    return whole_mean(inner_->loss(x.index_select(1, idx), y.index_select(1, idx), last));
  }
  torch::Tensor eval_loss(const torch::Tensor& x, const torch::Tensor& y) override {
    auto idx = mine(x.size(1), x.device());
    return whole_mean(inner_->eval_loss(x.index_select(1, idx), y.index_select(1, idx)));
  }
  bool set_last(bool last) override { return inner_->set_last(last); }
  void finish_backward() override { inner_->finish_backward(); }
  Status scale_gradients(double factor) override { return inner_->scale_gradients(factor); }
  double clip_grad_norm(double max_norm) override { return inner_->clip_grad_norm(max_norm); }
  void step(double lr) override { inner_->step(lr); }
  int64_t step_count() const override { return inner_->step_count(); }
  NamedTensors gather_params() override { return inner_->gather_params(); }
  NamedTensors gather_optimizer_state() override { return inner_->gather_optimizer_state(); }
  CheckpointShare checkpoint_share(const std::string& model_prefix,
                                   const std::string& optim_prefix) override {
    return inner_->checkpoint_share(model_prefix, optim_prefix);
  }
  bool shares_pieces() const override { return inner_->shares_pieces(); }
  Status load(const std::map<std::string, torch::Tensor>& tensors, const std::string& model_prefix,
              const std::string& optim_prefix, int64_t step_count) override {
    return inner_->load(tensors, model_prefix, optim_prefix, step_count);
  }
  MemoryReport memory_report() const override { return inner_->memory_report(); }
  std::vector<std::pair<std::string, double>> take_step_stats() override {
    auto out = inner_->take_step_stats();
    out.insert(out.end(), {{"cp_comm_s", stats_->wait_s},
                           {"cp_sent_mb", double(stats_->bytes) / 1e6},
                           {"cp_messages", double(stats_->messages)}});
    *stats_ = ContextCommStats{};
    return out;
  }

 private:
  // This rank's token columns of a sequence of T (computed once per length and device).
  const torch::Tensor& mine(int64_t T, const torch::Device& device) {
    if (!mine_.defined() || mine_T_ != T || mine_.device() != device) {
      mine_ = hooks_->positions(T / cp_->size(), torch::dtype(torch::kLong).device(device));
      mine_T_ = T;
    }
    return mine_;
  }
  // `local` (this rank's mean) with the value of the mean over the cp group and its gradient.
  torch::Tensor whole_mean(const torch::Tensor& local) const {
    auto mean = local.detach().to(torch::kFloat).reshape({1}).clone();
    cp_->allreduce(mean);
    mean.div_(cp_->size());
    return local + (mean.reshape({}).to(local.scalar_type()) - local.detach());
  }

  std::unique_ptr<Engine> inner_;
  comm::Group* cp_;
  std::shared_ptr<model::ContextParallelHooks> hooks_;
  comm::MeshGroups::ContextSplit split_;  // owns 2D's groups
  std::shared_ptr<ContextCommStats> stats_;
  torch::Tensor mine_;  // mine()'s columns for sequences of mine_T_
  int64_t mine_T_ = 0;
};

// The groups context parallelism runs over: the cp group (ulysses or ring), or its 2D split.
std::pair<std::shared_ptr<model::ContextParallelHooks>, comm::MeshGroups::ContextSplit>
context_hooks(const Plan& plan, const comm::MeshGroups& groups,
              const std::shared_ptr<ContextCommStats>& stats) {
  comm::Group* cp = groups.get(comm::Axis::kContext);
  comm::MeshGroups::ContextSplit split;
  std::shared_ptr<model::ContextParallelHooks> hooks;
  switch (plan.layers.front().cp_kind) {
    case ContextParallelKind::kUlysses:
      hooks = make_context_parallel_hooks(cp, nullptr, plan.cp_overlap, stats);
      break;
    case ContextParallelKind::kRing:
      hooks = make_context_parallel_hooks(nullptr, cp, plan.cp_overlap, stats);
      break;
    case ContextParallelKind::kTwoD:
    case ContextParallelKind::kNone:
      split = groups.split_context(plan.cp_ulysses);
      hooks =
          make_context_parallel_hooks(split.inner.get(), split.outer.get(), plan.cp_overlap, stats);
      break;
  }
  return std::make_pair(std::move(hooks), std::move(split));
}

// Why the plan's tensor parallelism cannot run `config`'s model (Ok when it can).
Status check_tensor_parallel(const Plan& plan, const model::ModelConfig& config) {
  const LayerPlan& first = plan.layers.front();
  for (const LayerPlan& l : plan.layers)
    if (l.tp != plan.mesh.tp || l.sequence_parallel != first.sequence_parallel)
      return Status::Unsupported(
          "plan: every block runs at the mesh's tp " + std::to_string(plan.mesh.tp) +
          " with one sequence-parallel setting in this version (per-block tp is not built)");
  if (std::string unfit = tp_unfit(config, plan.mesh.tp); !unfit.empty())
    return Status::InvalidArgument("plan: " + unfit);
  return Status::Ok();
}

// The engine for everything but cp, averaging over `dp` (the dp group, or dp x cp).
Result<std::unique_ptr<Engine>> base_engine(std::shared_ptr<model::LanguageModel> model,
                                            const Plan& plan, const comm::MeshGroups& groups,
                                            comm::Group* dp, AdamHyper adam) {
  DataParallelOptions o;
  o.zero_stage = plan.zero_stage;
  o.bucket_bytes = plan.bucket_bytes;
  o.adam = adam;
  if (plan.mesh.tp > 1) {
    CAIRN_RETURN_IF_ERROR(check_tensor_parallel(plan, model->config()));
    return std::unique_ptr<Engine>(std::make_unique<TensorParallelEngine>(
        std::move(model), groups.get(comm::Axis::kTensor), dp,
        plan.layers.front().sequence_parallel, o, plan.zero_stage == 3));
  }
  if (plan.shards_parameters())
    return std::unique_ptr<Engine>(std::make_unique<ShardedEngine>(std::move(model), dp, adam));
  return std::unique_ptr<Engine>(std::make_unique<ReplicatedEngine>(std::move(model), dp, o));
}

}  // namespace

Result<std::unique_ptr<Engine>> parallelize(std::shared_ptr<model::LanguageModel> model,
                                            const Plan& plan, const comm::MeshGroups& groups,
                                            AdamHyper adam) {
  const comm::MeshShape& have = groups.mesh().shape();
  if (have.pp != plan.mesh.pp || have.dp != plan.mesh.dp || have.cp != plan.mesh.cp ||
      have.tp != plan.mesh.tp || groups.mesh().order() != plan.order)
    return Status::InvalidArgument("parallelize: the process groups are of mesh " +
                                   have.ToString() + ", the plan's is " + plan.mesh.ToString());
  CAIRN_RETURN_IF_ERROR(plan.validate(model->config(), groups.mesh().size()));
  for (const LayerPlan& l : plan.layers)
    if (l.cp_kind != plan.layers.front().cp_kind)
      return Status::Unsupported(
          "plan: every block runs one context-parallel kind in this "
          "version (per-block cp kinds are not built)");
  std::vector<bool> checkpointed;
  for (const LayerPlan& l : plan.layers) checkpointed.push_back(l.checkpoint);
  model->set_activation_checkpointing(checkpointed);
  if (plan.mesh.pp > 1) {
    DataParallelOptions o;
    o.zero_stage = plan.zero_stage;
    o.bucket_bytes = plan.bucket_bytes;
    o.adam = adam;
    StageGroups stage;
    stage.dp = groups.get(comm::Axis::kData);
    if (plan.mesh.tp > 1) {
      CAIRN_RETURN_IF_ERROR(check_tensor_parallel(plan, model->config()));
      stage.tp = groups.get(comm::Axis::kTensor);
      stage.sequence_parallel = plan.layers.front().sequence_parallel;
    }
    if (plan.mesh.cp > 1) {
      stage.cp_stats = std::make_shared<ContextCommStats>();
      std::tie(stage.cp_hooks, stage.cp_split) = context_hooks(plan, groups, stage.cp_stats);
      model->set_context_parallel(stage.cp_hooks);
      stage.cp = groups.get(comm::Axis::kContext);
      stage.dp = groups.data_context();
    }
    return make_pipeline_engine(std::move(model), plan, groups, o, std::move(stage));
  }
  if (plan.mesh.cp == 1)
    return base_engine(std::move(model), plan, groups, groups.get(comm::Axis::kData), adam);
  auto stats = std::make_shared<ContextCommStats>();
  auto [hooks, split] = context_hooks(plan, groups, stats);
  model->set_context_parallel(hooks);
  CAIRN_ASSIGN_OR_RETURN(std::unique_ptr<Engine> inner,
                         base_engine(model, plan, groups, groups.data_context(), adam));
  return std::unique_ptr<Engine>(std::make_unique<ContextParallelEngine>(
      std::move(inner), groups.get(comm::Axis::kContext), std::move(hooks), std::move(split),
      std::move(stats)));
}

}  // namespace cairn::parallel
