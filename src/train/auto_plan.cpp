// parallel.plan=auto (auto_plan.h).
#include "cairn/train/auto_plan.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "cairn/comm/group.h"
#include "cairn/core/block_cache.h"
#include "cairn/core/fs.h"
#include "cairn/core/malloc_tuning.h"
#include "cairn/core/median.h"
#include "cairn/core/proc.h"
#include "cairn/planner/planner.h"
#include "cairn/planner/profile.h"

namespace cairn::train {
namespace {

using Clock = std::chrono::steady_clock;

// Of the layouts predicted within 5% of the fastest, the simplest: the step-time predictions'
// median error is about that (bench/planner.py), and model-parallel engines' overheads beyond
// their collectives are what the cost model misses.
constexpr double kPreferSimpler = 0.05;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == 0) return "localhost";
  std::string s(buf);
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') c = '_';
  return s;
}

// Rank 0's text on every rank.
std::string broadcast_text(comm::Group& g, std::string text) {
  auto n = torch::tensor({int64_t(text.size())}, torch::kLong);
  g.broadcast(n, 0);
  auto bytes = torch::zeros({n.item<int64_t>()}, torch::kByte);
  if (g.rank() == 0 && !text.empty()) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  if (bytes.numel() > 0) g.broadcast(bytes, 0);
  return std::string(static_cast<const char*>(bytes.data_ptr()), size_t(bytes.numel()));
}

// This machine's profile for `ranks` ranks: the cached one, else measured now and cached.
Result<planner::Cluster> machine_profile(const AutoPlanOptions& a, int ranks, AutoPlan* out) {
  out->profile_path = profile_cache_path(a.cache_dir, ranks);
  if (std::filesystem::exists(out->profile_path)) {
    auto c = planner::load_cluster(out->profile_path);
    if (c.ok()) return c;
    // A cache is only a cache: a broken or outdated one is measured again and replaced.
    spdlog::warn("{}; profiling the machine again", c.status().ToString());
  }
  spdlog::info("parallel.plan=auto: no profile of this machine for {} ranks in {}: measuring it",
               ranks, a.cache_dir);
  const auto start = Clock::now();
  CAIRN_ASSIGN_OR_RETURN(planner::HardwareProfile p,
                         planner::profile_hardware(ranks, a.profile_seconds));
  const std::string text =
      planner::profile_to_cluster(p, host_name() + ", " + std::to_string(ranks) + " ranks", 0.5)
          .dump(1) +
      "\n";
  CAIRN_ASSIGN_OR_RETURN(planner::Cluster c, planner::cluster_from_json(text, "the profile"));
  CAIRN_RETURN_IF_ERROR(core::make_dirs(a.cache_dir));
  CAIRN_RETURN_IF_ERROR(core::write_file_atomic(out->profile_path, text));
  out->profile_s = since(start);
  return c;
}

// This model's profile for `ranks` ranks: the cached one, else measured now and cached.
Result<planner::MeasuredModel> model_profile(const AutoPlanOptions& a, const TrainOptions& o,
                                             const model::ModelConfig& m, int ranks,
                                             AutoPlan* out) {
  out->model_profile_path = a.cache_dir + "/model-" + m.arch + "-d" + std::to_string(m.n_embd) +
                            "-h" + std::to_string(m.n_head) + "-kv" + std::to_string(m.kv_heads()) +
                            "-v" + std::to_string(m.vocab_size) + "-t" +
                            std::to_string(m.block_size) + "-" + host_name() + "-" +
                            std::to_string(ranks) + "ranks.json";
  if (std::filesystem::exists(out->model_profile_path)) {
    auto mm = planner::load_model_profile(out->model_profile_path, m);
    if (mm.ok()) return mm;
    spdlog::warn("{}; profiling the model again", mm.status().ToString());
  }
  const auto start = Clock::now();
  std::vector<int64_t> batches;
  for (int64_t b : {int64_t(1), std::max<int64_t>(1, o.micro_batch_size / 2), o.micro_batch_size})
    if (std::find(batches.begin(), batches.end(), b) == batches.end()) batches.push_back(b);
  CAIRN_ASSIGN_OR_RETURN(
      planner::ModelProfile p,
      planner::profile_model(m, ranks, batches, {std::max<int64_t>(1, o.seq_len / 2), o.seq_len},
                             a.profile_seconds / 2));
  CAIRN_RETURN_IF_ERROR(core::make_dirs(a.cache_dir));
  CAIRN_RETURN_IF_ERROR(core::write_file_atomic(
      out->model_profile_path, planner::model_profile_to_json(p, m).dump(1) + "\n"));
  out->profile_s += since(start);
  return p.fit;
}

