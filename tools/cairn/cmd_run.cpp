// `cairn run`: start and supervise this node's workers with torchrun's flags and environment.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>

#include "cairn/ckpt/persist.h"
#include "cairn/core/fs.h"
#include "cairn/core/json_lines.h"
#include "cairn/core/log.h"
#include "cairn/core/proc.h"
#include "cairn/elastic/agent.h"
#include "cairn/elastic/flash_slots.h"
#include "cairn/elastic/launch_options.h"
#include "cairn/elastic/rendezvous.h"
#include "cairn/elastic/slurm.h"
#include "cairn/elastic/worker_env.h"
#include "commands.h"
#include "dashboard_flags.h"
#include "launch_flags.h"
#include "orphans_at_start.h"
#include "run_elastic.h"

extern char** environ;

namespace cairn::cli {
namespace {

// The signal flag the agent loop watches; written only by on_agent_signal.
elastic::Interrupt g_interrupt;

extern "C" void on_agent_signal(int sig) {
  g_interrupt.signal.store(sig);
  g_interrupt.count.fetch_add(1);
}

constexpr int kForwardedSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1};

// Installs the agent's handlers for its lifetime; restores the previous ones on destruction.
class AgentSignals {
 public:
  AgentSignals() {
    struct sigaction sa {};
    sa.sa_handler = on_agent_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: a signal wakes the agent's poll at once
    for (size_t i = 0; i < std::size(kForwardedSignals); ++i)
      ::sigaction(kForwardedSignals[i], &sa, &old_[i]);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &ignore, &old_pipe_);  // a closed terminal must not kill the agent
  }
  AgentSignals(const AgentSignals&) = delete;
  AgentSignals& operator=(const AgentSignals&) = delete;
  ~AgentSignals() {
    for (size_t i = 0; i < std::size(kForwardedSignals); ++i)
      ::sigaction(kForwardedSignals[i], &old_[i], nullptr);
    ::sigaction(SIGPIPE, &old_pipe_, nullptr);
  }

 private:
  struct sigaction old_[std::size(kForwardedSignals)]{};
  struct sigaction old_pipe_ {};
};

// The flash-checkpoint persister as a service of the agent's round.
class PersisterService : public elastic::RoundServices {
 public:
  explicit PersisterService(std::unique_ptr<ckpt::SlotPersister> p) : p_(std::move(p)) {}
  Result<nlohmann::json> persist_unsaved(const std::string& reason) override {
    return p_->persist_unsaved(reason);
  }
  Result<nlohmann::json> queue_unsaved() override { return p_->queue_unsaved(); }

 private:
  std::unique_ptr<ckpt::SlotPersister> p_;
};

std::string default_run_dir() {
  char buf[64];
  std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof(buf), "runs/%Y%m%d-%H%M%S", std::localtime(&t));
  return buf;
}

// --dashboard-control's stop: what SIGTERM does (the workers checkpoint at the next step
// boundary and exit; the agent persists what they left in memory), recorded as an event.
Status stop_from_dashboard(const std::string& run_dir, const std::string& requester) {
  int none = 0;
  if (!g_interrupt.signal.compare_exchange_strong(none, SIGTERM))
    return Status::FailedPrecondition("the job is already stopping");
  g_interrupt.count.fetch_add(1);
  core::EventLog(run_dir + "/events.jsonl")
      .write("stop_requested", {{"by", "dashboard"}, {"requester", requester}});
  spdlog::warn("the dashboard ({}) asked the job to stop: SIGTERM to the workers", requester);
  return Status::Ok();
}

