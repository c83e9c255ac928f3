// Reading the job options from a config and cross-checking them (the keys themselves: spec.cpp).
#include "cairn/train/options.h"

#include <torch/cuda.h>

#include <nlohmann/json.hpp>

#include "cairn/core/fs.h"
#include "cairn/model/config.h"
#include "cairn/parallel/context_parallel.h"
#include "cairn/parallel/pipeline_schedule.h"

namespace cairn::train {

Result<TrainOptions> train_options_from(const core::Config& c) {
  TrainOptions o;
  o.micro_batch_size = c.get_int("train.micro_batch_size");
  o.global_batch_size = c.get_int("train.global_batch_size");
  o.seq_len = c.get_int("train.seq_len");
  o.max_steps = c.get_int("train.max_steps");
  o.lr = c.get_float("train.lr");
  o.min_lr = c.get_float("train.min_lr");
  o.warmup_steps = c.get_int("train.warmup_steps");
  o.lr_decay_steps = c.get_int("train.lr_decay_steps");
  o.weight_decay = c.get_float("train.weight_decay");
  o.beta1 = c.get_float("train.beta1");
  o.beta2 = c.get_float("train.beta2");
  o.eps = c.get_float("train.eps");
  o.grad_clip = c.get_float("train.grad_clip");
  o.seed = uint64_t(c.get_int("train.seed"));
  o.eval_interval = c.get_int("train.eval_interval");
  o.eval_batches = c.get_int("train.eval_batches");
  o.ckpt_dir = c.get_string("ckpt.dir");
  o.persist_interval = c.get_int("ckpt.persist_interval");
  o.memory_interval = c.get_int("ckpt.memory_interval");
  o.keep_last = c.get_int("ckpt.keep_last");
  o.keep_every = c.get_int("ckpt.keep_every");
  o.persist_timeout_s = c.get_float("ckpt.persist_timeout");
  o.persist_duty = c.get_float("ckpt.persist_duty");
  o.activation_checkpointing = c.get_bool("train.activation_checkpointing");
  o.zero_stage = c.get_int("parallel.zero_stage");
  o.bucket_mb = c.get_int("parallel.bucket_mb");
  o.plan_path = c.get_string("parallel.plan");
  o.tp = c.get_int("parallel.tp");
  o.sequence_parallel = c.get_bool("parallel.sequence_parallel");
  o.dp = c.get_int("parallel.dp");
  o.order = c.get_string("parallel.order");
  o.cp = c.get_int("parallel.cp");
  o.cp_kind = c.get_string("parallel.cp_kind");
  o.cp_ulysses = c.get_int("parallel.cp_ulysses");
  o.cp_ring = c.get_int("parallel.cp_ring");
  o.cp_overlap = c.get_bool("parallel.cp_overlap");
  o.pp = c.get_int("parallel.pp");
  o.pp_schedule = c.get_string("parallel.pp_schedule");
  o.pp_layers = c.get_int_list("parallel.pp_layers");
  o.pp_virtual = c.get_int("parallel.pp_virtual");
  o.pp_elastic = c.get_bool("parallel.pp_elastic");
  if (auto order = parse_mesh_order(o.order); !order.ok()) return order.status();
  if (o.sequence_parallel && o.tp < 2)
    return Status::InvalidArgument("parallel.sequence_parallel needs parallel.tp > 1");
  if (o.sequence_parallel && o.seq_len % o.tp != 0)
    return Status::InvalidArgument("parallel.sequence_parallel: train.seq_len " +
                                   std::to_string(o.seq_len) +
                                   " is not a multiple of parallel.tp " + std::to_string(o.tp));
  o.precision = c.get_string("train.precision");
  o.device = c.get_string("train.device");
  if (auto d = resolve_device(o.device); !d.ok()) return d.status();
  o.threads = c.get_int("train.threads");
  o.log_interval = c.get_int("train.log_interval");
  o.data_path = c.get_string("data.path");
  o.tokenizer = c.get_string("data.tokenizer");
  o.log_sample_ids = c.get_bool("data.log_sample_ids");
  o.sharding = c.get_string("data.sharding");
  o.stream = c.get_bool("data.stream");
  if (o.stream && o.sharding != "dynamic")
    return Status::InvalidArgument(
        "data.stream: true needs data.sharding: dynamic (the shard "
        "service cuts the stream into shards as it grows)");
  if (o.global_batch_size % o.micro_batch_size != 0)
    return Status::InvalidArgument("train.global_batch_size (" +
                                   std::to_string(o.global_batch_size) +
                                   ") must be a multiple of train.micro_batch_size (" +
                                   std::to_string(o.micro_batch_size) + ")");
  if (o.min_lr > o.lr)
    return Status::InvalidArgument("train.min_lr (" + std::to_string(o.min_lr) +
                                   ") must not exceed train.lr (" + std::to_string(o.lr) + ")");
  int64_t block = c.get_int("model.block_size");
  if (o.seq_len > block)
    return Status::InvalidArgument("train.seq_len (" + std::to_string(o.seq_len) +
                                   ") must not exceed model.block_size (" + std::to_string(block) +
                                   ")");
  return o;
}

Result<torch::Device> resolve_device(const std::string& spec) {
  if (spec == "cpu") return torch::Device(torch::kCPU);
  const bool cuda =
      spec == "cuda" || (spec.size() > 5 && spec.size() <= 8 && spec.compare(0, 5, "cuda:") == 0 &&
                         spec.find_first_not_of("0123456789", 5) == std::string::npos);
  if (!cuda)
    return Status::InvalidArgument("train.device '" + spec + "': expected cpu, cuda or cuda:N");
  if (!torch::cuda::is_available())
    return Status::InvalidArgument(
        "train.device " + spec +
        ": this libtorch has no CUDA support or sees no GPU (torch::cuda::is_available() is "
        "false); use train.device: cpu");
  const int64_t index = spec == "cuda" ? 0 : std::stoll(spec.substr(5));
  if (index >= int64_t(torch::cuda::device_count()))
    return Status::InvalidArgument("train.device " + spec + ": there are " +
                                   std::to_string(torch::cuda::device_count()) + " GPUs");
  return torch::Device(torch::kCUDA, int8_t(index));
}

Result<std::array<comm::Axis, comm::kNumAxes>> parse_mesh_order(const std::string& text) {
  std::vector<std::string> names;
  std::string name;
  for (char ch : text + ",") {
    if (ch == ',') {
      names.push_back(name);
      name.clear();
    } else if (ch != ' ') {
      name += ch;
    }
  }
  auto order = comm::parse_order(names);
  if (!order.ok())
    return Status::InvalidArgument("parallel.order '" + text + "': " + order.status().message() +
                                   " (e.g. pp,dp,cp,tp)");
  return order;
}

// The Ulysses degree of a 2d layout from parallel.cp_ulysses / parallel.cp_ring (0 for the
// other kinds, where setting either is refused).
Result<int> cp_ulysses_from(const TrainOptions& o, const model::ModelConfig& m) {
  if (o.cp == 1 || o.cp_kind != "2d") {
    if (o.cp_ulysses != 0 || o.cp_ring != 0)
      return Status::InvalidArgument(
          std::string(o.cp_ulysses ? "parallel.cp_ulysses" : "parallel.cp_ring") +
          " is for parallel.cp_kind 2d with parallel.cp > 1");
    return 0;
  }
  int64_t u = o.cp_ulysses;
  if (o.cp_ring > 0) {
    if (o.cp % o.cp_ring != 0 || (u > 0 && u * o.cp_ring != o.cp))
      return Status::InvalidArgument(
          "parallel.cp_ring " + std::to_string(o.cp_ring) +
          (u > 0 ? " x parallel.cp_ulysses " + std::to_string(u) : std::string()) +
          " must make parallel.cp " + std::to_string(o.cp));
    u = o.cp / o.cp_ring;
  }
  if (u == 0)  // the largest Ulysses degree below cp that splits the heads
    for (int64_t d = o.cp / 2; d > 1 && u == 0; --d)
      if (o.cp % d == 0 && parallel::ulysses_unfit(m, int(o.tp), int(d)).empty()) u = d;
  if (u == 0)
    return Status::InvalidArgument(
        "parallel.cp_kind 2d: no Ulysses degree between 1 and cp " + std::to_string(o.cp) +
        " divides cp and the heads: " + parallel::ulysses_unfit(m, int(o.tp), 2) +
        "; use parallel.cp_kind ring");
  return int(u);
}

// plan->pipeline from parallel.pp* (plan->mesh.pp set): the schedule, the chunks per rank and
// the cut, given (parallel.pp_layers) or balanced by the estimated cost.
Status pipeline_from(const TrainOptions& o, const model::ModelConfig& m, parallel::Plan* plan) {
  const bool interleaved = o.pp_schedule == "interleaved";
  if (o.pp == 1) {
    if (!o.pp_layers.empty() || o.pp_virtual > 1)
      return Status::InvalidArgument(
          std::string(o.pp_layers.empty() ? "parallel.pp_virtual" : "parallel.pp_layers") +
          " is for parallel.pp > 1");
    return Status::Ok();
  }
  CAIRN_ASSIGN_OR_RETURN(plan->pipeline.schedule, parallel::parse_schedule(o.pp_schedule));
  if (o.pp_virtual > 1 && !interleaved)
    return Status::InvalidArgument("parallel.pp_virtual " + std::to_string(o.pp_virtual) +
                                   " needs parallel.pp_schedule interleaved");
  if (interleaved && o.pp_virtual == 1)
    return Status::InvalidArgument(
        "parallel.pp_schedule interleaved needs parallel.pp_virtual of at least 2 (or 0: 2)");
  const int v = interleaved ? int(o.pp_virtual == 0 ? 2 : o.pp_virtual) : 1;
  plan->pipeline.virtual_stages = v;
  const int64_t chunks = o.pp * v;
  if (o.pp_layers.empty()) {
    if (chunks > m.n_layer + 2)
      return Status::InvalidArgument(
          "parallel.pp " + std::to_string(o.pp) +
          (v > 1 ? " x parallel.pp_virtual " + std::to_string(v) : std::string()) + " = " +
          std::to_string(chunks) + " stages for model.n_layer " + std::to_string(m.n_layer) +
          " blocks: every stage but the first and the last needs a block");
    plan->pipeline.cuts =
        parallel::balanced_cuts(m.n_layer, int(chunks), parallel::stage_costs(m, o.seq_len));
  } else {
    int64_t sum = 0;
    std::string list;
    for (int64_t n : o.pp_layers) {
      sum += n;
      list += (list.empty() ? "" : ", ") + std::to_string(n);
    }
    if (int64_t(o.pp_layers.size()) != chunks || sum != m.n_layer)
      return Status::InvalidArgument(
          "parallel.pp_layers [" + list + "]: needs " + std::to_string(chunks) +
          " entries (parallel.pp" + (v > 1 ? " x parallel.pp_virtual" : std::string()) +
          ") summing to model.n_layer " + std::to_string(m.n_layer) + ", got " +
          std::to_string(o.pp_layers.size()) + " summing to " + std::to_string(sum));
    plan->pipeline.cuts = parallel::cuts_from_blocks(o.pp_layers);
  }
  return Status::Ok();
}

// parallel.pp_elastic: the pipeline size a world that does not fit parallel.pp x cp x tp
// trains at (the smallest above pp that fits, else the largest below), or pp when it fits.
Result<int64_t> elastic_pp(const TrainOptions& o, const model::ModelConfig& m, int world) {
  const int64_t per_pipeline = o.tp * o.cp, fit = o.pp * per_pipeline;
  if (!o.pp_elastic || o.pp == 1 || o.dp != 0 || world % fit == 0 || world % per_pipeline != 0)
    return o.pp;
  const int64_t rest = world / per_pipeline;  // pp x dp
  int64_t pp = 0;
  for (int64_t d = o.pp + 1; d <= rest && pp == 0; ++d)
    if (rest % d == 0 && d <= m.n_layer + 2) pp = d;
  for (int64_t d = o.pp - 1; d >= 1 && pp == 0; --d)
    if (rest % d == 0) pp = d;
  if (!o.pp_layers.empty())
    return Status::InvalidArgument(
        "parallel.pp_elastic: the " + std::to_string(world) + " ranks fit pipeline size " +
        std::to_string(pp) + ", not parallel.pp " + std::to_string(o.pp) +
        ", and parallel.pp_layers gives a cut for " + std::to_string(o.pp) +
        " stages: leave parallel.pp_layers out so that the cut is recomputed");
  return pp;
}

Status layout_keys_unset(const TrainOptions& o, const std::string& source) {
  const TrainOptions defaults;
  for (auto [key, set] :
       {std::pair{"parallel.zero_stage", o.zero_stage != defaults.zero_stage},
        {"parallel.tp", o.tp != defaults.tp},
        {"parallel.dp", o.dp != defaults.dp},
        {"parallel.order", o.order != defaults.order},
        {"parallel.sequence_parallel", o.sequence_parallel != defaults.sequence_parallel},
        {"parallel.cp", o.cp != defaults.cp},
        {"parallel.cp_kind", o.cp_kind != defaults.cp_kind},
        {"parallel.cp_ulysses", o.cp_ulysses != defaults.cp_ulysses},
        {"parallel.cp_ring", o.cp_ring != defaults.cp_ring},
        {"parallel.cp_overlap", o.cp_overlap != defaults.cp_overlap},
        {"parallel.pp", o.pp != defaults.pp},
        {"parallel.pp_schedule", o.pp_schedule != defaults.pp_schedule},
        {"parallel.pp_layers", o.pp_layers != defaults.pp_layers},
        {"parallel.pp_virtual", o.pp_virtual != defaults.pp_virtual},
        {"parallel.pp_elastic", o.pp_elastic != defaults.pp_elastic},
        {"train.activation_checkpointing",
         o.activation_checkpointing != defaults.activation_checkpointing}})
    if (set)
      return Status::InvalidArgument(std::string(key) + " is set while " + source +
                                     " gives the layout: put it in the plan");
  return Status::Ok();
}

Result<parallel::Plan> plan_from(const TrainOptions& options, const model::ModelConfig& m,
                                 int world) {
  TrainOptions o = options;
  CAIRN_ASSIGN_OR_RETURN(o.pp, elastic_pp(options, m, world));
  parallel::Plan plan;
  if (o.plan_path.empty()) {
    const int64_t mp = o.pp * o.tp * o.cp;  // ranks per model replica
    // The model-parallel axes set, e.g. "parallel.pp 2 x parallel.tp 2".
    std::string per_replica;
    int set_axes = 0;
    for (auto [key, n] :
         {std::pair{"parallel.pp", o.pp}, {"parallel.cp", o.cp}, {"parallel.tp", o.tp}})
      if (n > 1 || (key == std::string("parallel.tp") && set_axes == 0)) {
        per_replica += (set_axes++ ? " x " : "") + std::string(key) + " " + std::to_string(n);
      }
    if (o.dp > 0 && o.dp * mp != world)
      return Status::InvalidArgument(
          "parallel.dp " + std::to_string(o.dp) + " x " + per_replica + " = " +
          std::to_string(o.dp * mp) + " ranks, but the job has " + std::to_string(world) +
          (world % mp == 0
               ? ": set parallel.dp=" + std::to_string(world / mp) + " or leave it out (inferred)"
               : ""));
    if (world % mp != 0) {
      std::string worlds;
      for (int64_t k = 1; k <= 4; ++k) worlds += (k > 1 ? ", " : "") + std::to_string(k * mp);
      return Status::InvalidArgument(
          (set_axes > 1 ? per_replica + " = " + std::to_string(mp) : per_replica) +
          " does not divide the " + std::to_string(world) + " ranks: run " + worlds +
          " ranks, or set " +
          (set_axes > 1 ? std::string("their product")
                        : per_replica.substr(0, per_replica.find(" "))) +
          " to a divisor of " + std::to_string(world));
    }
    plan = parallel::Plan::data_parallel(world / int(mp), m.n_layer, int(o.zero_stage));
    plan.mesh.tp = int(o.tp);
    plan.mesh.cp = int(o.cp);
    plan.mesh.pp = int(o.pp);
    CAIRN_RETURN_IF_ERROR(pipeline_from(o, m, &plan));
    CAIRN_ASSIGN_OR_RETURN(plan.order, parse_mesh_order(o.order));
    plan.bucket_bytes = o.bucket_mb << 20;
    CAIRN_ASSIGN_OR_RETURN(plan.cp_ulysses, cp_ulysses_from(o, m));
    plan.cp_overlap = o.cp_overlap;
    parallel::ContextParallelKind kind = parallel::ContextParallelKind::kNone;
    if (o.cp > 1) {
      CAIRN_ASSIGN_OR_RETURN(kind, parallel::parse_cp_kind(o.cp_kind));
    }
    for (parallel::LayerPlan& l : plan.layers) {
      l.checkpoint = o.activation_checkpointing;
      l.tp = int(o.tp);
      l.sequence_parallel = o.sequence_parallel;
      l.cp_kind = kind;
    }
  } else {
    if (o.plan_path == "auto")
      return Status::InvalidArgument(
          "parallel.plan=auto is resolved when the job starts (cairn train): give a plan file "
          "or the parallel.* keys here");
    CAIRN_RETURN_IF_ERROR(layout_keys_unset(o, "parallel.plan (" + o.plan_path + ")"));
    if (o.bucket_mb != TrainOptions().bucket_mb)  // a plan file carries its bucket size
      return Status::InvalidArgument("parallel.bucket_mb is set while parallel.plan (" +
                                     o.plan_path + ") gives the layout: put it in the plan");
    CAIRN_ASSIGN_OR_RETURN(std::string text, core::read_file(o.plan_path));
    nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded())
      return Status::InvalidArgument("parallel.plan: " + o.plan_path + " is not valid JSON");
    auto p = parallel::Plan::from_json(j, m.n_layer);
    if (!p.ok()) return p.status().WithContext("parallel.plan " + o.plan_path);
    plan = *std::move(p);
  }
  if (Status s = plan_fits_job(o, m, world, plan); !s.ok())
    return o.plan_path.empty() ? s : s.WithContext("parallel.plan " + o.plan_path);
  return plan;
}

