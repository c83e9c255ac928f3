// `cairn train`: train a model from a YAML config in one process.
#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <filesystem>

#include "cairn/comm/group.h"
#include "cairn/core/block_cache.h"
#include "cairn/core/config.h"
#include "cairn/core/fs.h"
#include "cairn/core/log.h"
#include "cairn/core/proc.h"
#include "cairn/elastic/flash_slots.h"
#include "cairn/model/block_cache_allocator.h"
#include "cairn/train/options.h"
#include "cairn/train/trainer.h"
#include "commands.h"
#include "orphans_at_start.h"
#include "torch_commands.h"

namespace cairn::cli {
namespace {

std::atomic<bool> g_stop{false};
std::atomic<int> g_signal{0};

void on_signal(int sig) {
  g_signal.store(sig);
  g_stop.store(true);
  std::signal(sig, SIG_DFL);  // a second signal ends the process at once
}

// Rank and world from torchrun's environment (set by `cairn run`); 0 and 1 otherwise.
int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

std::string default_run_dir() {
  if (const char* d = std::getenv("CAIRN_RUN_DIR"); d && *d) return d;
  char buf[64];
  std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof(buf), "runs/%Y%m%d-%H%M%S", std::localtime(&t));
  return buf;
}

// Removes a directory this command created when the command fails before training starts.
class RemoveOnFailure {
 public:
  explicit RemoveOnFailure(std::string dir) : dir_(std::move(dir)) {}
  ~RemoveOnFailure() {
    if (dir_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  void dismiss() { dir_.clear(); }

 private:
  std::string dir_;
};

// "done: step 24, loss 5.1234, val loss 5.2345, 1287 tokens/s; checkpoint of step 24 in DIR",
// naming only what this invocation measured and wrote.
std::string done_line(const train::RunSummary& s) {
  std::string line = "done: step " + std::to_string(s.last_step);
  char buf[96];
  if (s.last_step > s.first_step) {
    std::snprintf(buf, sizeof(buf), ", loss %.4f", s.final_loss);
    line += buf;
    if (s.final_val_loss >= 0) {
      std::snprintf(buf, sizeof(buf), ", val loss %.4f", s.final_val_loss);
      line += buf;
    }
    std::snprintf(buf, sizeof(buf), ", %.0f tokens/s", s.tokens_per_s);
    line += buf;
  } else {
    line += " (no step trained)";
  }
  if (s.saved_step >= 0)
    line += "; checkpoint of step " + std::to_string(s.saved_step) + " in " + s.ckpt_dir;
  else
    line += "; no checkpoint written";
  return line;
}

// The block cache hands its large blocks back at each step's peak and maps them again, cheaply
// in transparent huge pages; without them each is faulted in 4 KiB at a time (block_cache.h).
void warn_without_huge_pages() {
  const std::string mode = core::transparent_hugepage_mode();
  if (mode == "always" || mode == "madvise") return;
  spdlog::warn(
      "transparent huge pages are {} on this machine (/sys/kernel/mm/transparent_hugepage/"
      "enabled): the block cache faults its large tensors in 4 KiB at a time, which made the "
      "demo's steps 1.5-1.6 s instead of 1.0 s on a 2-core machine, and the planner's step "
      "times assume huge pages; as root, `echo madvise > "
      "/sys/kernel/mm/transparent_hugepage/enabled` lets cairn ask for them",
      mode.empty() ? "not available" : "off (never)");
}

void run_train(const TrainArgs& a) {
  if (a.config.empty()) throw StatusError(Status::InvalidArgument("a CONFIG file is required"));
  const std::string allocator = model::use_training_allocator();  // before the first tensor
  std::vector<std::string> overrides = a.overrides;
  if (a.max_steps > 0) overrides.push_back("train.max_steps=" + std::to_string(a.max_steps));
  if (!a.plan.empty()) overrides.push_back("parallel.plan=" + a.plan);
  auto config = core::load_config_file(a.config, train::job_spec(), overrides);
  if (!config.ok()) throw StatusError(config.status());
  const bool resume = a.resume || a.resume_or_start;
  if (a.resume && a.resume_or_start)
    throw StatusError(Status::InvalidArgument("give --resume or --resume-or-start, not both"));
  if (resume && a.run_dir.empty() && !std::getenv("CAIRN_RUN_DIR"))
    throw StatusError(
        Status::InvalidArgument(std::string(a.resume ? "--resume" : "--resume-or-start") +
                                " needs --run-dir naming the run to continue"));
  const int world = env_int("WORLD_SIZE", 1), rank = env_int("RANK", 0);
  if (world > 1 && a.run_dir.empty() && !std::getenv("CAIRN_RUN_DIR"))
    throw StatusError(Status::InvalidArgument(
        "with WORLD_SIZE > 1 every rank needs the same --run-dir (cairn run sets CAIRN_RUN_DIR)"));
  train::RunOptions run;
  run.run_dir = a.run_dir.empty() ? default_run_dir() : a.run_dir;
  run.local_ranks = env_int("LOCAL_WORLD_SIZE", 1);
  run.plan_cache_dir = a.plan_cache;
  run.resume = resume;
  run.start_if_nothing = a.resume_or_start;
  std::error_code ec;
  const bool dir_existed = std::filesystem::exists(run.run_dir, ec);
  if (dir_existed && !std::filesystem::is_directory(run.run_dir, ec))
    throw StatusError(Status::InvalidArgument("--run-dir " + run.run_dir + " is not a directory"));
  if (a.resume && !dir_existed)
    throw StatusError(
        Status::NotFound("--resume: run directory " + run.run_dir +
                         " does not exist (--resume-or-start starts a new run there)"));
  run.stop_after = a.stop_after;
  if (!a.debug_slowdown.empty()) {
    const size_t colon = a.debug_slowdown.find(':');
    char* end = nullptr;
    const long r =
        colon == std::string::npos ? -1 : std::strtol(a.debug_slowdown.c_str(), &end, 10);
    const double f =
        colon == std::string::npos ? 0 : std::strtod(a.debug_slowdown.c_str() + colon + 1, nullptr);
    if (r < 0 || end != a.debug_slowdown.c_str() + colon || !(f >= 1) || f > 1000)
      throw StatusError(
          Status::InvalidArgument("--debug-slowdown '" + a.debug_slowdown +
                                  "': expected RANK:FACTOR, e.g. 1:3 (1 <= FACTOR <= 1000)"));
    run.testing.debug_slowdown_rank = int(r);
    run.testing.debug_slowdown = f;
  }
  run.stop = &g_stop;
  run.progress = !a.no_progress;
  // `cairn run` persists the slots of workers whose run directory is its own.
  if (const char* d = std::getenv("CAIRN_AGENT_PERSISTS"); d && *d)
    run.agent_persists =
        elastic::flash_slot_name(d, 0, 0) == elastic::flash_slot_name(run.run_dir, 0, 0);
  run.keep_slots = run.agent_persists;
  run.report_progress = run.agent_persists;  // the agent watches for hangs
  run.reuse_peak = env_int("TORCHELASTIC_RESTART_COUNT", 0) >
                   0;  // the agent restarts workers from them, then removes them
  if (Status s = core::make_dirs(run.run_dir); !s.ok()) throw StatusError(s);
  // A run that fails before its first step leaves no directory it created behind.
  RemoveOnFailure cleanup(dir_existed || rank != 0 ? "" : run.run_dir);
  core::init_logging(
      {spdlog::level::to_string_view(spdlog::get_level()).data(),
       run.run_dir + (rank == 0 ? "/train.log" : "/train-rank" + std::to_string(rank) + ".log"),
       ""});
  spdlog::info("run directory {}", run.run_dir);
  spdlog::debug("{}", allocator);
  // Once a node: the setting is its kernel's.
  if (model::block_cache_allocator_installed() && env_int("LOCAL_RANK", 0) == 0)
    warn_without_huge_pages();
  std::unique_ptr<comm::Group> group;
  if (world > 1) {
    comm::GroupOptions go;  // CUDA tensors over NCCL where libtorch has it (train.device)
    go.cuda = config->get_string("train.device").rfind("cuda", 0) == 0;
    auto g = comm::Group::FromEnv(go);
    if (!g.ok()) throw StatusError(g.status());
    group = std::move(g).value();
    run.group = group.get();
    spdlog::info("rank {} of {}: process group ready", rank, world);
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGUSR1, on_signal);  // a scheduler's notice (Slurm's --signal): checkpoint, stop
  collect_orphans_at_start(run.run_dir);
  auto trainer = train::Trainer::Create(*config, run);
  if (!trainer.ok()) throw StatusError(trainer.status());
  cleanup.dismiss();
  auto summary = (*trainer)->run();
  if (!summary.ok()) throw StatusError(summary.status());
  if (rank == 0) spdlog::info("{}", done_line(*summary));
  if (model::block_cache_allocator_installed()) {
    const core::BlockCache::Stats c = core::process_block_cache().stats();
    spdlog::info(
        "block cache: tensors of {} KiB or more peaked at {:.0f} MB live, {:.0f} MB held (live "
        "and kept); {:.0f} MB held now ({:.0f} live, {:.0f} kept); {} requests served by kept "
        "blocks, {} new, {} handed back",
        core::BlockCache::kMinBytes >> 10, c.peak_live_bytes / 1e6, c.peak_held_bytes / 1e6,
        (c.live_bytes + c.free_bytes) / 1e6, c.live_bytes / 1e6, c.free_bytes / 1e6, c.hits,
        c.misses, c.released);
  }
  if (summary->interrupted) {
    const int sig = g_signal.load();
    // Like a process ended by the signal (130 for SIGINT, 143 for SIGTERM); not an error.
    throw CLI::RuntimeError(128 + (sig > 0 ? sig : SIGINT));
  }
}

}  // namespace

void register_train_command(CLI::App& app) { add_train_command(app, run_train); }

}  // namespace cairn::cli