void run_run(elastic::LaunchFlags& flags, const DashboardFlags& dash, const CLI::App& cmd) {
  collect_unknown_flags(cmd, &flags);
  elastic::Env env = elastic::env_from_environ(environ);
  if (elastic::wants_slurm(flags, env)) {  // inside srun: the allocation gives the nodes
    auto slurm = elastic::slurm_launch_flags(flags, env);
    if (!slurm.ok()) throw StatusError(slurm.status());
    flags = std::move(slurm).value();
  }
  auto options = elastic::resolve_launch_options(flags);
  if (!options.ok()) throw StatusError(options.status());

  std::vector<std::string> command = elastic::resolve_self_command(options->command, self_exe());
  auto exe = elastic::find_executable(command[0], env.count("PATH") ? env["PATH"] : "");
  if (!exe.ok()) throw StatusError(exe.status());
  command[0] = *exe;
  // The front `cairn` would only exec this binary in every worker: start it directly (and its
  // warm standbys, which must be this binary to be used).
  std::error_code front_error;
  const std::filesystem::path front = std::filesystem::path(self_exe()).parent_path() / "cairn";
  if (std::filesystem::equivalent(command[0], front, front_error)) command[0] = self_exe();

  std::string run_dir = options->run_dir.empty() ? default_run_dir() : options->run_dir;
  if (Status s = core::make_dirs(run_dir + "/logs"); !s.ok()) throw StatusError(s);
  run_dir = std::filesystem::absolute(run_dir).lexically_normal().string();
  if (!run_dir.empty() && run_dir.back() == '/') run_dir.pop_back();
  core::init_logging({spdlog::level::to_string_view(spdlog::get_level()).data(),
                      run_dir + "/logs/agent.log", "[agent] "});

  elastic::StaticRendezvousOptions ro;
  ro.num_nodes = options->max_nodes;
  ro.node_rank = options->node_rank;
  ro.nproc_per_node = options->nproc_per_node;
  ro.master_host = options->master_host;
  ro.master_port = options->master_port;
  ro.run_id = options->run_id.empty() ? std::filesystem::path(run_dir).filename().string()
                                      : options->run_id;
  if (options->min_nodes < options->max_nodes && !options->elastic)
    spdlog::warn("--nnodes {}:{}: static rendezvous fixes the world at {} nodes",
                 options->min_nodes, options->max_nodes, options->max_nodes);
  spdlog::info("run directory {}", run_dir);
  collect_orphans_at_start(run_dir);  // this run's own slots stay for its workers' --resume
  elastic::StaticRendezvous static_rendezvous(ro);
  elastic::Rendezvous* rendezvous = &static_rendezvous;
  ElasticRun elastic_run;
  if (options->elastic) {
    auto e = start_elastic(*options, run_dir, ro.run_id);
    if (!e.ok()) throw StatusError(e.status());
    elastic_run = std::move(e).value();
    rendezvous = elastic_run.rendezvous.get();
    env["CAIRN_BIND_HOST"] = elastic_run.node_host;
    // The workers' own calls to the master (the shard service of data.sharding: dynamic).
    for (const auto& [name, value] : elastic::master_client_env(elastic_run.client))
      env[name] = value;
  }

  std::string token = elastic_run.client.job_token;
  if (const char* t = std::getenv("CAIRN_JOB_TOKEN"); token.empty() && t) token = t;
  auto dashboard = start_dashboard(
      dash, run_dir, token, "cairn run",
      [run_dir](const std::string& requester) { return stop_from_dashboard(run_dir, requester); });
  if (!dashboard.ok()) throw StatusError(dashboard.status());

  elastic::AgentOptions ao;
  ao.command = command;
  ao.max_restarts = options->max_restarts;
  ao.monitor_interval_s = options->monitor_interval_s;
  ao.grace_period_s = options->grace_period_s;
  ao.hang_timeout_s = options->hang_timeout_s;
  ao.rendezvous_timeout_s = options->rdzv_timeout_s;
  // Standbys park at the top of cairn's main; another program would simply run early.
  std::error_code same_error;
  ao.standby = options->standby && std::filesystem::equivalent(command[0], self_exe(), same_error);
  ao.run_dir = run_dir;
  if (command[0] == self_exe())
    for (const auto& v : kTrainingEnv)  // cairn workers (commands.h)
      if (env.count(v.name) == 0) env[v.name] = v.value;
  ao.base_env = std::move(env);
  ao.num_cores = core::usable_cores();
  ao.interrupt = &g_interrupt;
  // This node's agent persists its workers' in-memory checkpoints (cairn train sees
  // CAIRN_AGENT_PERSISTS and starts no persister of its own).
  ao.base_env["CAIRN_AGENT_PERSISTS"] = run_dir;
  ao.start_round = [run_dir](
                       const std::vector<int>& ranks,
                       elastic::EventSink sink) -> Result<std::unique_ptr<elastic::RoundServices>> {
    ckpt::SlotPersisterOptions po;
    for (int r : ranks)
      for (int i = 0; i < elastic::kFlashSlotsPerRank; ++i)
        po.slots[r].push_back(elastic::flash_slot_name(run_dir, r, i));
    po.on_event = std::move(sink);
    CAIRN_ASSIGN_OR_RETURN(auto persister, ckpt::SlotPersister::Start(std::move(po)));
    return std::unique_ptr<elastic::RoundServices>(new PersisterService(std::move(persister)));
  };

  Result<elastic::AgentResult> result = Status::Internal("agent did not run");
  {
    AgentSignals signals;
    result = elastic::run_agent(*rendezvous, ao);
  }
  if (!result.ok()) throw StatusError(result.status());
  if (result->exit_code == 0) {
    spdlog::info("{}", result->summary);
    return;
  }
  spdlog::default_logger()->flush();
  std::fprintf(stderr, "cairn run: %s\n", result->summary.c_str());
  throw CLI::RuntimeError(result->exit_code);
}

}  // namespace

