// The training loop: setting up a run, the step loop, evaluation (checkpoints: trainer_ckpt.cpp).
#include "cairn/train/trainer.h"

#include <ATen/autocast_mode.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <thread>

#include "cairn/ckpt/checkpoint.h"
#include "cairn/ckpt/persist.h"
#include "cairn/comm/group.h"
#include "cairn/core/blas_threads.h"
#include "cairn/core/block_cache.h"
#include "cairn/core/fs.h"
#include "cairn/core/json_lines.h"
#include "cairn/core/malloc_tuning.h"
#include "cairn/core/proc.h"
#include "cairn/data/local_sampler.h"
#include "cairn/data/token_file.h"
#include "cairn/elastic/flash_slots.h"
#include "cairn/elastic/master_client.h"
#include "cairn/elastic/progress.h"
#include "cairn/model/config.h"
#include "cairn/model/language_model.h"
#include "cairn/parallel/data_parallel.h"
#include "cairn/train/memory_estimate.h"
#include "cairn/train/options.h"
#include "cairn/train/run_log.h"
#include "cairn/train/schedule.h"
#include "cairn/ui/progress.h"
#include "train/flash_impl.h"
#include "train/micro_batches_impl.h"
#include "train/step_metrics_impl.h"
#include "train/trainer_impl.h"

namespace cairn::train {
namespace {

// bf16 autocast for the matmuls of one forward pass on `device` (the CPU's autocast, or
// CUDA's); fp32 master weights and optimizer.
class AutocastScope {
 public:
  AutocastScope(bool on, const torch::Device& device) : on_(on), cuda_(device.is_cuda()) {
    if (!on_) return;
    if (cuda_) {
      at::autocast::set_enabled(true);
      at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    } else {
      at::autocast::set_cpu_enabled(true);
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    }
  }
  ~AutocastScope() {
    if (!on_) return;
    cuda_ ? at::autocast::set_enabled(false) : at::autocast::set_cpu_enabled(false);
    at::autocast::clear_cache();
  }