Status plan_fits_job(const TrainOptions& o, const model::ModelConfig& m, int world,
                     const parallel::Plan& plan) {
  CAIRN_RETURN_IF_ERROR(plan.validate(m, world));
  if (plan.mesh.pp > 1) {  // the step's micro-batches must fit the schedule
    const int64_t per_rank = o.micro_batch_size * plan.mesh.dp;
    const int64_t micro = o.global_batch_size / std::max<int64_t>(per_rank, 1);
    const parallel::ScheduleShape shape{plan.pipeline.schedule, plan.mesh.pp, int(micro),
                                        plan.pipeline.virtual_stages};
    if (std::string unfit = parallel::schedule_unfit(shape); !unfit.empty())
      return Status::InvalidArgument(
          std::string("pipeline schedule ") + parallel::schedule_name(plan.pipeline.schedule) +
          " with " + std::to_string(micro) +
          " micro-batches per step (train.global_batch_size / (train.micro_batch_size x dp)): " +
          unfit);
  }
  if (plan.mesh.cp > 1) {
    parallel::ContextSplit split;
    split.ulysses = plan.ulysses_degree(plan.layers.front());
    split.ring = plan.ring_degree(plan.layers.front());
    if (std::string unfit = parallel::context_unfit(o.seq_len, split); !unfit.empty())
      return Status::InvalidArgument("parallel.cp " + std::to_string(plan.mesh.cp) + " (" +
                                     parallel::cp_kind_name(plan.layers.front().cp_kind) +
                                     "): train.seq_len: " + unfit);
    const int64_t share = o.seq_len / plan.mesh.cp;
    if (plan.layers.front().sequence_parallel && share % plan.mesh.tp != 0)
      return Status::InvalidArgument(
          "parallel.sequence_parallel with parallel.cp " + std::to_string(plan.mesh.cp) +
          ": each rank's " + std::to_string(share) + " tokens of train.seq_len " +
          std::to_string(o.seq_len) + " are not a multiple of parallel.tp " +
          std::to_string(plan.mesh.tp));
  }
  return Status::Ok();
}

}  // namespace cairn::train