// Rank 0's decision, as JSON ({"error": ...} when there is none).
Result<AutoPlan> decide(const TrainOptions& o, const model::ModelConfig& m, int world,
                        const AutoPlanOptions& a) {
  AutoPlan out;
  CAIRN_ASSIGN_OR_RETURN(planner::Cluster cluster,
                         machine_profile(a, std::max(2, a.local_ranks), &out));
  // The job's machines: like this one, local_ranks devices each.
  cluster.devices_per_node = std::max(1, a.local_ranks);
  cluster.nodes = (world + cluster.devices_per_node - 1) / cluster.devices_per_node;
  planner::Workload w{m, o.seq_len, o.global_batch_size, std::nullopt};
  CAIRN_ASSIGN_OR_RETURN(w.measured, model_profile(a, o, m, std::max(2, a.local_ranks), &out));
  planner::SearchOptions so;
  so.world = world;
  so.top = 1;
  so.micro_batch = o.micro_batch_size;  // the data order (and the checkpoints) depend on it
  so.prefer_simpler = kPreferSimpler;
  const auto start = Clock::now();
  auto r = planner::search(w, cluster, so);
  out.search_s = since(start);
  if (!r.ok())
    return r.status().WithContext("parallel.plan=auto (" + cluster.name + ", profile " +
                                  out.profile_path + ")");
  const planner::Planned& best = r->best.front();
  out.plan = best.candidate.plan;
  out.plan.bucket_bytes = o.bucket_mb << 20;
  out.step_s = best.cost.step_s();
  out.memory_bytes = best.cost.memory_bytes();
  out.bottleneck = best.cost.bottleneck();
  out.evaluated = r->evaluated;
  if (Status s = plan_fits_job(o, m, world, out.plan); !s.ok())
    return s.WithContext("parallel.plan=auto chose " + out.plan.summary());
  if (!a.picture_path.empty()) {  // each stage's predicted time and memory
    std::vector<planner::Cost> stages;
    planner::estimate_stages(w, cluster, best.candidate, &stages);
    const std::string svg = planner::plan_svg(
        best.candidate, stages, cluster.memory_bytes,
        "parallel.plan=auto on " + std::to_string(world) + " ranks of " + cluster.name);
    Status s = core::make_dirs(std::filesystem::path(a.picture_path).parent_path().string());
    if (s.ok()) s = core::write_file_atomic(a.picture_path, svg);
    if (!s.ok()) spdlog::warn("parallel.plan=auto: the plan's picture: {}", s.ToString());
  }
  return out;
}

Result<AutoPlan> from_json(const nlohmann::json& j, const model::ModelConfig& m) {
  AutoPlan a;
  CAIRN_ASSIGN_OR_RETURN(a.plan, parallel::Plan::from_json(j.at("plan"), m.n_layer));
  a.step_s = j.at("step_s").get<double>();
  a.memory_bytes = j.at("memory_bytes").get<double>();
  a.bottleneck = j.at("bottleneck").get<std::string>();
  a.evaluated = j.at("evaluated").get<int64_t>();
  a.search_s = j.at("search_s").get<double>();
  a.profile_s = j.at("profile_s").get<double>();
  a.profile_path = j.at("profile").get<std::string>();
  a.model_profile_path = j.at("model_profile").get<std::string>();
  return a;
}

}  // namespace

