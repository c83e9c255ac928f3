// Pipeline parallelism: the model's blocks cut into pp x v chunks (plan.pipeline.cuts), chunk c
// of pp rank s being virtual stage c * pp + s; the first holds the embedding, the last the
// final norm, head and loss. A step's micro-batches go through the chunks as the schedule's
// program for this rank says (pipeline_schedule.h): a forward takes its input activation from
// the previous rank (or embeds the tokens) and sends its output to the next; a backward takes
// its output's gradient from the next rank (or starts from the loss) and sends its input's
// gradient to the previous (zb-h1: the input gradient only; the blocks' weight gradients are
// kept in a WeightGradStore and computed by the schedule's weight passes). Receives are posted
// one action ahead, sends complete in the
// background; every wait is bounded by the group's timeout.
//
// Each chunk's parameters have their own DataParallel over the dp group (DDP, ZeRO-1/2), so
// that a chunk's gradients are averaged over dp in its own last backward. GPT-2's tied token
// table lives on the first stage (embedding) and on the last (head), each copy with its own
// DataParallel of that one tensor: after backward the two stages add each other's gradient,
// so both copies take the same update and stay equal. Clipping sums the squared gradients
// over stages (the tied table once). Checkpoints hold whole tensors, each written by one rank
// of the stage that holds it: any layout loads them.
//
// With tp > 1 every chunk runs tensor-parallel over the stage's tp group (its parameters are
// this rank's slices; the partial gradients are summed over tp after backward, TpGradients);
// under sequence parallelism the activations passed between stages are this rank's chunk of
// the sequence. With cp > 1 each micro-batch's tokens are split over the cp ranks from the
// embedding to the loss (this rank's columns, by the hooks' positions) and the gradients are
// averaged over dp x cp; the losses reported are the means over cp.
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <map>
#include <unordered_map>

#include "cairn/comm/group.h"
#include "cairn/comm/mesh_groups.h"
#include "cairn/core/malloc_tuning.h"
#include "cairn/model/language_model.h"
#include "cairn/model/param_specs.h"
#include "cairn/parallel/pipeline_schedule.h"
#include "cairn/parallel/tensor_parallel.h"
#include "parallel/pipeline_engine_impl.h"
#include "parallel/tp_gradients_impl.h"

