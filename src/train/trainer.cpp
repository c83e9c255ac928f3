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
#include "cairn/core/fs.h"
#include "cairn/data/local_sampler.h"
#include "cairn/data/token_file.h"
#include "cairn/elastic/flash_slots.h"
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
#include "train/trainer_impl.h"

namespace cairn::train {
namespace {

// bf16 autocast for the matmuls of one forward pass; fp32 master weights and optimizer.
class AutocastScope {
 public:
  explicit AutocastScope(bool on) : on_(on) {
    if (!on_) return;
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  }
  ~AutocastScope() {
    if (!on_) return;
    at::autocast::set_cpu_enabled(false);
    at::autocast::clear_cache();
  }

 private:
  bool on_;
};

// The GEMM peak of the newest `start` event in the run's events.jsonl at this world size, or 0.
double earlier_peak(const std::string& run_dir, int world) {
  std::ifstream f(run_dir + "/events.jsonl");
  double peak = 0;
  for (std::string line; std::getline(f, line);) {
    if (line.find("\"event\":\"start\"") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || j.value("world_size", -1) != world) continue;
    peak = j.value("peak_flops", 0.0);
  }
  return peak;
}

}  // namespace

double Trainer::Impl::sum_over_ranks(double v) {
  if (!group) return v;
  auto t = torch::tensor({v}, torch::kDouble);
  group->allreduce(t);
  return t.item<double>();
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
  if (group) {
    all = torch::empty({cap * world}, torch::kLong);
    group->allgather(all, mine);
  }
  // Back into the global order: rank r's k-th micro-batch is micro-batch k * world + r.
  const int64_t B = opt.micro_batch_size;
  std::vector<int64_t> ids(size_t(num_micro() * B), -1);
  const int64_t* v = all.data_ptr<int64_t>();
  for (int r = 0; r < world; ++r)
    for (int64_t i = 0; i < cap; ++i) {
      const int64_t j = (i / B) * world + r;
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
    int64_t g = s * opt.global_batch_size + (micro * world + rank) * B + i;
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
  for (int64_t i = rank; i < n; i += world) mine.push_back(i);
  double sum = 0;
  for (size_t start = 0; start < mine.size(); start += size_t(B)) {
    int64_t b = std::min<int64_t>(B, int64_t(mine.size() - start));
    auto x = torch::empty({b, T}, torch::kLong);
    auto y = torch::empty({b, T}, torch::kLong);
    for (int64_t i = 0; i < b; ++i)
      val_sampler->fill(mine[start + size_t(i)], x.data_ptr<int64_t>() + i * T,
                        y.data_ptr<int64_t>() + i * T);
    AutocastScope autocast(opt.precision == "bf16");
    sum += engine->eval_loss(x, y).item<double>() * double(b);
  }
  model->train();
  return sum_over_ranks(sum) / double(n);
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

Result<std::unique_ptr<Trainer>> Trainer::Create(const core::Config& config, RunOptions run) {
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->run = run;
  if (run.run_dir.empty()) return Status::InvalidArgument("a run directory is required");
  CAIRN_ASSIGN_OR_RETURN(impl->opt, train_options_from(config));
  CAIRN_ASSIGN_OR_RETURN(impl->mcfg, model::model_config_from(config));
  const TrainOptions& o = impl->opt;
  impl->max_steps = o.max_steps;
  impl->group = run.group;
  if (run.group) {
    impl->world = run.group->size();
    impl->rank = run.group->rank();
  }
  if (o.global_batch_size % o.micro_batch_size != 0)
    return Status::InvalidArgument("train.global_batch_size (" +
                                   std::to_string(o.global_batch_size) +
                                   ") must be a multiple of train.micro_batch_size (" +
                                   std::to_string(o.micro_batch_size) + ")");
  if (!impl->even_split() && o.sharding != "dynamic") {
    // An elastic job may be handed any world: train it, with the same global batch. (Dynamic
    // sharding splits a step unevenly anyway: its shards go to whichever rank asks.)
    const int64_t n = impl->num_micro(), per = impl->accum_steps();
    spdlog::warn(
        "{} micro-batches per step over {} ranks: each rank runs {}, and {} of them are "
        "zero-weight padding ({:.0f}% of the compute); a world size dividing {} trains "
        "faster",
        n, impl->world, per, per * impl->world - n,
        100.0 * double(per * impl->world - n) / double(per * impl->world), n);
  }
  // 0 keeps torch's default (OMP_NUM_THREADS, which `cairn run` sets per worker). GEMMs run
  // on OpenBLAS's own threads either way; extra OpenMP threads mostly contend with them.
  // train.threads bounds OpenBLAS's GEMM threads too, so that the cores a job uses are the
  // cores it says it uses (and its MFU is against the peak of those cores).
  if (o.threads > 0) {
    torch::set_num_threads(int(o.threads));
    core::set_blas_num_threads(int(o.threads));
  }

  for (auto [name, file] :
       {std::pair{"train.bin", &impl->train_file}, {"val.bin", &impl->val_file}}) {
    if (o.stream && file == &impl->train_file) continue;  // train.stream instead
    auto f = data::TokenFile::Open(o.data_path + "/" + name);
    if (!f.ok())
      return f.status().WithContext("data.path: run `cairn data prepare --out " + o.data_path +
                                    "` first");
    *file = std::move(f).value();
    if ((*file)->vocab_size() > impl->mcfg.vocab_size)
      return Status::InvalidArgument(o.data_path + "/" + name + " has vocabulary size " +
                                     std::to_string((*file)->vocab_size()) +
                                     ", larger than model.vocab_size " +
                                     std::to_string(impl->mcfg.vocab_size));
    if ((*file)->size() < o.seq_len + 1)
      return Status::InvalidArgument(o.data_path + "/" + name + " holds " +
                                     std::to_string((*file)->size()) +
                                     " tokens, fewer than one sequence of train.seq_len + 1");
  }
  if (o.stream) {
    // The writer may start at about the same time: give it a minute to create the stream.
    for (int i = 0;; ++i) {
      auto s = data::TokenStream::Open(o.data_path, int32_t(impl->mcfg.vocab_size));
      if (s.ok()) {
        impl->stream = std::move(s).value();
        break;
      }
      if (s.status().code() != StatusCode::kNotFound || i >= 600) return s.status();
      if (i == 0) spdlog::info("waiting for {}", s.status().message());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  } else {
    impl->sampler = std::make_unique<data::LocalSampler>(impl->train_file.get(), o.seq_len, o.seed);
  }
  impl->val_sampler = std::make_unique<data::LocalSampler>(impl->val_file.get(), o.seq_len, o.seed);

  // The global generator starts from a random seed in every process; seed it so that its
  // state (saved in checkpoints for stochastic layers) is a function of the config.
  {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(o.seed);
  }
  CAIRN_ASSIGN_OR_RETURN(impl->plan, plan_from(o, impl->mcfg, impl->world));
  if (o.sharding == "dynamic") {
    if (!impl->plan.allows_uneven_micro_batches())
      return Status::InvalidArgument(
          "data.sharding: dynamic needs parallel.zero_stage 0 or 1 and tp, cp and pp 1 (its "
          "ranks train different numbers of micro-batches per step); the plan is " +
          impl->plan.summary());
    DynamicDataOptions d;
    if (const char* m = std::getenv("CAIRN_MASTER_ADDR")) d.master = m;
    if (const char* t = std::getenv("CAIRN_JOB_TOKEN")) d.job_token = t;
    if (impl->stream) {
      d.dataset =
          "train.stream/T" + std::to_string(o.seq_len) + "/B" + std::to_string(o.micro_batch_size);
      d.stream = impl->stream.get();
      d.seq_len = o.seq_len;
    } else {
      d.dataset = "train.bin/" + std::to_string(impl->train_file->size()) + "-tokens/T" +
                  std::to_string(o.seq_len) + "/B" + std::to_string(o.micro_batch_size);
      d.num_samples = impl->sampler->num_samples();
    }
    d.micro_batch_size = o.micro_batch_size;
    d.global_batch_size = o.global_batch_size;
    d.max_steps = o.max_steps;
    d.seed = uint64_t(o.seed);
    d.rank = impl->rank;
    d.world = impl->world;
    CAIRN_ASSIGN_OR_RETURN(impl->dynamic, DynamicData::Open(d));
  }
  // Refuse a job that cannot fit before allocating it (libtorch would die mid-allocation).
  {
    MemoryEstimateInput mi;
    mi.model = impl->mcfg;
    mi.micro_batch_size = o.micro_batch_size;
    mi.seq_len = o.seq_len;
    mi.world = impl->world;
    mi.zero_stage = impl->plan.zero_stage;
    mi.activation_checkpointing = o.activation_checkpointing;
    const MemoryEstimate need = estimate_memory(mi);
    if (auto avail = available_memory_bytes(); avail.ok()) {
      CAIRN_RETURN_IF_ERROR(check_memory(need, run.local_ranks, *avail));
      spdlog::debug("memory estimate {:.0f} MB per rank, {:.0f} MB available", need.total() / 1e6,
                    double(*avail) / 1e6);
    }
  }
  // A resume usually loads every parameter: initialize only if nothing was restored (below).
  // ZeRO-3 shards the parameters when the engine is made, so it initializes first.
  const bool defer_init = run.resume && !impl->plan.shards_parameters();
  impl->model = defer_init ? model::build_model_uninitialized(impl->mcfg)
                           : model::build_model(impl->mcfg, o.seed);
  impl->num_params = impl->model->num_params();  // before ZeRO-3 releases the parameters
  {
    CAIRN_ASSIGN_OR_RETURN(auto mesh,
                           comm::Mesh::Create(impl->plan.mesh, impl->world, impl->plan.order));
    CAIRN_ASSIGN_OR_RETURN(auto groups, comm::MeshGroups::Create(impl->group, mesh));
    impl->groups = std::make_unique<comm::MeshGroups>(std::move(groups));
  }
  CAIRN_ASSIGN_OR_RETURN(impl->engine,
                         parallel::parallelize(impl->model, impl->plan, *impl->groups,
                                               {o.beta1, o.beta2, o.eps, o.weight_decay}));

  CAIRN_ASSIGN_OR_RETURN(impl->log, RunLog::Open(run.run_dir, /*writer=*/impl->rank == 0));
  if (impl->rank == 0)
    CAIRN_RETURN_IF_ERROR(core::write_file_atomic(run.run_dir + "/config.yaml", config.to_yaml()));

  {
    std::string dir = o.ckpt_dir.empty() ? run.run_dir + "/ckpt" : o.ckpt_dir;
    impl->ckpt_dir = std::filesystem::absolute(dir).lexically_normal().string();
    while (impl->ckpt_dir.size() > 1 && impl->ckpt_dir.back() == '/') impl->ckpt_dir.pop_back();
  }
  // The slots' owner removes them: the agent (our parent) when it persists for us, else we do.
  impl->flash = std::make_unique<FlashSlots>(
      run.run_dir, impl->rank, run.agent_persists ? int(::getppid()) : int(::getpid()));
  if (run.report_progress) {
    auto p = elastic::ProgressWriter::Open(run.run_dir, impl->rank);
    if (!p.ok()) return p.status().WithContext("progress report for the hang detector");
    impl->progress = std::move(p).value();
  }
  if (!run.agent_persists) {
    ckpt::SlotPersisterOptions po;
    po.slots[impl->rank] = impl->flash->names();
    po.on_event = [dir = run.run_dir](const std::string& event, const nlohmann::json& fields) {
      nlohmann::json j = fields;
      j["event"] = event;
      j["time"] = core::unix_time();
      (void)core::append_line(dir + "/events.jsonl", j.dump());
    };
    CAIRN_ASSIGN_OR_RETURN(impl->persister, ckpt::SlotPersister::Start(std::move(po)));
  }
  if (run.resume) {
    CAIRN_ASSIGN_OR_RETURN(bool from_memory, impl->restore_from_memory());
    if (from_memory) run.resume = false;  // storage is older or equal: nothing more to load
  }
  if (run.resume) {
    std::vector<std::string> skipped;
    auto c = ckpt::load_latest(impl->ckpt_dir, &skipped);
    for (auto& s : skipped) {
      spdlog::warn("skipping broken checkpoint: {}", s);
      impl->log->event("checkpoint_skipped", {{"reason", s}});
    }
    if (c.ok()) {
      CAIRN_RETURN_IF_ERROR(impl->restore(*c));
      impl->log->event("checkpoint_loaded", {{"step", c->step},
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
      return Status::Corrupt("--resume: every checkpoint in " + impl->ckpt_dir +
                             " is broken; move them away to start from step 0:" + why);
    } else if (run.start_if_nothing) {
      spdlog::info("no checkpoint in {}; starting from step 0", impl->ckpt_dir);
    } else {
      return Status::NotFound("--resume: nothing to resume: no checkpoint in shared memory or in " +
                              impl->ckpt_dir +
                              " (--resume-or-start starts from step 0 when there is none)");
    }
  }
  // Nothing restored: the same initialization build_model gives (parameters are views into
  // the engine's buckets, so this initializes them in place, identically on every rank).
  if (defer_init && !impl->restored) model::init_parameters(*impl->model, impl->mcfg, o.seed);
  // The shard service goes back to what the restored checkpoint saw (or to the start).
  if (impl->dynamic)
    CAIRN_RETURN_IF_ERROR(impl->dynamic->restore(impl->restored_shards, impl->group));
  // The job's peak: every rank measures at once, sharing the machine as training will.
  // A restarted group takes the peak an earlier start of this run measured (0.5 s saved on
  // the way back from a failure); the job's world is the same machines when it matches.
  if (run.measure_peak) {
    double earlier = run.reuse_peak ? earlier_peak(run.run_dir, impl->world) : 0;
    // Collective either way: every rank must know an earlier peak, or all measure.
    if (impl->sum_over_ranks(earlier > 0 ? 1.0 : 0.0) == double(impl->world))
      impl->peak_flops = earlier;
    else
      impl->peak_flops = impl->sum_over_ranks(measure_gemm_flops());
  }
  return std::unique_ptr<Trainer>(new Trainer(std::move(impl)));
}

Result<RunSummary> Trainer::run() {
  Impl& m = *impl_;
  const TrainOptions& o = m.opt;
  RunSummary sum;
  sum.first_step = m.step;
  sum.ckpt_dir = m.ckpt_dir;
  const int64_t decay = o.lr_decay_steps > 0 ? o.lr_decay_steps : m.max_steps;
  const double flops_per_token = m.model->flops_per_token(o.seq_len);
  const double tokens_per_step = double(o.global_batch_size * o.seq_len);
  const parallel::MemoryReport mem = m.engine->memory_report();
  m.log->event("start", {{"step", m.step},
                         {"max_steps", m.max_steps},
                         {"params", m.num_params},
                         {"flops_per_token", flops_per_token},
                         {"peak_flops", m.peak_flops},
                         {"threads", torch::get_num_threads()},
                         {"blas_threads", core::blas_num_threads()},
                         {"world_size", m.world},
                         {"zero_stage", m.plan.zero_stage},
                         {"plan", m.plan.to_json()},
                         {"bytes_per_param",
                          {{"params", mem.param_bytes},
                           {"grads", mem.grad_bytes},
                           {"optimizer", mem.optimizer_bytes},
                           {"total", mem.total()}}}});
  spdlog::info(
      "model {}: {:.2f}M parameters, {:.1f} MFLOP/token; {} steps of {} tokens; GEMM peak "
      "{:.1f} GFLOP/s",
      m.mcfg.arch, m.num_params / 1e6, flops_per_token / 1e6, m.max_steps, int64_t(tokens_per_step),
      m.peak_flops / 1e9);
  if (m.world > 1)
    spdlog::info(
        "plan {}: {:.1f} bytes/parameter on this rank (params {:.1f}, grads {:.1f}, "
        "optimizer {:.1f})",
        m.plan.summary(), mem.total(), mem.param_bytes, mem.grad_bytes, mem.optimizer_bytes);
  ui::ProgressLine progress(ui::ProgressLine::stderr_is_tty(), o.log_interval);
  auto run_start = Clock::now();
  double ema_tps = 0, ema_step = 0;
  m.model->train();
  const int64_t stop_at =
      m.run.stop_after > 0 ? std::min(m.run.stop_after, m.max_steps) : m.max_steps;
  bool stream_over = false;  // data.stream: closed and consumed
  while (m.step < stop_at) {
    // Every rank must agree to stop at the same step boundary.
    double stop = m.run.stop && m.run.stop->load() ? 1.0 : 0.0;
    if (m.world > 1) stop = m.sum_over_ranks(stop);
    if (stop > 0) {
      sum.interrupted = true;
      break;
    }
    auto t0 = Clock::now();
    const double lr = lr_at(m.step, o.lr, o.min_lr, o.warmup_steps, decay);
    m.engine->zero_grad();
    double loss_sum = 0;
    const int64_t accum = m.accum_steps();
    std::vector<elastic::Shard> trained;  // dynamic sharding: this rank's micro-batches
    // One micro-batch; `before_backward` (dynamic sharding) may still change whether it is the
    // step's last on this rank.
    // `padding`: a zero-weight micro-batch of a rank left short by an uneven split.
    auto micro_batch = [&](const torch::Tensor& x, const torch::Tensor& y, bool last,
                           const std::function<void()>& before_backward, bool padding = false) {
      // --debug-slowdown stretches the forward and the backward pass alike.
      const bool slowed = m.rank == m.run.debug_slowdown_rank && m.run.debug_slowdown > 1;
      auto stretch = [&](Clock::time_point since) {
        if (slowed)
          std::this_thread::sleep_for(
              std::chrono::duration<double>(seconds_since(since) * (m.run.debug_slowdown - 1)));
      };
      auto tm = Clock::now();
      torch::Tensor loss;
      {
        AutocastScope autocast(o.precision == "bf16");
        loss = m.engine->loss(x, y, last);
      }
      stretch(tm);
      if (before_backward) before_backward();
      tm = Clock::now();
      if (padding)
        (loss * 0.0).backward();
      else if (m.even_split())
        (accum > 1 ? loss / double(accum) : loss).backward();
      else  // averaged over the world below, so each of the num_micro() counts 1/num_micro()
        (loss * (double(m.world) / double(m.num_micro()))).backward();
      if (!padding) loss_sum += loss.item<double>();
      stretch(tm);
    };
    if (m.dynamic) {
      // Take micro-batches until the step has none left for this rank. The next one is asked
      // for after the current one's forward pass (the later a rank asks, the fairer the split)
      // and before its backward, which must know whether it is this rank's last.
      CAIRN_ASSIGN_OR_RETURN(auto cur, m.dynamic->next(m.step + 1));
      {
        // The end of the data (a closed stream, the last epoch): the ranks agree; none has a
        // micro-batch left → the job ends here; some have → the others take part without.
        const double have = m.sum_over_ranks(cur ? 1.0 : 0.0);
        if (have == 0) {
          spdlog::info("the data is used up (every sample of {} trained): stopping at step {}",
                       m.stream ? "the closed stream" : "the last epoch", m.step);
          m.log->event("data_end", {{"step", m.step}});
          stream_over = true;
          break;
        }
        if (!cur) {
          // No samples: a synced backward of weight 0, so the gradient all-reduce matches.
          auto x = torch::zeros({1, o.seq_len}, torch::kLong);
          torch::Tensor loss;
          {
            AutocastScope autocast(o.precision == "bf16");
            loss = m.engine->loss(x, x, /*last=*/true);
          }
          (loss * 0.0).backward();
        }
      }
      Status fetch = Status::Ok();
      while (cur) {
        std::optional<elastic::Shard> following;
        auto [x, y] = m.shard_batch(*cur);
        micro_batch(x, y, /*last=*/false, [&] {
          auto f = m.dynamic->next(m.step + 1);
          if (!f.ok()) fetch = f.status();
          following = f.ok() ? *f : std::nullopt;
          // After a failed fetch the step is abandoned: no gradient sync the peers never match.
          m.engine->set_last(f.ok() && !following);
        });
        CAIRN_RETURN_IF_ERROR(fetch);
        trained.push_back(*cur);
        cur = following;
      }
      // Before the step's first blocking collective: rank 0 snapshots the service only after
      // every rank's completions of this step are in.
      CAIRN_RETURN_IF_ERROR(m.dynamic->complete(trained, m.step + 1));
    } else {
      for (int64_t micro = 0; micro < accum; ++micro) {
        const bool padding = micro * m.world + m.rank >= m.num_micro();
        auto [x, y] = m.batch(m.step, padding ? 0 : micro, /*record=*/!padding);
        micro_batch(x, y, micro == accum - 1, nullptr, padding);
      }
    }
    m.engine->finish_backward();
    double loss = m.even_split() ? m.sum_over_ranks(loss_sum / double(accum)) / double(m.world)
                                 : m.sum_over_ranks(loss_sum) / double(m.num_micro());
    if (!std::isfinite(loss))
      return Status::FailedPrecondition("loss became " + std::to_string(loss) + " at step " +
                                        std::to_string(m.step) + "; lower train.lr");
    m.engine->clip_grad_norm(o.grad_clip);
    // The previous step's memory save must be complete before the state changes.
    if (Status s = m.finish_checkpoint(); !s.ok()) return s;
    m.engine->step(lr);
    std::vector<int64_t> per_rank;  // dynamic: micro-batches each rank trained this step
    if (m.dynamic) {
      CAIRN_ASSIGN_OR_RETURN(auto gathered, m.gather_trained(trained));
      per_rank = gathered.first;
      if (o.log_sample_ids && m.rank == 0) m.log->samples(m.step + 1, gathered.second);
    } else if (o.log_sample_ids) {
      // Deterministic sharding: the ids every rank filled its micro-batches with, gathered.
      std::vector<int64_t> ids = m.gather_consumed();
      if (m.rank == 0) m.log->samples(m.step + 1, ids);
    }
    ++m.step;
    if (m.progress) m.progress->report(m.step);
    double dt = seconds_since(t0);
    double tps = tokens_per_step / dt;
    ema_tps = ema_tps == 0 ? tps : 0.9 * ema_tps + 0.1 * tps;
    ema_step = ema_step == 0 ? dt : 0.9 * ema_step + 0.1 * dt;
    double mfu = m.peak_flops > 0 ? flops_per_token * tps / m.peak_flops : 0;
    nlohmann::json row = {{"step", m.step},      {"loss", loss}, {"lr", lr},
                          {"tokens_per_s", tps}, {"mfu", mfu},   {"step_time", dt}};
    if (!per_rank.empty()) row["micro_batches"] = per_rank;
    sum.losses.push_back(loss);
    sum.final_loss = loss;

    std::string extra;
    bool last = m.step == stop_at;
    if ((o.eval_interval > 0 && m.step % o.eval_interval == 0) || last) {
      auto te = Clock::now();
      double val = m.evaluate();
      row["val_loss"] = val;
      sum.final_val_loss = val;
      m.log->event("eval",
                   {{"step", m.step}, {"val_loss", val}, {"duration_ms", seconds_since(te) * 1e3}});
      char buf[64];
      std::snprintf(buf, sizeof(buf), "val %.4f", val);
      extra = buf;
    }
    m.log->metrics(row);
    if (m.progress) m.progress->report(m.step);  // evaluation is progress too
    if (m.run.progress && m.rank == 0) {
      double mfu_ema = m.peak_flops > 0 ? flops_per_token * ema_tps / m.peak_flops : 0;
      progress.update({m.step, m.max_steps, loss, lr, ema_tps, mfu_ema,
                       ema_step * double(m.max_steps - m.step), extra});
    }
    // The last step of this invocation is persisted below, after the loop.
    const bool persist = o.persist_interval > 0 && m.step % o.persist_interval == 0;
    const bool memory = o.memory_interval > 0 && m.step % o.memory_interval == 0;
    if (!last && (persist || memory)) {
      Status s = m.checkpoint(persist, persist ? "interval" : "memory", /*overlap=*/true);
      if (!s.ok()) return s.WithContext("checkpoint at step " + std::to_string(m.step));
    }
  }
  progress.finish();
  // Restored from memory but nothing trained (the run was already at or past the stop): the
  // restored state must reach storage before the slots go.
  const bool unsaved = m.step == sum.first_step && m.restored_from_memory &&
                       ckpt::newest_complete_step(m.ckpt_dir) < m.step;
  if (m.step == sum.first_step)
    spdlog::warn(
        "nothing to train: the run is at step {} and {} is {}", m.step,
        m.run.stop_after > 0 && m.run.stop_after < m.max_steps ? "--stop-after" : "train.max_steps",
        stop_at);
  // The end of this invocation (finished, --stop-after, or interrupted): persist and wait.
  if (m.step > sum.first_step || unsaved) {
    const char* reason = sum.interrupted                        ? "interrupted"
                         : m.step == m.max_steps || stream_over ? "end"
                                                                : "stop";
    Status s = m.checkpoint(/*persist=*/true, reason, /*overlap=*/false);
    if (s.ok()) s = m.wait_persisted();
    if (!s.ok()) return s.WithContext("saving the checkpoint of step " + std::to_string(m.step));
    if (sum.interrupted) spdlog::info("interrupted: saved step {}; continue with --resume", m.step);
  }
  // A finished run needs its in-memory checkpoints no more (they are on storage by now).
  if (m.step >= m.max_steps) m.run.keep_slots = false;
  m.release_slots("end");
  sum.saved_step = ckpt::newest_complete_step(m.ckpt_dir);
  double wall = seconds_since(run_start);
  sum.last_step = m.step;
  sum.tokens_per_s = wall > 0 ? tokens_per_step * double(m.step - sum.first_step) / wall : 0;
  nlohmann::json end = {{"step", m.step},
                        {"reason", sum.interrupted ? "interrupted" : "completed"},
                        {"wall_s", wall}};
  // Only what was measured: no loss without a step, no validation loss without an evaluation.
  if (m.step > sum.first_step) {
    end["tokens_per_s"] = sum.tokens_per_s;
    end["final_loss"] = sum.final_loss;
  }
  if (sum.final_val_loss >= 0) end["final_val_loss"] = sum.final_val_loss;
  if (sum.saved_step >= 0) end["saved_step"] = sum.saved_step;
  m.log->event("end", end);
  return sum;
}

}  // namespace cairn::train