void register_run_command(CLI::App& app) {
  auto flags = std::make_shared<elastic::LaunchFlags>();
  auto* cmd = app.add_subcommand("run", torch_command_description("run"));
  cmd->footer(
      "Every worker gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, "
      "MASTER_PORT,\n"
      "GROUP_RANK, ROLE_RANK, ROLE_WORLD_SIZE, TORCHELASTIC_RESTART_COUNT, "
      "TORCHELASTIC_MAX_RESTARTS,\n"
      "TORCHELASTIC_RUN_ID, OMP_NUM_THREADS (unless set) and CAIRN_RUN_DIR, so unmodified PyTorch\n"
      "scripts run under it. Output goes to <run-dir>/logs/worker-<rank>.log and to the terminal\n"
      "as '[rank R] ...'; <run-dir>/events.jsonl records starts, failures and restarts.\n"
      "The agent persists its workers' in-memory checkpoints in the background (cairn train's\n"
      "ckpt.persist_interval), and after a failure or a signal writes what they left in memory\n"
      "to storage before restarting or exiting; it removes the segments when the job ends.\n"
      "SIGINT (Ctrl-C), SIGTERM and SIGHUP are forwarded to the workers (SIGUSR1, a scheduler's\n"
      "notice, as SIGTERM: they checkpoint and stop), SIGKILL follows after\n"
      "--grace-period (a second Ctrl-C kills at once). Exit code: 0 when every worker exits 0;\n"
      "the first failed worker's code (128+signal if killed) when no restart is left; 128+signal\n"
      "(130, 143, 138) when cairn run itself was interrupted; 2 for bad flags.\n"
      "\nExamples:\n"
      "  cairn run --nproc-per-node 2 -- cairn train configs/gpt-kjv.yaml\n"
      "  cairn run --nproc-per-node 4 --max-restarts 3 -- /usr/bin/python3 train.py --lr 3e-4\n"
      "  cairn run --nproc-per-node 2 -- /bin/sh -c 'echo rank $RANK of $WORLD_SIZE'\n"
      "  # with the live dashboard at http://127.0.0.1:8265/, allowed to stop the job:\n"
      "  cairn run --nproc-per-node 2 --dashboard-port 8265 --dashboard-control \\\n"
      "      -- cairn train configs/gpt-kjv.yaml --resume-or-start\n"
      "  # two machines, run on each (node 0 at 10.0.0.1):\n"
      "  cairn run --nnodes 2 --node-rank 0 --rdzv-endpoint 10.0.0.1:29400 --nproc-per-node 2 \\\n"
      "      -- cairn train configs/gpt-kjv.yaml\n"
      "  cairn run --nnodes 2 --node-rank 1 --rdzv-endpoint 10.0.0.1:29400 --nproc-per-node 2 \\\n"
      "      -- cairn train configs/gpt-kjv.yaml\n"
      "  # elastic, 1 to 4 nodes joining the master (cairn master, or --embed-master on one "
      "node):\n"
      "  CAIRN_JOB_TOKEN=secret cairn run --rdzv-backend cairn --rdzv-endpoint 10.0.0.1:29400 \\\n"
      "      --nnodes 1:4 --node-id node-01 --max-restarts 10 -- cairn train configs/gpt-kjv.yaml "
      "\\\n"
      "      --resume-or-start --set ckpt.dir=/shared/ckpt --set ckpt.memory_interval=1\n"
      "  # inside a Slurm job, one per node (deploy/slurm/cairn.sbatch does this):\n"
      "  srun --ntasks-per-node=1 cairn run --rdzv-backend slurm --nproc-per-node 8 \\\n"
      "      -- cairn train configs/gpt-kjv.yaml --resume-or-start --set ckpt.dir=/shared/ckpt");
  add_launch_flags(*cmd, flags.get());
  auto dash = std::make_shared<DashboardFlags>();
  add_dashboard_flags(*cmd, dash.get(), /*with_control=*/true);
  cmd->callback([flags, dash, cmd] { run_run(*flags, *dash, *cmd); });
}

}  // namespace cairn::cli