namespace cairn::parallel {
namespace {

constexpr int kTiedTag = 1 << 29;  // the tied table's gradient between first and last stage
constexpr int kEvalTag = 1 << 30;  // validation's activations, by virtual stage

// Which virtual stage holds what: the one rule both model_part() (what a rank builds) and the
// engine (what a rank trains) follow. Virtual stage vs holds blocks [bounds[vs], bounds[vs + 1]);
// the embeddings are the first virtual stage's, the final norm and the head the last's; virtual
// stage vs runs on pipeline rank vs % pp.
std::vector<int64_t> stage_bounds(const Plan& plan, int64_t n_layer) {
  std::vector<int64_t> bounds{0};
  bounds.insert(bounds.end(), plan.pipeline.cuts.begin(), plan.pipeline.cuts.end());
  bounds.push_back(n_layer);
  const int V = plan.mesh.pp * plan.pipeline.virtual_stages;
  TORCH_CHECK(int(bounds.size()) == V + 1, "pipeline: ", plan.pipeline.cuts.size(), " cuts for ", V,
              " virtual stages");
  return bounds;
}

int virtual_stage_of_block(const std::vector<int64_t>& bounds, int64_t block) {
  return int(std::upper_bound(bounds.begin(), bounds.end(), block) - bounds.begin()) - 1;
}

constexpr int kEmbeddingStage = 0;
int head_stage(int virtual_stages) { return virtual_stages - 1; }

// "<param>.exp_avg" / "<param>.exp_avg_sq" -> "<param>"
std::string param_of(const std::string& state) { return state.substr(0, state.rfind('.')); }

class PipelineEngine : public Engine {
 public:
  PipelineEngine(std::shared_ptr<model::LanguageModel> m, const Plan& plan, comm::Group* pp,
                 StageGroups sg, DataParallelOptions o)
      : model_(std::move(m)),
        pp_(pp),
        dp_(sg.dp),
        tp_(sg.tp),
        sp_(sg.sequence_parallel),
        sg_(std::move(sg)),
        P_(pp->size()),
        stage_(pp->rank()),
        v_(plan.pipeline.virtual_stages),
        kind_(plan.pipeline.schedule),
        zero_stage_(plan.zero_stage),
        specs_(model::param_specs(model_->config())),
        grads_(model_->config(), tp_, sp_) {
    if (tp_) shard_for_tensor_parallel(*model_, tp_, sp_);
    const int64_t L = model_->config().n_layer;
    const int V = P_ * v_;
    bounds_ = stage_bounds(plan, L);
    std::unordered_map<const void*, int64_t> block_of;
    for (int64_t i = 0; i < L; ++i)
      for (auto& p : model_->layer_module(i)->parameters()) block_of[p.unsafeGetTensorImpl()] = i;
    const void* head = model_->head_weight().unsafeGetTensorImpl();
    for (int c = 0; c < v_; ++c) chunks_.push_back(Chunk{c * P_ + stage_, {}, nullptr});
    DataParallel::NamedParams tied;
    if (kind_ == PipelineSchedule::kZeroBubbleH1) model_->set_weight_grad_store(&weight_grads_);
    for (auto& p : model_->named_parameters()) {
      const void* impl = p.value().unsafeGetTensorImpl();
      const model::ParamSpec* spec = model::find_spec(specs_, p.key());
      TORCH_CHECK(spec, "no spec for parameter ", p.key());
      int vs = head_stage(V);  // the final norm and an untied head
      if (auto it = block_of.find(impl); it != block_of.end())
        vs = virtual_stage_of_block(bounds_, it->second);
      else if (spec->role == model::ParamRole::kTokenEmbedding ||
               spec->role == model::ParamRole::kPositionEmbedding)
        vs = kEmbeddingStage;
      owner_[p.key()] = vs % P_;
      const bool tied_head = impl == head && spec->role == model::ParamRole::kTokenEmbedding;
      if (tied_head) tied_name_ = p.key();
      if (tied_head && (stage_ == kEmbeddingStage % P_ || stage_ == head_stage(V) % P_)) {
        tied.emplace_back(p.key(), p.value());
        own_[p.key()] = p.value();
      } else if (vs % P_ == stage_) {
        TORCH_CHECK(p.value().numel() > 0, "pipeline stage ", stage_, ": parameter ", p.key(),
                    " is another part's placeholder (build the model with model_part())");
        chunks_[size_t(vs / P_)].params.emplace_back(p.key(), p.value());
        own_[p.key()] = p.value();
      } else if (p.value().numel() > 0) {  // another stage's, built whole: free it
        torch::NoGradGuard no_grad;
        p.value().set_data(torch::empty({0}, p.value().options()));
      }
    }
    auto decays = [specs = specs_](const std::string& name, const torch::Tensor&) {
      return model::find_spec(specs, name)->decays;
    };
    // zb-h1 under ZeRO-2: a chunk's gradients are reduced after each of its weight passes
    // (they are whole then), not as autograd makes them in the input-gradient pass.
    DataParallelOptions chunk_options = o;
    chunk_options.reduce_on_flush = flush_after_weight_pass();
    for (Chunk& c : chunks_) {
      if (c.params.empty()) continue;
      c.dp = std::make_unique<DataParallel>(c.params, decays, dp_, chunk_options);
      c.dp->broadcast_parameters();
    }
    if (!tied.empty()) {
      tied_ = std::make_unique<DataParallel>(tied, decays, dp_, o);
      tied_->broadcast_parameters();
    }
  }

  void zero_grad() override {
    for (DataParallel* d : dps()) d->zero_grad();
  }
  bool needs_whole_steps() const override { return true; }
  torch::Tensor loss(const torch::Tensor&, const torch::Tensor&, bool) override {
    TORCH_CHECK(false,
                "a pipeline trains whole steps (Engine::forward_backward), not single "
                "micro-batches");
  }