nlohmann::json AutoPlan::to_json() const {
  return {{"plan", plan.to_json()},   {"summary", plan.summary()},
          {"step_s", step_s},         {"memory_bytes", memory_bytes},
          {"bottleneck", bottleneck}, {"evaluated", evaluated},
          {"search_s", search_s},     {"profile_s", profile_s},
          {"profile", profile_path},  {"model_profile", model_profile_path}};
}

nlohmann::json PlanCheck::to_json() const {
  return {{"first_step", first_step},
          {"last_step", last_step},
          {"step_s", step_s},
          {"predicted_step_s", predicted_step_s},
          {"step_error", step_error()},
          {"memory_bytes", memory_bytes},
          {"predicted_memory_bytes", predicted_memory_bytes},
          {"memory_error", memory_error()}};
}

std::optional<PlanCheck> check_plan(const AutoPlan& plan, const std::vector<double>& step_s,
                                    int64_t first_step, double peak_bytes, bool last) {
  if (!(plan.step_s > 0 && plan.memory_bytes > 0 && peak_bytes > 0)) return std::nullopt;
  const int64_t timed = int64_t(step_s.size()) - kPlanCheckWarmup;
  if (timed < (last ? kPlanCheckLeast : kPlanCheckSteps)) return std::nullopt;
  PlanCheck c;
  c.first_step = first_step + kPlanCheckWarmup;
  c.last_step = first_step + int64_t(step_s.size()) - 1;
  c.step_s = core::median({step_s.begin() + kPlanCheckWarmup, step_s.end()});
  c.predicted_step_s = plan.step_s;
  c.memory_bytes = peak_bytes;
  c.predicted_memory_bytes = plan.memory_bytes;
  return c;
}

std::string default_cache_dir() {
  if (const char* d = std::getenv("CAIRN_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::string(d) + "/cairn";
  if (const char* d = std::getenv("HOME"); d && *d) return std::string(d) + "/.cache/cairn";
  return "/tmp/cairn-cache";
}

std::string profile_cache_path(const std::string& cache_dir, int local_ranks) {
  return cache_dir + "/hw-" + host_name() + "-" + std::to_string(local_ranks) + "ranks.json";
}

Result<AutoPlan> auto_plan(const TrainOptions& o, const model::ModelConfig& m, comm::Group* group,
                           const AutoPlanOptions& a) {
  CAIRN_RETURN_IF_ERROR(layout_keys_unset(o, "parallel.plan=auto"));
  const int world = group ? group->size() : 1;
  if (world == 1) {  // nothing to split: the whole model on the one rank
    AutoPlan one;
    one.plan = parallel::Plan::data_parallel(1, m.n_layer, 0);
    one.plan.bucket_bytes = o.bucket_mb << 20;
    CAIRN_RETURN_IF_ERROR(plan_fits_job(o, m, 1, one.plan));
    return one;
  }
  std::string text;
  if (group->rank() == 0) {
    auto d = decide(o, m, world, a);
    // The profile's tensors are gone: their kept blocks and heap go back to the kernel, and
    // the job's peak memory is its own from here.
    if (d.ok() && d->profile_s > 0) {
      core::process_block_cache().release_free();
      core::process_block_cache().reset_peaks();
      core::return_free_heap();
      if (!core::reset_peak_resident())
        spdlog::warn(
            "parallel.plan=auto: the peak memory could not be reset after profiling: "
            "rank 0's mem_peak_mb includes the profile's");
    }
    text = (d.ok() ? d->to_json() : nlohmann::json{{"error", d.status().ToString()}}).dump();
  }
  text = broadcast_text(*group, text);
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::Internal("parallel.plan=auto: rank 0's plan is unreadable");
  if (j.contains("error")) return Status::InvalidArgument(j.at("error").get<std::string>());
  try {
    return from_json(j, m);
  } catch (const nlohmann::json::exception& e) {
    return Status::Internal(std::string("parallel.plan=auto: rank 0's plan: ") + e.what());
  }
}

}  // namespace cairn::train
