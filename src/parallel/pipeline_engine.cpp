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
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <unordered_map>

#include "cairn/comm/group.h"
#include "cairn/comm/mesh_groups.h"
#include "cairn/model/language_model.h"
#include "cairn/model/param_specs.h"
#include "cairn/parallel/pipeline_schedule.h"
#include "parallel/pipeline_engine_impl.h"

namespace cairn::parallel {
namespace {

constexpr int kTiedTag = 1 << 29;  // the tied table's gradient between first and last stage
constexpr int kEvalTag = 1 << 30;  // validation's activations, by virtual stage

// "<param>.exp_avg" / "<param>.exp_avg_sq" -> "<param>"
std::string param_of(const std::string& state) { return state.substr(0, state.rfind('.')); }

class PipelineEngine : public Engine {
 public:
  PipelineEngine(std::shared_ptr<model::LanguageModel> m, const Plan& plan, comm::Group* pp,
                 comm::Group* dp, DataParallelOptions o)
      : model_(std::move(m)),
        pp_(pp),
        dp_(dp),
        P_(pp->size()),
        stage_(pp->rank()),
        v_(plan.pipeline.virtual_stages),
        kind_(plan.pipeline.schedule),
        specs_(model::param_specs(model_->config())) {
    const int64_t L = model_->config().n_layer;
    const int V = P_ * v_;
    bounds_.push_back(0);
    for (int64_t c : plan.pipeline.cuts) bounds_.push_back(c);
    bounds_.push_back(L);
    std::unordered_map<const void*, int64_t> block_of;
    for (int64_t i = 0; i < L; ++i)
      for (auto& p : model_->layer_module(i)->parameters()) block_of[p.unsafeGetTensorImpl()] = i;
    const void* head = model_->head_weight().unsafeGetTensorImpl();
    for (int c = 0; c < v_; ++c) chunks_.push_back(Chunk{c * P_ + stage_});
    DataParallel::NamedParams tied;
    if (kind_ == PipelineSchedule::kZeroBubbleH1) model_->set_weight_grad_store(&weight_grads_);
    for (auto& p : model_->named_parameters()) {
      const void* impl = p.value().unsafeGetTensorImpl();
      const model::ParamSpec* spec = model::find_spec(specs_, p.key());
      TORCH_CHECK(spec, "no spec for parameter ", p.key());
      int vs = V - 1;  // the final norm and an untied head
      if (auto it = block_of.find(impl); it != block_of.end())
        vs =
            int(std::upper_bound(bounds_.begin(), bounds_.end(), it->second) - bounds_.begin()) - 1;
      else if (spec->role == model::ParamRole::kTokenEmbedding ||
               spec->role == model::ParamRole::kPositionEmbedding)
        vs = 0;
      owner_[p.key()] = vs % P_;
      const bool tied_head = impl == head && spec->role == model::ParamRole::kTokenEmbedding;
      if (tied_head) tied_name_ = p.key();
      if (tied_head && (stage_ == 0 || stage_ == (V - 1) % P_)) {
        tied.emplace_back(p.key(), p.value());
        own_[p.key()] = p.value();
      } else if (vs % P_ == stage_) {
        chunks_[size_t(vs / P_)].params.emplace_back(p.key(), p.value());
        own_[p.key()] = p.value();
      } else {  // another stage's: free it
        torch::NoGradGuard no_grad;
        p.value().set_data(torch::empty({0}, p.value().options()));
      }
    }
    auto decays = [specs = specs_](const std::string& name, const torch::Tensor&) {
      return model::find_spec(specs, name)->decays;
    };
    for (Chunk& c : chunks_) {
      if (c.params.empty()) continue;
      c.dp = std::make_unique<DataParallel>(c.params, decays, dp, o);
      c.dp->broadcast_parameters();
    }
    if (!tied.empty()) {
      tied_ = std::make_unique<DataParallel>(tied, decays, dp, o);
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

  std::vector<double> forward_backward(const std::vector<MicroBatchInput>& mbs) override {
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
    for (size_t k = 0; k < program_.size(); ++k) {
      post_receive(k);
      if (k + 1 < program_.size()) post_receive(k + 1);
      const PipeAction& a = program_[k];
      if (a.op == PipeOp::kForward)
        forward(a);
      else if (a.op == PipeOp::kBackwardWeight)
        weight_grads_.run(a.micro * v_ + a.chunk);
      else
        backward(a, int(k) == last_backward_[size_t(a.chunk)]);
    }
    for (auto& s : sends_) s.pending.wait();
    sends_.clear();
    TORCH_CHECK(weight_grads_.pending() == 0, "pipeline: ", weight_grads_.pending(),
                " weight-gradient passes were kept but not run");
    mbs_ = nullptr;
    // The losses are the last stage's: every rank reports them.
    auto t = torch::tensor(losses_, torch::kDouble);
    pp_->broadcast(t, last_rank());
    return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + m);
  }

  torch::Tensor eval_loss(const torch::Tensor& x, const torch::Tensor& y) override {
    torch::NoGradGuard no_grad;
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
    return loss.reshape({});
  }

  void finish_backward() override {
    for (DataParallel* d : dps()) d->finish_backward();
    if (!tied_ || P_ * v_ == 1) return;
    // The first and the last stage add each other's gradient of the tied table.
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
    torch::NoGradGuard no_grad;
    auto all = [](const std::string&) { return true; };
    double sq = 0;
    for (Chunk& c : chunks_)
      if (c.dp)
        for (const auto& g : c.dp->grad_parts(all)) sq += g.dot(g).item<double>();
    if (tied_ && stage_ == 0)  // the tied table counts once
      for (const auto& g : tied_->grad_parts(all)) sq += g.dot(g).item<double>();
    auto t = torch::tensor({sq}, torch::kDouble);
    if (dp_ && dps().front()->shards_gradients()) dp_->allreduce(t);
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
      torch::Tensor t =
          owner == stage_ ? own_.at(s.name).detach().clone() : torch::empty(s.shape, torch::kFloat);
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
            owner == stage_ ? mine.at(key).clone() : torch::empty(s.shape, torch::kFloat);
        pp_->broadcast(t, owner);
        out.emplace_back(key, t);
      }
    return out;
  }
  // Each stage writes its own tensors, spread over its dp ranks; the tied table by the first
  // stage. Nothing crosses stages.
  bool shares_pieces() const override { return true; }
  CheckpointShare checkpoint_share(const std::string& model_prefix,
                                   const std::string& optim_prefix) override {
    CheckpointShare share;
    const int dp = dp_ ? dp_->size() : 1, dp_rank = dp_ ? dp_->rank() : 0;
    std::map<std::string, torch::Tensor> state = local_state();
    int64_t index = 0;
    auto add = [&](const std::string& key, const std::string& param, const torch::Tensor& t) {
      if (owner_.at(param) != stage_ || index++ % dp != dp_rank) return;
      std::vector<std::pair<int64_t, int64_t>> whole;
      for (int64_t d : t.sizes()) whole.emplace_back(0, d);
      share.owned.push_back({key, t, t.sizes().vec(), whole});
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
    for (DataParallel* d : dps())
      CAIRN_RETURN_IF_ERROR(d->load_state(tensors, optim_prefix, step_count));
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : own_) p.copy_(tensors.at(model_prefix + name));
    return Status::Ok();
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

  int last_rank() const { return (P_ * v_ - 1) % P_; }
  int next_rank() const { return (stage_ + 1) % P_; }
  int prev_rank() const { return (stage_ + P_ - 1) % P_; }
  int vs_of(const PipeAction& a) const { return a.chunk * P_ + stage_; }
  // Message tags: the activation into virtual stage vs and the gradient out of it, micro m.
  int activation_tag(int m, int vs) const { return 2 * (m * P_ * v_ + vs); }
  int gradient_tag(int m, int vs) const { return 2 * (m * P_ * v_ + vs) + 1; }

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
  torch::Tensor activation_buffer(const torch::Tensor& x) const {
    return torch::empty({x.size(0), x.size(1), model_->config().n_embd},
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
    it->second.pending.wait();
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
  comm::Group* dp_;
  int P_, stage_, v_;
  PipelineSchedule kind_;
  std::vector<model::ParamSpec> specs_;
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
  std::map<std::pair<int, int>, InFlight> in_flight_;  // (micro, chunk)
  struct Incoming {
    torch::Tensor tensor;
    comm::Pending pending;
  };
  std::map<std::tuple<bool, int, int>, Incoming> incoming_;  // (forward?, micro, vs)
  std::vector<Send> sends_;
  model::WeightGradStore weight_grads_;  // zb-h1: the weight passes' work, by micro-batch and chunk
};

}  // namespace

Result<std::unique_ptr<Engine>> make_pipeline_engine(std::shared_ptr<model::LanguageModel> model,
                                                     const Plan& plan,
                                                     const comm::MeshGroups& groups,
                                                     DataParallelOptions options) {
  if (plan.mesh.tp > 1 || plan.mesh.cp > 1)
    return Status::Unsupported("plan: pp " + std::to_string(plan.mesh.pp) +
                               " with tp or cp above 1 is not built in this version (pp composes "
                               "with dp and ZeRO-1/2)");
  if (plan.pipeline.schedule == PipelineSchedule::kZeroBubbleH1 && plan.zero_stage == 2)
    return Status::Unsupported(
        "plan: the zb-h1 schedule with ZeRO-2: ZeRO-2 reduces each micro-batch's gradients as "
        "its backward ends, before zb-h1's weight passes add theirs; use zero_stage 0 or 1 "
        "with zb-h1");
  return std::unique_ptr<Engine>(
      std::make_unique<PipelineEngine>(std::move(model), plan, groups.get(comm::Axis::kPipeline),
                                       groups.get(comm::Axis::kData), options));
}

}  // namespace cairn::parallel