  std::vector<double> forward_backward(const std::vector<MicroBatchInput>& whole_mbs) override {
    const std::vector<MicroBatchInput>& mbs = mine(whole_mbs);
    const int m = int(mbs.size());
    const ScheduleShape shape{kind_, P_, m, v_};
    const std::string unfit = schedule_unfit(shape);
    TORCH_CHECK(unfit.empty(), "pipeline schedule ", schedule_name(kind_), ": ", unfit);
    if (program_m_ != m) {
      program_ = pipeline_schedule(shape)[size_t(stage_)];
      program_m_ = m;
      last_backward_.assign(size_t(v_), -1);
      for (size_t k = 0; k < program_.size(); ++k)
        if (program_[k].op == PipeOp::kBackward || program_[k].op == PipeOp::kBackwardInput)
          last_backward_[size_t(program_[k].chunk)] = int(k);
    }
    mbs_ = &mbs;
    losses_.assign(size_t(m), 0.0);
    const auto start = std::chrono::steady_clock::now();
    idle_s_ = 0;
    const int64_t heap_before = core::heap_bytes_in_use();
    int64_t heap_peak = heap_before;
    for (size_t k = 0; k < program_.size(); ++k) {
      post_receive(k);
      if (k + 1 < program_.size()) post_receive(k + 1);
      const PipeAction& a = program_[k];
      if (a.op == PipeOp::kForward)
        forward(a);
      else if (a.op == PipeOp::kBackwardWeight)
        weight_pass(a);
      else
        backward(a, int(k) == last_backward_[size_t(a.chunk)]);
      heap_peak = std::max(heap_peak, core::heap_bytes_in_use());
    }
    {
      Timer idle(&idle_s_);
      for (auto& s : sends_) s.pending.wait();
    }
    sends_.clear();
    record_stage_stats(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
        double(heap_peak - heap_before));
    TORCH_CHECK(weight_grads_.pending() == 0, "pipeline: ", weight_grads_.pending(),
                " weight-gradient passes were kept but not run");
    mbs_ = nullptr;
    // The losses are the last stage's: every rank reports them (means over cp).
    auto t = torch::tensor(losses_, torch::kDouble);
    pp_->broadcast(t, last_rank());
    mean_over_cp(t);
    mine_mbs_.clear();
    return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + m);
  }

  torch::Tensor eval_loss(const torch::Tensor& whole_x, const torch::Tensor& whole_y) override {
    torch::NoGradGuard no_grad;
    torch::Tensor x = whole_x, y = whole_y;
    if (sg_.cp) {
      const torch::Tensor& idx = columns(x.size(1), x.device());
      x = x.index_select(1, idx);
      y = y.index_select(1, idx);
    }
    const int V = P_ * v_;
    torch::Tensor h, loss = torch::zeros({1}, torch::kFloat);
    for (int vs = 0; vs < V; ++vs) {
      if (vs % P_ != stage_) continue;
      if (vs == 0) {
        h = model_->embed(x);
      } else {
        h = activation_buffer(x);
        pp_->recv_async(h, prev_rank(), kEvalTag + vs).wait();
      }
      h = model_->blocks(bounds_[size_t(vs)], bounds_[size_t(vs + 1)], h);
      if (vs == V - 1) {
        loss = model_->head_loss(model_->final_norm(h), y).to(torch::kFloat).reshape({1});
      } else {
        auto out = h.to(torch::kFloat).contiguous();
        pp_->send_async(out, next_rank(), kEvalTag + vs + 1).wait();
      }
    }
    pp_->broadcast(loss, last_rank());
    mean_over_cp(loss);
    return loss.reshape({});
  }