 private:
  bool on_, cuda_;
};

// The GEMM peak of the newest `start` event in the run's events.jsonl at this world size, or 0.
double earlier_peak(const std::string& run_dir, int world) {
  double peak = 0;
  for (const nlohmann::json& j : core::read_json_lines(run_dir + "/events.jsonl"))
    if (j.value("event", "") == "start" && j.value("world_size", -1) == world)
      peak = j.value("peak_flops", 0.0);
  return peak;
}

}  // namespace

namespace {

// Collective, before anything else: every rank was started with the same config (a rank with
// another layout would otherwise wait for collectives the others never make).
Status same_config_everywhere(const core::Config& config, comm::Group& group) {
  const int64_t mine = int64_t(std::hash<std::string>{}(config.to_yaml()) >> 1);
  auto all = torch::empty({group.size()}, torch::kLong);
  group.allgather(all, torch::tensor({mine}, torch::kLong));
  for (int r = 0; r < group.size(); ++r)
    if (all[r].item<int64_t>() != mine)
      return Status::InvalidArgument(
          "rank " + std::to_string(r) + " was started with another config than rank " +
          std::to_string(group.rank()) +
          " (the config files or --set flags differ): every rank of a job needs the same");
  return Status::Ok();
}

// A machine holds whole tensor-parallel groups: their collectives stay on it, and an elastic
// job that loses or gains machines keeps a world that tp divides. Ranks are numbered machine
// by machine, `local_ranks` on each.
Status tensor_groups_on_one_machine(const comm::Mesh& mesh, int64_t local_ranks) {
  const int tp = mesh.shape().tp;
  if (tp == 1) return Status::Ok();
  if (local_ranks % tp != 0)
    return Status::InvalidArgument(
        "parallel.tp " + std::to_string(tp) + " needs whole tensor-parallel groups on each " +
        "machine: " + std::to_string(local_ranks) + " rank(s) run here; start a multiple of " +
        std::to_string(tp) + " per machine (--nproc-per-node)");
  for (const std::vector<int>& g : mesh.all_groups(comm::Axis::kTensor))
    for (int r : g)
      if (r / local_ranks != g[0] / local_ranks)
        return Status::InvalidArgument(
            "parallel.order puts the tensor-parallel group of ranks " + std::to_string(g[0]) +
            " and " + std::to_string(r) + " on different machines (" + std::to_string(local_ranks) +
            " ranks per machine): keep tp last in parallel.order, e.g. pp,dp,cp,tp");
  return Status::Ok();
}

}  // namespace

double Trainer::Impl::sum_over_data(double v) {
  comm::Group* g = data_group();
  if (!g) return v;
  auto t = torch::tensor({v}, torch::kDouble);
  g->allreduce(t);
  return t.item<double>();
}

double Trainer::Impl::sum_over_ranks(double v) {
  if (!group) return v;
  auto t = torch::tensor({v}, torch::kDouble);
  group->allreduce(t);
  return t.item<double>();
}

std::vector<double> Trainer::Impl::sum_over_ranks(std::vector<double> v) {
  if (!group) return v;
  auto t = torch::tensor(v, torch::kDouble);
  group->allreduce(t);
  auto a = t.accessor<double, 1>();
  for (size_t i = 0; i < v.size(); ++i) v[i] = a[int64_t(i)];
  return v;
}

std::pair<torch::Tensor, torch::Tensor> Trainer::Impl::shard_batch(const elastic::Shard& shard) {
  const int64_t B = shard.size(), T = opt.seq_len;
  auto x = torch::empty({B, T}, torch::kLong);
  auto y = torch::empty({B, T}, torch::kLong);
  for (int64_t i = 0; i < B; ++i) {
    if (stream) {
      Status s = stream->fill(shard.start + i, T, x.data_ptr<int64_t>() + i * T,
                              y.data_ptr<int64_t>() + i * T);
      if (!s.ok()) throw StatusError(s);
    } else {
      sampler->fill(shard.start + i, x.data_ptr<int64_t>() + i * T, y.data_ptr<int64_t>() + i * T);
    }
  }
  return {x, y};
}

Result<std::pair<std::vector<int64_t>, std::vector<int64_t>>> Trainer::Impl::gather_trained(
    const std::vector<elastic::Shard>& shards) {
  // Every rank's sample ids, padded with -1 to the most a rank can train in a step.
  const int64_t cap = int64_t(dynamic->quota()) * opt.micro_batch_size;
  auto mine = torch::full({cap}, -1, torch::kLong);
  int64_t n = 0;
  for (const auto& s : shards)
    for (int64_t id = s.start; id < s.end && n < cap; ++id) mine[n++] = id;
  torch::Tensor all = mine;
  if (group) {
    all = torch::empty({cap * world}, torch::kLong);
    group->allgather(all, mine);
  }
  std::vector<int64_t> per_rank(size_t(world), 0), ids;
  const int64_t* v = all.data_ptr<int64_t>();
  for (int r = 0; r < world; ++r)
    for (int64_t i = 0; i < cap; ++i)
      if (v[r * cap + i] >= 0) {
        ids.push_back(v[r * cap + i]);
        if (i % opt.micro_batch_size == 0) ++per_rank[size_t(r)];
      }
  return std::make_pair(per_rank, ids);
}

std::vector<int64_t> Trainer::Impl::gather_consumed() {
  // Padded with -1 to the most samples a rank trains in a step (an uneven split leaves some
  // ranks short), so that every rank contributes the same number of values.
  const int64_t cap = accum_steps() * opt.micro_batch_size;
  auto mine = torch::full({cap}, -1, torch::kLong);
  for (size_t i = 0; i < consumed.size() && int64_t(i) < cap; ++i) mine[int64_t(i)] = consumed[i];
  consumed.clear();
  torch::Tensor all = mine;
  if (comm::Group* g = data_group()) {  // the other axes' ranks hold the same ids
    all = torch::empty({cap * data_world}, torch::kLong);
    g->allgather(all, mine);
  }
  // Back into the global order: data rank r's k-th micro-batch is micro-batch
  // k * data_world + r.
  const int64_t B = opt.micro_batch_size;
  std::vector<int64_t> ids(size_t(num_micro() * B), -1);
  const int64_t* v = all.data_ptr<int64_t>();
  for (int r = 0; r < data_world; ++r)
    for (int64_t i = 0; i < cap; ++i) {
      const int64_t j = (i / B) * data_world + r;
      if (v[r * cap + i] >= 0 && j < num_micro()) ids[size_t(j * B + i % B)] = v[r * cap + i];
    }
  ids.erase(std::remove(ids.begin(), ids.end(), int64_t(-1)), ids.end());
  return ids;
}

std::pair<torch::Tensor, torch::Tensor> Trainer::Impl::batch(int64_t s, int64_t micro,
                                                             bool record) {
  const int64_t B = opt.micro_batch_size, T = opt.seq_len;
  auto x = torch::empty({B, T}, torch::kLong);
  auto y = torch::empty({B, T}, torch::kLong);
  for (int64_t i = 0; i < B; ++i) {
    int64_t g = s * opt.global_batch_size + (micro * data_world + data_rank) * B + i;
    const int64_t id = sampler->sample_id(g);
    sampler->fill(id, x.data_ptr<int64_t>() + i * T, y.data_ptr<int64_t>() + i * T);
    if (opt.log_sample_ids && record) consumed.push_back(id);
  }
  return {x, y};
}

double Trainer::Impl::evaluate() {
  torch::NoGradGuard no_grad;
  model->eval();
  const int64_t B = opt.micro_batch_size, T = opt.seq_len;
  int64_t n = std::min(val_sampler->num_samples(), opt.eval_batches * B);
  std::vector<int64_t> mine;
  for (int64_t i = data_rank; i < n; i += data_world) mine.push_back(i);
  double sum = 0;
  for (size_t start = 0; start < mine.size(); start += size_t(B)) {
    int64_t b = std::min<int64_t>(B, int64_t(mine.size() - start));
    auto x = torch::empty({b, T}, torch::kLong);
    auto y = torch::empty({b, T}, torch::kLong);
    for (int64_t i = 0; i < b; ++i)
      val_sampler->fill(mine[start + size_t(i)], x.data_ptr<int64_t>() + i * T,
                        y.data_ptr<int64_t>() + i * T);
    AutocastScope autocast(opt.precision == "bf16", device);
    sum += engine->eval_loss(x.to(device), y.to(device)).item<double>() * double(b);
  }
  model->train();
  return sum_over_data(sum) / double(n);
}

Trainer::Trainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Trainer::~Trainer() = default;
model::LanguageModel& Trainer::model() { return *impl_->model; }
std::map<std::string, torch::Tensor> Trainer::gather_parameters() {
  std::map<std::string, torch::Tensor> out;
  for (auto& [name, t] : impl_->engine->gather_params()) out[name] = t.clone();
  return out;
}
int64_t Trainer::step() const { return impl_->step; }
double Trainer::evaluate() { return impl_->evaluate(); }

Status Trainer::Impl::open_data() {
  const TrainOptions& o = opt;
  for (auto [name, file] : {std::pair{"train.bin", &train_file}, {"val.bin", &val_file}}) {
    if (o.stream && file == &train_file) continue;  // train.stream instead
    auto f = data::TokenFile::Open(o.data_path + "/" + name);
    if (!f.ok())
      return f.status().WithContext("data.path: run `cairn data prepare --out " + o.data_path +
                                    "` first");
    *file = std::move(f).value();
    if ((*file)->vocab_size() > mcfg.vocab_size)
      return Status::InvalidArgument(o.data_path + "/" + name + " has vocabulary size " +
                                     std::to_string((*file)->vocab_size()) +
                                     ", larger than model.vocab_size " +
                                     std::to_string(mcfg.vocab_size));
    if ((*file)->size() < o.seq_len + 1)
      return Status::InvalidArgument(o.data_path + "/" + name + " holds " +
                                     std::to_string((*file)->size()) +
                                     " tokens, fewer than one sequence of train.seq_len + 1");
  }
  if (o.stream) {
    // The writer may start at about the same time: give it a minute to create the stream.
    for (int i = 0;; ++i) {
      auto s = data::TokenStream::Open(o.data_path, int32_t(mcfg.vocab_size));
      if (s.ok()) {
        stream = std::move(s).value();
        break;
      }
      if (s.status().code() != StatusCode::kNotFound || i >= 600) return s.status();
      if (i == 0) spdlog::info("waiting for {}", s.status().message());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  } else {
    sampler = std::make_unique<data::LocalSampler>(train_file.get(), o.seq_len, o.seed);
  }
  val_sampler = std::make_unique<data::LocalSampler>(val_file.get(), o.seq_len, o.seed);

  // The global generator starts from a random seed in every process; seed it so that its
  // state (saved in checkpoints for stochastic layers) is a function of the config.
  {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(o.seed);
  }
  if (o.sharding == "dynamic") {
    if (!plan.allows_uneven_micro_batches())
      return Status::InvalidArgument(
          "data.sharding: dynamic needs parallel.zero_stage 0 or 1 and tp, cp and pp 1 (its "
          "ranks train different numbers of micro-batches per step); the plan is " +
          plan.summary());
    DynamicDataOptions d;
    d.client = elastic::master_client_from_env();
    if (stream) {
      d.dataset =
          "train.stream/T" + std::to_string(o.seq_len) + "/B" + std::to_string(o.micro_batch_size);
      d.stream = stream.get();
      d.seq_len = o.seq_len;
    } else {
      d.dataset = "train.bin/" + std::to_string(train_file->size()) + "-tokens/T" +
                  std::to_string(o.seq_len) + "/B" + std::to_string(o.micro_batch_size);
      d.num_samples = sampler->num_samples();
    }
    d.micro_batch_size = o.micro_batch_size;
    d.global_batch_size = o.global_batch_size;
    d.max_steps = o.max_steps;
    d.seed = uint64_t(o.seed);
    d.rank = rank;
    d.world = world;
    CAIRN_ASSIGN_OR_RETURN(dynamic, DynamicData::Open(d));
  }
  return Status::Ok();
}

Status Trainer::Impl::build_engine() {
  const TrainOptions& o = opt;
  // Refuse a job that cannot fit before allocating it (libtorch would die mid-allocation).
  {
    MemoryEstimateInput mi;
    mi.model = mcfg;
    mi.micro_batch_size = o.micro_batch_size;
    mi.seq_len = o.seq_len;
    mi.world = plan.mesh.dp * plan.mesh.cp;  // ZeRO shards over the ranks of one replica's data
    mi.zero_stage = plan.zero_stage;
    mi.tp = plan.mesh.tp;
    mi.cp = plan.mesh.cp;
    mi.cp_ring = plan.ring_degree(plan.layers.front());
    mi.sequence_parallel =
        std::all_of(plan.layers.begin(), plan.layers.end(),
                    [](const parallel::LayerPlan& l) { return l.sequence_parallel; });
    // From the plan (a plan file sets it per block): recomputation counted only when every
    // block is recomputed, so the estimate never falls below what the job needs.
    mi.activation_checkpointing =
        std::all_of(plan.layers.begin(), plan.layers.end(),
                    [](const parallel::LayerPlan& l) { return l.checkpoint; });
    const MemoryEstimate need = estimate_memory(mi);
    if (auto avail = core::available_memory_bytes(); avail.ok()) {
      CAIRN_RETURN_IF_ERROR(check_memory(need, run.local_ranks, *avail));
      spdlog::debug("memory estimate {:.0f} MB per rank, {:.0f} MB available", need.total() / 1e6,
                    double(*avail) / 1e6);
    }
  }
  // A resume usually loads every parameter: initialize only if nothing was restored (below).
  // ZeRO-3 shards the parameters when the engine is made, so it initializes first.
  // A model for another device is built and initialized on the CPU, then moved.
  // A pipeline stage builds only its part: another stage's parameters are never allocated.
  defer_init = run.resume && !plan.shards_parameters() && device.is_cpu();
  CAIRN_ASSIGN_OR_RETURN(comm::Mesh mesh, comm::Mesh::Create(plan.mesh, world, plan.order));
  const model::ModelPart part =
      parallel::model_part(plan, mcfg.n_layer, mesh.coord(rank, comm::Axis::kPipeline));
  model = defer_init ? cairn::model::build_model_uninitialized(mcfg, part)
                     : cairn::model::build_model(mcfg, o.seed, part);
  if (!device.is_cpu()) model->to(device);
  num_params = count_params(mcfg);  // the whole model's, whatever this rank holds
  CAIRN_ASSIGN_OR_RETURN(comm::MeshGroups built, comm::MeshGroups::Create(group, mesh));
  groups = std::make_unique<comm::MeshGroups>(std::move(built));
  CAIRN_ASSIGN_OR_RETURN(engine, parallel::parallelize(model, plan, *groups,
                                                       {o.beta1, o.beta2, o.eps, o.weight_decay}));
  return Status::Ok();
}

Status Trainer::Impl::resume_or_init() {
  const TrainOptions& o = opt;
  if (run.resume) {
    CAIRN_ASSIGN_OR_RETURN(bool from_memory, restore_from_memory());
    if (from_memory) run.resume = false;  // storage is older or equal: nothing more to load
  }
  if (run.resume) {
    std::vector<std::string> skipped;
    auto c = ckpt::load_latest(ckpt_dir, &skipped);
    for (auto& s : skipped) {
      spdlog::warn("skipping broken checkpoint: {}", s);
      log->event("checkpoint_skipped", {{"reason", s}});
    }
    if (c.ok()) {
      CAIRN_RETURN_IF_ERROR(restore(*c));
      log->event("checkpoint_loaded", {{"step", c->step},
                                       {"bytes", c->bytes},
                                       {"duration_ms", c->seconds * 1e3},
                                       {"path", c->path},
                                       {"source", "storage"}});
      spdlog::info("resumed from {} (step {})", c->path, c->step);
    } else if (c.status().code() != StatusCode::kNotFound) {
      return c.status();
    } else if (!skipped.empty()) {
      // Checkpoints exist but none is whole: starting over would silently drop them.
      std::string why;
      for (auto& r : skipped) why += "\n  " + r;
      return Status::Corrupt("--resume: every checkpoint in " + ckpt_dir +
                             " is broken; move them away to start from step 0:" + why);
    } else if (run.start_if_nothing) {
      spdlog::info("no checkpoint in {}; starting from step 0", ckpt_dir);
    } else {
      return Status::NotFound("--resume: nothing to resume: no checkpoint in shared memory or in " +
                              ckpt_dir +
                              " (--resume-or-start starts from step 0 when there is none)");
    }
  }
  // Nothing restored: the same initialization build_model gives (parameters are views into
  // the engine's buckets, so this initializes them in place, identically on every rank).
  if (defer_init && !restored) {
    const auto init_start = Clock::now();
    cairn::model::init_parameters(*model, mcfg, o.seed);
    build_s += seconds_since(init_start);
  }
  // The shard service goes back to what the restored checkpoint saw (or to the start).
  if (dynamic) CAIRN_RETURN_IF_ERROR(dynamic->restore(restored_shards, group));
  return Status::Ok();
}

void Trainer::Impl::measure_peak() {
  // The job's peak: every rank measures at once, sharing the machine as training will.
  // A restarted group takes the peak an earlier start of this run measured (0.5 s saved on
  // the way back from a failure); the job's world is the same machines when it matches.
  const double earlier = run.reuse_peak ? earlier_peak(run.run_dir, world) : 0;
  // Collective either way: every rank must know an earlier peak, or all measure.
  if (sum_over_ranks(earlier > 0 ? 1.0 : 0.0) == double(world))
    peak_flops = earlier;
  else
    peak_flops = sum_over_ranks(measure_gemm_flops());
}

Result<std::unique_ptr<Trainer>> Trainer::Create(const core::Config& config, RunOptions run) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->run = run;
  if (run.run_dir.empty()) return Status::InvalidArgument("a run directory is required");
  if (run.group) CAIRN_RETURN_IF_ERROR(same_config_everywhere(config, *run.group));
  CAIRN_ASSIGN_OR_RETURN(impl->opt, train_options_from(config));
  CAIRN_ASSIGN_OR_RETURN(impl->mcfg, model::model_config_from(config));
  const TrainOptions& o = impl->opt;
  impl->max_steps = o.max_steps;
  impl->group = run.group;
  if (run.group) {
    impl->world = run.group->size();
    impl->rank = run.group->rank();
  }
  CAIRN_ASSIGN_OR_RETURN(impl->device, resolve_device(o.device));
  if (o.global_batch_size % o.micro_batch_size != 0)
    return Status::InvalidArgument("train.global_batch_size (" +
                                   std::to_string(o.global_batch_size) +
                                   ") must be a multiple of train.micro_batch_size (" +
                                   std::to_string(o.micro_batch_size) + ")");
  // 0 keeps torch's default (OMP_NUM_THREADS, which `cairn run` sets per worker). GEMMs run
  // on OpenBLAS's own threads either way; extra OpenMP threads mostly contend with them.
  // train.threads bounds OpenBLAS's GEMM threads too, so that the cores a job uses are the
  // cores it says it uses (and its MFU is against the peak of those cores).
  if (o.threads > 0) {
    torch::set_num_threads(int(o.threads));
    core::set_blas_num_threads(int(o.threads));
  }

  if (o.plan_path == "auto") {
    AutoPlanOptions ao;
    ao.cache_dir = run.plan_cache_dir.empty() ? default_cache_dir() : run.plan_cache_dir;
    ao.local_ranks = run.local_ranks;
    ao.picture_path = run.run_dir + "/plan.svg";
    CAIRN_ASSIGN_OR_RETURN(impl->auto_plan, auto_plan(o, impl->mcfg, run.group, ao));
    impl->plan = impl->auto_plan->plan;
  } else {
    CAIRN_ASSIGN_OR_RETURN(impl->plan, plan_from(o, impl->mcfg, impl->world));
  }
  if (!impl->auto_plan && impl->plan.mesh.pp != o.pp && impl->rank == 0)
    spdlog::warn("parallel.pp_elastic: {} ranks do not fit parallel.pp {}: training at {}",
                 impl->world, o.pp, impl->plan.summary());
  {
    CAIRN_ASSIGN_OR_RETURN(comm::Mesh mesh,
                           comm::Mesh::Create(impl->plan.mesh, impl->world, impl->plan.order));
    impl->data_world = impl->plan.mesh.dp;
    impl->data_rank = mesh.coord(impl->rank, comm::Axis::kData);
    CAIRN_RETURN_IF_ERROR(tensor_groups_on_one_machine(mesh, run.local_ranks));
  }
  if (!impl->even_split() && o.sharding != "dynamic") {
    // An elastic job may be handed any world: train it, with the same global batch. (Dynamic
    // sharding splits a step unevenly anyway: its shards go to whichever rank asks.)
    const int64_t n = impl->num_micro(), per = impl->accum_steps(), dw = impl->data_world;
    spdlog::warn(
        "{} micro-batches per step over {} data-parallel ranks: each rank runs {}, and {} of "
        "them are zero-weight padding ({:.0f}% of the compute); a data-parallel size dividing "
        "{} trains faster",
        n, dw, per, per * dw - n, 100.0 * double(per * dw - n) / double(per * dw), n);
  }
  CAIRN_RETURN_IF_ERROR(impl->open_data());
  // Building frees blocks of sizes no step asks for (whole parameters before their slices or
  // shards, initial values): freed straight to malloc, not kept by the block cache for the
  // optimizer state to take in larger blocks; their pages go back to the kernel once built.
  core::process_block_cache().set_keeping(false);
  struct KeepWhenBuilt {
    ~KeepWhenBuilt() {
      core::process_block_cache().set_keeping(true);
      core::return_free_heap();
    }
  } keep_when_built;
  const auto build_start = Clock::now();
  CAIRN_RETURN_IF_ERROR(impl->build_engine());
  impl->build_s = seconds_since(build_start);
  CAIRN_RETURN_IF_ERROR(impl->open_run_files());
  if (impl->auto_plan) impl->record_auto_plan();
  CAIRN_RETURN_IF_ERROR(impl->resume_or_init());
  if (run.testing.measure_peak) impl->measure_peak();
  impl->prepare_slots();  // after the GEMM peak: its background work would halve it
  return std::unique_ptr<Trainer>(new Trainer(std::move(impl)));
}

StepMetrics Trainer::Impl::log_start() {
  const double flops_per_token = model->flops_per_token(opt.seq_len);
  const double tokens_per_step = double(opt.global_batch_size * opt.seq_len);
  const parallel::MemoryReport mem = engine->memory_report();
  const char* omp_wait_policy = std::getenv("OMP_WAIT_POLICY");
  const char* blas_timeout = std::getenv("OPENBLAS_THREAD_TIMEOUT");
  log->event("start", {{"step", step},
                       {"max_steps", max_steps},
                       {"params", num_params},
                       {"flops_per_token", flops_per_token},
                       {"peak_flops", peak_flops},
                       {"threads", torch::get_num_threads()},
                       {"blas_threads", core::blas_num_threads()},
                       {"omp_wait_policy", omp_wait_policy ? omp_wait_policy : "default"},
                       {"openblas_thread_timeout", blas_timeout ? blas_timeout : "default"},
                       {"device", opt.device},
                       {"world_size", world},
                       {"build_ms", build_s * 1e3},
                       {"zero_stage", plan.zero_stage},
                       {"plan", plan.to_json()},
                       {"bytes_per_param",
                        {{"params", mem.param_bytes},
                         {"grads", mem.grad_bytes},
                         {"optimizer", mem.optimizer_bytes},
                         {"total", mem.total()}}}});
  spdlog::info(
      "model {}: {:.2f}M parameters, {:.1f} MFLOP/token; {} steps of {} tokens; GEMM peak "
      "{:.1f} GFLOP/s",
      mcfg.arch, num_params / 1e6, flops_per_token / 1e6, max_steps, int64_t(tokens_per_step),
      peak_flops / 1e9);
  if (world > 1)
    spdlog::info(
        "plan {}: {:.1f} bytes/parameter on this rank (params {:.1f}, grads {:.1f}, "
        "optimizer {:.1f})",
        plan.summary(), mem.total(), mem.param_bytes, mem.grad_bytes, mem.optimizer_bytes);
  return StepMetrics(flops_per_token, tokens_per_step, peak_flops, run.progress && rank == 0,
                     opt.log_interval);
}

bool Trainer::Impl::agree_to_stop() {
  double s = run.stop && run.stop->load() ? 1.0 : 0.0;
  if (world > 1) s = sum_over_ranks(s);
  return s > 0;
}

Result<std::optional<double>> Trainer::Impl::train_step(MicroBatchSource& source, double lr,
                                                        StepRecord* record) {
  CAIRN_ASSIGN_OR_RETURN(bool has_data, source.begin_step(step));
  if (!has_data) return std::optional<double>();
  engine->zero_grad();
  // --debug-slowdown stretches the forward and the backward pass alike.
  const bool slowed = rank == run.testing.debug_slowdown_rank && run.testing.debug_slowdown > 1;
  compute_s = 0;
  auto stretch = [&](Clock::time_point since) {
    if (slowed)
      std::this_thread::sleep_for(
          std::chrono::duration<double>(seconds_since(since) * (run.testing.debug_slowdown - 1)));
    compute_s += seconds_since(since);
  };
  double loss_sum = 0;
  int64_t trained = 0;  // micro-batches of this rank that are not padding
  CAIRN_ASSIGN_OR_RETURN(std::optional<MicroBatch> mb, source.next());
  if (engine->needs_whole_steps()) {  // a pipeline: the step's micro-batches go in together
    std::vector<MicroBatch> all;
    std::vector<parallel::Engine::MicroBatchInput> inputs;
    while (mb) {
      inputs.push_back({mb->x.to(device), mb->y.to(device), mb->multiply_by / mb->divide_by});
      all.push_back(std::move(*mb));
      CAIRN_ASSIGN_OR_RETURN(mb, source.next());
    }
    auto tm = Clock::now();
    std::vector<double> losses;
    {
      AutocastScope autocast(opt.precision == "bf16", device);
      losses = engine->forward_backward(inputs);
    }
    stretch(tm);
    for (size_t i = 0; i < all.size(); ++i)
      if (!all[i].padding) {
        loss_sum += losses[i];
        ++trained;
      }
  }
  while (mb) {
    auto tm = Clock::now();
    torch::Tensor loss;
    {
      AutocastScope autocast(opt.precision == "bf16", device);
      loss = engine->loss(mb->x.to(device), mb->y.to(device), mb->last.value_or(false));
    }
    stretch(tm);
    // The following micro-batch is asked for before this one's backward, which must know
    // whether it is this rank's last (after a failed fetch the step is abandoned: no
    // gradient sync the peers never match).
    Result<std::optional<MicroBatch>> following = source.next();
    if (!mb->last) engine->set_last(following.ok() && !*following);
    CAIRN_RETURN_IF_ERROR(following.status());
    tm = Clock::now();
    torch::Tensor weighted = loss;
    if (mb->divide_by != 1) weighted = weighted / mb->divide_by;
    if (mb->multiply_by != 1) weighted = weighted * mb->multiply_by;
    weighted.backward();
    if (!mb->padding) {
      loss_sum += loss.item<double>();
      ++trained;
    }
    stretch(tm);
    mb = std::move(following).value();
  }
  CAIRN_RETURN_IF_ERROR(source.end_step());
  engine->finish_backward();
  double loss = 0;
  if (opt.sharding == "dynamic") {
    // Each micro-batch was weighted 1 / num_micro(); at the end of the data a step may train
    // fewer: its loss and gradients are then the mean over those it trained.
    auto t = torch::tensor({loss_sum, double(trained)}, torch::kDouble);
    if (comm::Group* g = data_group()) g->allreduce(t);
    const double total = t[1].item<double>();
    loss = t[0].item<double>() / total;
    if (total < double(num_micro()))
      CAIRN_RETURN_IF_ERROR(engine->scale_gradients(double(num_micro()) / total));
  } else {
    loss = even_split() ? sum_over_data(loss_sum / double(accum_steps())) / data_world
                        : sum_over_data(loss_sum) / double(num_micro());
  }
  if (!std::isfinite(loss))
    return Status::FailedPrecondition("loss became " + std::to_string(loss) + " at step " +
                                      std::to_string(step) + "; lower train.lr");
  grad_norm = engine->clip_grad_norm(opt.grad_clip);
  // The previous step's memory save must be complete before the state changes.
  CAIRN_RETURN_IF_ERROR(finish_checkpoint());
  engine->step(lr);
  CAIRN_ASSIGN_OR_RETURN(*record, source.record());
  if (record->sample_ids && rank == 0) log->samples(step + 1, *record->sample_ids);
  return std::optional<double>(loss);
}

Status Trainer::Impl::after_step(double loss, double lr, double step_time, const StepRecord& record,
                                 int64_t stop_at, StepMetrics& metrics, RunSummary* sum) {
  nlohmann::json row = metrics.row(step, loss, lr, step_time);
  // Every rank's seconds of forward and backward, and the largest resident memory of any rank
  // so far (a job runs out of memory on its fullest rank), shared-memory checkpoint slots it
  // wrote included, and without them (mapped whole from the start: the planner budgets the
  // rest): one all-gather of three numbers per rank, both memories from one read of /proc.
  const core::PeakResident m = core::peak_and_shared_resident();
  auto mine = torch::tensor({m.peak / 1e6, compute_s, (m.peak - m.shared) / 1e6}, torch::kDouble);
  torch::Tensor all = mine;
  if (group) {
    all = torch::empty({3 * world}, torch::kDouble);
    group->allgather(all, mine);
  }
  // Read in place: (peak MB, seconds, peak MB less shared memory) per rank.
  const double* v = all.data_ptr<double>();
  double peak_mb = 0, own_mb = 0;
  std::vector<double> compute(size_t(all.numel() / 3));
  for (size_t r = 0; r < compute.size(); ++r) {
    peak_mb = std::max(peak_mb, v[3 * r]);
    compute[r] = std::round(v[3 * r + 1] * 1e4) / 1e4;
    own_mb = std::max(own_mb, v[3 * r + 2]);
  }
  row["mem_peak_mb"] = peak_mb;
  row["rank_compute_s"] = compute;
  row["grad_norm"] = grad_norm;
  for (const auto& [key, value] : engine->take_step_stats()) row[key] = value;
  if (!record.micro_batches_per_rank.empty()) row["micro_batches"] = record.micro_batches_per_rank;
  sum->losses.push_back(loss);
  sum->final_loss = loss;
  std::string extra;
  const bool last = step == stop_at;
  if ((opt.eval_interval > 0 && step % opt.eval_interval == 0) || last) {
    auto te = Clock::now();
    const double val = evaluate();
    engine->take_step_stats();  // validation's communication is not the next step's
    row["val_loss"] = val;
    sum->final_val_loss = val;
    log->event("eval",
               {{"step", step}, {"val_loss", val}, {"duration_ms", seconds_since(te) * 1e3}});
    char buf[64];
    std::snprintf(buf, sizeof(buf), "val %.4f", val);
    extra = buf;
  }
  log->metrics(row);
  if (progress) progress->report(step);  // evaluation is progress too
  metrics.show(step, max_steps, loss, lr, extra);
  // The last step of this invocation is persisted by finish_run.
  const bool persist = opt.persist_interval > 0 && step % opt.persist_interval == 0;
  const bool memory = opt.memory_interval > 0 && step % opt.memory_interval == 0;
  if (auto_plan) check_auto_plan(step_time, own_mb, last, !last && (persist || memory));
  if (!last && (persist || memory)) {
    Status s = checkpoint(persist, persist ? "interval" : "memory", /*overlap=*/true);
    if (!s.ok()) return s.WithContext("checkpoint at step " + std::to_string(step));
  } else if (!last) {
    Status s = between_saves();
    if (!s.ok()) return s.WithContext("deferred checkpoint at step " + std::to_string(step));
  }
  return Status::Ok();
}

Status Trainer::Impl::finish_run(RunSummary* sum, int64_t stop_at, bool data_over, double wall) {
  // Restored from memory but nothing trained (the run was already at or past the stop): the
  // restored state must reach storage before the slots go.
  const bool unsaved = step == sum->first_step && restored_from_memory &&
                       ckpt::newest_complete_step(ckpt_dir) < step;
  if (step == sum->first_step)
    spdlog::warn(
        "nothing to train: the run is at step {} and {} is {}", step,
        run.stop_after > 0 && run.stop_after < max_steps ? "--stop-after" : "train.max_steps",
        stop_at);
  // The end of this invocation (finished, --stop-after, or interrupted): persist and wait.
  if (step > sum->first_step || unsaved) {
    const char* reason = sum->interrupted                 ? "interrupted"
                         : step == max_steps || data_over ? "end"
                                                          : "stop";
    Status s = checkpoint(/*persist=*/true, reason, /*overlap=*/false);
    if (s.ok()) s = wait_persisted();
    if (!s.ok()) return s.WithContext("saving the checkpoint of step " + std::to_string(step));
    if (sum->interrupted) spdlog::info("interrupted: saved step {}; continue with --resume", step);
  }
  // A finished run needs its in-memory checkpoints no more (they are on storage by now).
  if (step >= max_steps) run.keep_slots = false;
  release_slots("end");
  sum->saved_step = ckpt::newest_complete_step(ckpt_dir);
  sum->last_step = step;
  const double tokens_per_step = double(opt.global_batch_size * opt.seq_len);
  sum->tokens_per_s = wall > 0 ? tokens_per_step * double(step - sum->first_step) / wall : 0;
  nlohmann::json end = {
      {"step", step}, {"reason", sum->interrupted ? "interrupted" : "completed"}, {"wall_s", wall}};
  // Only what was measured: no loss without a step, no validation loss without an evaluation.
  if (step > sum->first_step) {
    end["tokens_per_s"] = sum->tokens_per_s;
    end["final_loss"] = sum->final_loss;
  }
  if (sum->final_val_loss >= 0) end["final_val_loss"] = sum->final_val_loss;
  if (sum->saved_step >= 0) end["saved_step"] = sum->saved_step;
  log->event("end", end);
  return Status::Ok();
}

// batch, forward, backward, step, log.
Result<RunSummary> Trainer::run() {
  Impl& m = *impl_;
  const TrainOptions& o = m.opt;
  RunSummary sum;
  sum.first_step = m.step;
  sum.ckpt_dir = m.ckpt_dir;
  const int64_t decay = o.lr_decay_steps > 0 ? o.lr_decay_steps : m.max_steps;
  StepMetrics metrics = m.log_start();
  std::unique_ptr<MicroBatchSource> source =
      m.dynamic ? make_dynamic_batches(m) : make_deterministic_batches(m);
  const auto run_start = Clock::now();
  m.model->train();
  const int64_t stop_at =
      m.run.stop_after > 0 ? std::min(m.run.stop_after, m.max_steps) : m.max_steps;
  bool data_over = false;  // data.stream closed and consumed, or the last epoch used up
  while (m.step < stop_at) {
    if (m.agree_to_stop()) {  // every rank stops at the same step boundary
      sum.interrupted = true;
      break;
    }
    const auto t0 = Clock::now();
    const double lr = lr_at(m.step, o.lr, o.min_lr, o.warmup_steps, decay);
    StepRecord record;
    CAIRN_ASSIGN_OR_RETURN(std::optional<double> loss, m.train_step(*source, lr, &record));
    if (!loss) {
      data_over = true;
      break;
    }
    ++m.step;
    if (m.progress) m.progress->report(m.step);
    CAIRN_RETURN_IF_ERROR(
        m.after_step(*loss, lr, seconds_since(t0), record, stop_at, metrics, &sum));
  }
  metrics.finish();
  CAIRN_RETURN_IF_ERROR(m.finish_run(&sum, stop_at, data_over, seconds_since(run_start)));
  return sum;
}

}  // namespace cairn::train