  void finish_backward() override {
    for (DataParallel* d : dps()) d->finish_backward();
    add_tied_gradients();
    grads_.sum_partial(parts(true));
  }
  // The first and the last stage add each other's gradient of the tied table.
  void add_tied_gradients() {
    if (!tied_ || P_ * v_ == 1) return;
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> parts = tied_->grad_parts([](const std::string&) { return true; });
    std::vector<torch::Tensor> flat_parts;
    for (auto& g : parts) flat_parts.push_back(g.reshape({-1}));
    auto mine = torch::cat(flat_parts), theirs = torch::empty_like(mine);
    const int other = stage_ == 0 ? last_rank() : 0;
    comm::Pending sent = pp_->send_async(mine, other, kTiedTag);
    pp_->recv_async(theirs, other, kTiedTag).wait();
    sent.wait();
    int64_t at = 0;
    for (auto& g : parts) {
      g.view({-1}).add_(theirs.narrow(0, at, g.numel()));
      at += g.numel();
    }
  }
  Status scale_gradients(double factor) override {
    for (DataParallel* d : dps()) d->scale_grads(factor);
    return Status::Ok();
  }
  double clip_grad_norm(double max_norm) override {
    // The tied table counts once: on the first stage. Under ZeRO-2 each dp rank holds a part
    // of every gradient; over tp the split parameters' slices are disjoint.
    auto sq = grads_.squares(parts(stage_ == 0));
    if (dp_ && dps().front()->shards_gradients()) dp_->allreduce(sq);
    auto t = torch::tensor({grads_.total(sq)}, torch::kDouble);
    pp_->allreduce(t);
    const double norm = std::sqrt(t.item<double>());
    for (DataParallel* d : dps()) d->clip_to(norm, max_norm);
    return norm;
  }
  void step(double lr) override {
    for (DataParallel* d : dps()) d->step(lr);
  }
  int64_t step_count() const override { return dps().front()->step_count(); }

  NamedTensors gather_params() override {
    NamedTensors out;
    for (const model::ParamSpec& s : specs_) {
      const int owner = owner_.at(s.name);
      torch::Tensor t = owner == stage_ ? whole(own_.at(s.name).detach(), s)
                                        : torch::empty(s.shape, torch::kFloat);
      pp_->broadcast(t, owner);
      out.emplace_back(s.name, t);
    }
    return out;
  }
  NamedTensors gather_optimizer_state() override {
    std::map<std::string, torch::Tensor> mine = local_state();
    NamedTensors out;
    for (const model::ParamSpec& s : specs_)
      for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
        const std::string key = s.name + suffix;
        const int owner = owner_.at(s.name);
        torch::Tensor t =
            owner == stage_ ? whole(mine.at(key), s) : torch::empty(s.shape, torch::kFloat);
        pp_->broadcast(t, owner);
        out.emplace_back(key, t);
      }
    return out;
  }
  // Each stage writes its own tensors, spread over its dp (x cp) ranks, each tp rank its
  // slices' pieces; the tied table by the first stage. Nothing crosses stages or tp ranks.
  bool shares_pieces() const override { return true; }
  CheckpointShare checkpoint_share(const std::string& model_prefix,
                                   const std::string& optim_prefix) override {
    CheckpointShare share;
    const int dp = dp_ ? dp_->size() : 1, dp_rank = dp_ ? dp_->rank() : 0;
    std::map<std::string, torch::Tensor> state = local_state();
    int64_t index = 0;
    const int tp = tp_ ? tp_->size() : 1, tp_rank = tp_ ? tp_->rank() : 0;
    auto add = [&](const std::string& key, const std::string& param, const torch::Tensor& t) {
      if (owner_.at(param) != stage_ || index++ % dp != dp_rank) return;
      const model::ParamSpec& s = spec(param);
      for (TpPiece& p : tp_pieces(t, s, model_->config(), tp_rank, tp))
        share.owned.push_back({key, p.tensor, s.shape, p.slice});
    };
    for (const model::ParamSpec& s : specs_) {
      if (owner_.at(s.name) != stage_) continue;
      add(model_prefix + s.name, s.name, own_.at(s.name).detach());
      add(optim_prefix + s.name + ".exp_avg", s.name, state.at(s.name + ".exp_avg"));
      add(optim_prefix + s.name + ".exp_avg_sq", s.name, state.at(s.name + ".exp_avg_sq"));
    }
    return share;
  }
  Status load(const std::map<std::string, torch::Tensor>& tensors, const std::string& model_prefix,
              const std::string& optim_prefix, int64_t step_count) override {
    for (const model::ParamSpec& spec : specs_) {  // everything checked before anything changes
      auto it = tensors.find(model_prefix + spec.name);
      if (it == tensors.end())
        return Status::InvalidArgument("parameter '" + spec.name +
                                       "' is missing from the checkpoint");
      if (!it->second.sizes().equals(spec.shape))
        return Status::InvalidArgument("parameter '" + spec.name +
                                       "' has another shape in the checkpoint");
      if (!own_.count(spec.name)) continue;
      for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
        auto st = tensors.find(optim_prefix + spec.name + suffix);
        if (st == tensors.end() || !st->second.sizes().equals(spec.shape))
          return Status::InvalidArgument("optimizer state '" + optim_prefix + spec.name + suffix +
                                         "' is missing from the checkpoint or has another shape");
      }
    }
    // This rank's slices of its parameters' optimizer state.
    std::map<std::string, torch::Tensor> local;
    for (auto& [name, p] : own_)
      for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
        const std::string key = optim_prefix + name + suffix;
        local[key] = slice(tensors.at(key), spec(name));
      }
    for (DataParallel* d : dps())
      CAIRN_RETURN_IF_ERROR(d->load_state(local, optim_prefix, step_count));
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : own_) p.copy_(slice(tensors.at(model_prefix + name), spec(name)));
    return Status::Ok();
  }
  // Per step: the bubble (each stage's seconds blocked on its neighbours / its step's seconds),
  // its mean and max over stages, and each stage's activation memory (the most the allocator
  // held during the step above what it held before; up to 8 stages listed).
  std::vector<std::pair<std::string, double>> take_step_stats() override {
    std::vector<std::pair<std::string, double>> out;
    if (!stage_stats_.defined()) return out;
    auto idle = stage_stats_[0], step = stage_stats_[1], act = stage_stats_[2];
    auto bubble = idle / step.clamp_min(1e-9);
    out.emplace_back("pp_idle_s", idle.mean().item<double>());
    out.emplace_back("pp_bubble", bubble.mean().item<double>());
    out.emplace_back("pp_bubble_max", bubble.max().item<double>());
    if (P_ <= 8)
      for (int s = 0; s < P_; ++s) {
        out.emplace_back("pp_bubble_s" + std::to_string(s), bubble[s].item<double>());
        out.emplace_back("pp_act_mb_s" + std::to_string(s), act[s].item<double>() / 1e6);
      }
    stage_stats_ = torch::Tensor();
    if (sg_.cp_stats) {
      ContextCommStats& c = *sg_.cp_stats;
      out.insert(out.end(), {{"cp_comm_s", c.wait_s},
                             {"cp_sent_mb", double(c.bytes) / 1e6},
                             {"cp_messages", double(c.messages)}});
      c = ContextCommStats{};
    }
    return out;
  }
  MemoryReport memory_report() const override {
    MemoryReport r;
    for (const model::ParamSpec& s : specs_) r.params += c10::multiply_integers(s.shape);
    for (DataParallel* d : dps()) {
      const MemoryReport m = d->memory_report();
      const double share = double(m.params) / double(r.params);
      r.param_bytes += m.param_bytes * share;
      r.grad_bytes += m.grad_bytes * share;
      r.optimizer_bytes += m.optimizer_bytes * share;
    }
    return r;
  }

 private:
  struct Chunk {
    int vs;  // virtual stage
    DataParallel::NamedParams params;
    std::unique_ptr<DataParallel> dp;
  };
  // A forward's input and output, kept until its backward.
  struct InFlight {
    torch::Tensor input, output;
  };
  struct Send {
    torch::Tensor tensor;
    comm::Pending pending;
  };

  const model::ParamSpec& spec(const std::string& name) const {
    const model::ParamSpec* s = model::find_spec(specs_, name);
    TORCH_CHECK(s, "no spec for parameter ", name);
    return *s;
  }
  // A tensor of parameter `s` as this rank holds it -> whole (collective over tp), and back.
  torch::Tensor whole(const torch::Tensor& local, const model::ParamSpec& s) {
    return tp_ ? tp_gather(local, s, model_->config(), tp_) : local.clone();
  }
  torch::Tensor slice(const torch::Tensor& whole, const model::ParamSpec& s) const {
    return tp_ ? tp_slice(whole, s, model_->config(), tp_->rank(), tp_->size()) : whole;
  }
  // The gradient parts of this rank's parameters `select` picks, over its chunks (and the tied
  // table with `tied`), in the same order on every tp rank of the stage.
  TpGradients::Parts parts(bool tied) {
    return [this, tied](const TpGradients::Select& select) {
      std::vector<torch::Tensor> out;
      for (Chunk& c : chunks_)
        if (c.dp)
          for (auto& g : c.dp->grad_parts(select)) out.push_back(g);
      if (tied && tied_)
        for (auto& g : tied_->grad_parts(select)) out.push_back(g);
      return out;
    };
  }
  // Context parallelism: this rank's columns of a sequence of T (computed once per length).
  const torch::Tensor& columns(int64_t T, const torch::Device& device) {
    if (!columns_.defined() || columns_T_ != T || columns_.device() != device) {
      columns_ =
          sg_.cp_hooks->positions(T / sg_.cp->size(), torch::dtype(torch::kLong).device(device));
      columns_T_ = T;
    }
    return columns_;
  }
  // The micro-batches as this rank runs them: its columns of each under cp.
  const std::vector<MicroBatchInput>& mine(const std::vector<MicroBatchInput>& mbs) {
    if (!sg_.cp) return mbs;
    mine_mbs_.clear();
    for (const MicroBatchInput& mb : mbs) {
      const torch::Tensor& idx = columns(mb.x.size(1), mb.x.device());
      mine_mbs_.push_back({mb.x.index_select(1, idx), mb.y.index_select(1, idx), mb.weight});
    }
    return mine_mbs_;
  }
  // Each rank's loss is the mean over its T / cp tokens: the whole sequence's is their mean.
  void mean_over_cp(torch::Tensor& losses) const {
    if (!sg_.cp) return;
    auto f = losses.to(torch::kDouble);
    sg_.cp->allreduce(f);
    losses = (f / sg_.cp->size()).to(losses.scalar_type());
  }

  int last_rank() const { return (P_ * v_ - 1) % P_; }
  int next_rank() const { return (stage_ + 1) % P_; }
  int prev_rank() const { return (stage_ + P_ - 1) % P_; }
  int vs_of(const PipeAction& a) const { return a.chunk * P_ + stage_; }
  // Message tags: the activation into virtual stage vs and the gradient out of it, micro m.
  int activation_tag(int m, int vs) const { return 2 * (m * P_ * v_ + vs); }
  int gradient_tag(int m, int vs) const { return 2 * (m * P_ * v_ + vs) + 1; }

  // Adds the seconds of its scope to *total.
  struct Timer {
    explicit Timer(double* total) : total_(total), start_(std::chrono::steady_clock::now()) {}
    ~Timer() {
      *total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    }
    double* total_;
    std::chrono::steady_clock::time_point start_;
  };
  // Every stage's idle time, step time and activation memory of the step just run (one
  // all-reduce over pp), kept for take_step_stats.
  void record_stage_stats(double step_s, double activation_bytes) {
    auto t = torch::zeros({3, P_}, torch::kDouble);
    t[0][stage_] = idle_s_;
    t[1][stage_] = step_s;
    t[2][stage_] = activation_bytes;
    pp_->allreduce(t);
    stage_stats_ = t;
  }

  std::vector<DataParallel*> dps() const {
    std::vector<DataParallel*> out;
    for (const Chunk& c : chunks_)
      if (c.dp) out.push_back(c.dp.get());
    if (tied_) out.push_back(tied_.get());
    return out;
  }
  // This stage's optimizer state by "<param>.exp_avg..." (collective over dp).
  std::map<std::string, torch::Tensor> local_state() {
    std::map<std::string, torch::Tensor> out;
    for (DataParallel* d : dps())
      for (auto& [name, t] : d->gather_state())
        if (owner_.at(param_of(name)) == stage_) out[name] = t;
    return out;
  }
  // The residual stream between stages for micro-batch tokens x (this rank's columns under cp):
  // this rank's chunk of the sequence under sequence parallelism.
  torch::Tensor activation_buffer(const torch::Tensor& x) const {
    const int64_t T = sp_ ? x.size(1) / tp_->size() : x.size(1);
    return torch::empty({x.size(0), T, model_->config().n_embd},
                        torch::dtype(torch::kFloat).device(x.device()));
  }

  // Posts the receive program_[k] needs, if any and not yet posted.
  void post_receive(size_t k) {
    const PipeAction& a = program_[k];
    if (a.op == PipeOp::kBackwardWeight) return;  // local work only
    const int vs = vs_of(a), V = P_ * v_;
    const bool forward = a.op == PipeOp::kForward;
    if (forward ? vs == 0 : vs == V - 1) return;
    const auto key = std::make_tuple(forward, a.micro, vs);
    if (incoming_.count(key)) return;
    auto& in = incoming_[key];
    in.tensor = activation_buffer((*mbs_)[size_t(a.micro)].x);
    in.pending = forward ? pp_->recv_async(in.tensor, prev_rank(), activation_tag(a.micro, vs))
                         : pp_->recv_async(in.tensor, next_rank(), gradient_tag(a.micro, vs));
  }
  torch::Tensor take_received(bool forward, int micro, int vs) {
    auto it = incoming_.find(std::make_tuple(forward, micro, vs));
    TORCH_CHECK(it != incoming_.end(), "pipeline: no receive posted");
    {
      Timer idle(&idle_s_);
      it->second.pending.wait();
    }
    torch::Tensor t = it->second.tensor;
    incoming_.erase(it);
    return t;
  }
  void send(torch::Tensor t, int dst, int tag) {
    t = t.to(torch::kFloat).contiguous();
    comm::Pending p = pp_->send_async(t, dst, tag);
    sends_.push_back({t, std::move(p)});
  }

  void forward(const PipeAction& a) {
    const int vs = vs_of(a), V = P_ * v_;
    const MicroBatchInput& mb = (*mbs_)[size_t(a.micro)];
    InFlight f;
    torch::Tensor h;
    if (vs == 0) {
      h = model_->embed(mb.x);
    } else {
      f.input = take_received(true, a.micro, vs).requires_grad_(true);
      h = f.input;
    }
    h = model_->blocks(bounds_[size_t(vs)], bounds_[size_t(vs + 1)], h);
    if (vs == V - 1) {
      f.output = model_->head_loss(model_->final_norm(h), mb.y);
      losses_[size_t(a.micro)] = f.output.item<double>();
    } else {
      f.output = h;
      send(h.detach(), next_rank(), activation_tag(a.micro, vs + 1));
    }
    in_flight_[{a.micro, a.chunk}] = std::move(f);
  }

  bool flush_after_weight_pass() const {
    return kind_ == PipelineSchedule::kZeroBubbleH1 && zero_stage_ == 2;
  }
  // zb-h1: the projections' weight gradients of a micro-batch's backward through a chunk.
  void weight_pass(const PipeAction& a) {
    weight_grads_.run(a.micro * v_ + a.chunk);
    Chunk& chunk = chunks_[size_t(a.chunk)];
    if (chunk.dp && flush_after_weight_pass()) chunk.dp->flush_grads();
  }

  void backward(const PipeAction& a, bool last_of_chunk) {
    const int vs = vs_of(a), V = P_ * v_;
    auto it = in_flight_.find({a.micro, a.chunk});
    TORCH_CHECK(it != in_flight_.end(), "pipeline: backward before forward");
    InFlight f = std::move(it->second);
    in_flight_.erase(it);
    Chunk& chunk = chunks_[size_t(a.chunk)];
    if (chunk.dp) chunk.dp->set_sync(last_of_chunk);
    if (tied_ && (vs == 0 || vs == V - 1)) tied_->set_sync(last_of_chunk);
    torch::Tensor grad;
    if (vs == V - 1)
      grad = torch::full_like(f.output, (*mbs_)[size_t(a.micro)].weight);
    else
      grad = take_received(false, a.micro, vs).to(f.output.scalar_type());
    weight_grads_.set_key(a.micro * v_ + a.chunk);  // zb-h1: where the projections' work goes
    torch::autograd::backward({f.output}, {grad});
    if (vs > 0) send(f.input.grad(), prev_rank(), gradient_tag(a.micro, vs - 1));
  }

  std::shared_ptr<model::LanguageModel> model_;
  comm::Group* pp_;
  comm::Group* dp_;  // dp, or dp x cp
  comm::Group* tp_;  // null at tp 1
  bool sp_;
  StageGroups sg_;
  int P_, stage_, v_;
  PipelineSchedule kind_;
  int zero_stage_;
  std::vector<model::ParamSpec> specs_;
  TpGradients grads_;
  std::vector<int64_t> bounds_;  // virtual stage vs holds blocks [bounds_[vs], bounds_[vs + 1])
  std::vector<Chunk> chunks_;
  std::unique_ptr<DataParallel> tied_;  // GPT-2's token table, on the first and the last stage
  std::string tied_name_;
  std::map<std::string, int> owner_;          // parameter -> the pp rank that writes it
  std::map<std::string, torch::Tensor> own_;  // this rank's parameters (the tied one included)

  // The step being run.
  std::vector<PipeAction> program_;
  int program_m_ = -1;
  std::vector<int> last_backward_;  // per chunk: the program index of its last backward
  const std::vector<MicroBatchInput>* mbs_ = nullptr;
  std::vector<double> losses_;
  std::vector<MicroBatchInput> mine_mbs_;  // under cp: this rank's columns of the step's
  torch::Tensor columns_;                  // columns()'s for sequences of columns_T_
  int64_t columns_T_ = 0;
  std::map<std::pair<int, int>, InFlight> in_flight_;  // (micro, chunk)
  struct Incoming {
    torch::Tensor tensor;
    comm::Pending pending;
  };
  std::map<std::tuple<bool, int, int>, Incoming> incoming_;  // (forward?, micro, vs)
  std::vector<Send> sends_;
  model::WeightGradStore weight_grads_;  // zb-h1: the weight passes' work, by micro-batch and chunk
  double idle_s_ = 0;                    // this step's seconds blocked on neighbours
  torch::Tensor stage_stats_;            // (3, pp): idle s, step s, activation bytes per stage
};

}  // namespace

model::ModelPart model_part(const Plan& plan, int64_t n_layer, int pp_rank) {
  model::ModelPart part;
  const int P = plan.mesh.pp, V = P * plan.pipeline.virtual_stages;
  if (P <= 1) return part;
  const std::vector<int64_t> bounds = stage_bounds(plan, n_layer);
  part.blocks.assign(size_t(n_layer), false);
  for (int64_t i = 0; i < n_layer; ++i)
    part.blocks[size_t(i)] = virtual_stage_of_block(bounds, i) % P == pp_rank;
  part.embedding = kEmbeddingStage % P == pp_rank;
  part.head = head_stage(V) % P == pp_rank;
  return part;
}

Result<std::unique_ptr<Engine>> make_pipeline_engine(std::shared_ptr<model::LanguageModel> model,
                                                     const Plan& plan,
                                                     const comm::MeshGroups& groups,
                                                     DataParallelOptions options,
                                                     StageGroups stage) {
  return std::unique_ptr<Engine>(std::make_unique<PipelineEngine>(
      std::move(model), plan, groups.get(comm::Axis::kPipeline), std::move(stage), options));
}

}  // namespace cairn::parallel
