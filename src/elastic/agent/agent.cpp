// The agent loop: rendezvous → start workers → supervise → stop → restart or finish.
#include "cairn/elastic/agent.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "cairn/core/fs.h"
#include "cairn/core/json_lines.h"
#include "cairn/core/proc.h"
#include "cairn/elastic/diagnosis.h"
#include "cairn/elastic/flash_slots.h"
#include "cairn/elastic/goodput.h"
#include "cairn/elastic/progress.h"
#include "cairn/elastic/stacks.h"
#include "cairn/elastic/standby.h"

namespace cairn::elastic {
namespace {

using nlohmann::json;

json exit_fields(const WorkerExit& e) {
  json j = {{"rank", e.rank}, {"local_rank", e.local_rank}, {"pid", e.pid}};
  if (e.status.signaled)
    j["signal"] = signal_name(e.status.code);
  else
    j["exit_code"] = e.status.code;
  return j;
}

// The command as a shell would take it back: words with special characters single-quoted.
std::string shell_join(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) {
    if (!out.empty()) out += ' ';
    const bool plain = !w.empty() && w.find_first_not_of(
                                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789_-+=./:,@%") == std::string::npos;
    if (plain) {
      out += w;
      continue;
    }
    out += '\'';
    for (char c : w) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += '\'';
  }
  return out;
}

class Agent {
 public:
  Agent(Rendezvous& rdzv, const AgentOptions& o)
      : rdzv_(rdzv), o_(o), events_(o.run_dir + "/events.jsonl") {}

  Result<AgentResult> run();

 private:
  // How a round's supervision ended.
  struct RoundEnd {
    std::vector<WorkerExit> failures;
    std::vector<double> failure_times;
    std::vector<int> hung;            // global ranks the hang detector killed
    std::vector<int> hung_waiting;    // those of `hung` blocked in a collective, waiting for peers
    std::vector<int> hung_on_master;  // those of `hung` blocked in a call to the master
    std::string round_over;           // set when the rendezvous ended the round
    int finished = 0;                 // workers that exited 0
  };
  // The round's services (kept across a restart in place) and its workers.
  Result<std::unique_ptr<WorkerGroup>> start_round(int round, int restarts, const World& world);
  // Until a failure, the end, a signal to the agent or the rendezvous ending the round: hang
  // detection, warm standbys, progress to the rendezvous, exits.
  RoundEnd supervise(WorkerGroup& group, const World& world, int restarts);
  // After a failure: stop the rest, diagnose, persist or queue the in-memory checkpoint, and
  // either restart (nullopt, *restarts counted) or end the job (the result).
  std::optional<AgentResult> handle_failure(WorkerGroup& group, const RoundEnd& end, int round,
                                            int* restarts);

 private:
  int interrupt_signal() const { return o_.interrupt ? o_.interrupt->signal.load() : 0; }
  bool hurry() const { return o_.interrupt && o_.interrupt->count.load() >= 2; }
  // The job is over on this node: its in-memory checkpoints go with it.
  void remove_flash_slots() {
    int n = unlink_flash_slots(o_.run_dir, ranks_);
    if (n > 0) spdlog::info("removed {} in-memory checkpoint segment(s)", n);
  }
  // Hands what the workers left in shared memory to the persister thread, which writes it
  // while the group restarts (the restarted workers do not overwrite it).
  void queue_memory() {
    if (!services_) return;
    auto r = services_->queue_unsaved();
    if (!r.ok())
      spdlog::error("could not queue the in-memory checkpoint: {}", r.status().ToString());
    else if (!r->is_null())
      spdlog::info("persisting the in-memory checkpoint of step {} while the workers restart",
                   r->value("step", int64_t(-1)));
  }
  // Saves what the workers left in shared memory before it is lost or overwritten.
  void persist_memory(const std::string& reason) {
    if (!services_) return;
    auto r = services_->persist_unsaved(reason);
    if (!r.ok()) {
      spdlog::error("could not persist the in-memory checkpoint: {}", r.status().ToString());
      events_.write("checkpoint_persist_failed",
                    {{"reason", reason}, {"error", r.status().ToString()}});
    } else if (!r->is_null()) {
      json j = *r;
      j["reason"] = reason;
      spdlog::info("persisted the in-memory checkpoint of step {} ({})", j.value("step", -1),
                   reason);
      events_.write("checkpoint_persisted", j);
    }
  }
  Result<AgentResult> finish(AgentResult r) {
    services_.reset();
    remove_flash_slots();
    unlink_progress(o_.run_dir, ranks_);
    if (node_rank_ == 0) {  // rank 0 writes metrics.jsonl
      std::vector<StepRow> rows;
      std::vector<TimedEvent> events;
      if (read_goodput_inputs(o_.run_dir, &rows, &events).ok() && !rows.empty()) {
        Goodput g = compute_goodput(rows, events, start_time_, core::unix_time());
        r.goodput = g;
        spdlog::info("{}", g.ToString());
        events_.write("goodput", {{"goodput", g.goodput()},
                                  {"wall_s", g.wall_s},
                                  {"productive_s", g.productive_s},
                                  {"restart_s", g.restart_s},
                                  {"load_s", g.load_s},
                                  {"lost_s", g.lost_s},
                                  {"other_s", g.other_s},
                                  {"failures", g.failures},
                                  {"steps", g.steps}});
      }
    }
    json j = {{"exit_code", r.exit_code}, {"restarts", r.restarts}};
    if (r.interrupt_signal) j["signal"] = signal_name(r.interrupt_signal);
    events_.write("agent_end", j);
    return r;
  }
  Status fail(const Status& s) {
    services_.reset();
    remove_flash_slots();
    unlink_progress(o_.run_dir, ranks_);
    events_.write("agent_end", {{"exit_code", 1}, {"error", s.ToString()}});
    return s;
  }
  std::vector<WorkerSpec> worker_specs(const World& world) const;
  // Kills the hung workers; returns their global ranks, in *waiting those whose main thread
  // was blocked in a collective (waiting for other ranks: a consequence, not the cause) and in
  // *on_master those blocked in a call to the master (unreachable: not the node's fault).
  std::vector<int> detect_hangs(WorkerGroup& group, const World& world, double round_start,
                                std::vector<int>* waiting, std::vector<int>* on_master);
  // What each local standby should fault in: its worker's anonymous resident memory after a
  // step (its heap), all of them together at most a quarter of the memory available now.
  static std::vector<int64_t> prefault_sizes(const WorkerGroup& group) {
    auto kb_field = [](const std::string& path, const std::string& key) -> int64_t {
      std::ifstream in(path);
      for (std::string line; std::getline(in, line);)
        if (line.rfind(key, 0) == 0) return std::atoll(line.c_str() + key.size()) * 1024;
      return 0;
    };
    std::vector<int64_t> bytes;
    int64_t total = 0;
    for (int local = 0; local < group.size(); ++local) {
      const pid_t pid = group.pid(local);
      bytes.push_back(pid > 0 ? kb_field("/proc/" + std::to_string(pid) + "/status", "RssAnon:")
                              : 0);
      total += bytes.back();
    }
    const int64_t budget = kb_field("/proc/meminfo", "MemAvailable:") / 4;
    if (total > budget && total > 0)
      for (int64_t& b : bytes) b = int64_t(double(b) * double(budget) / double(total));
    return bytes;
  }
  // True once every local worker reported a step after `round_start`.
  bool all_stepped(const World& world, double round_start) const {
    for (int local = 0; local < world.nproc_per_node; ++local) {
      auto p = read_progress(o_.run_dir, world.global_rank(local));
      if (!p || p->unix_time < round_start) return false;
    }
    return true;
  }
  AgentResult interrupted(WorkerGroup* group, int restarts);
  std::string failure_summary(const AgentResult& r) const;

  StandbyPool standbys_;    // warm processes for the next start (o_.standby)
  std::vector<int> ranks_;  // global ranks of this node's workers in the current round
  std::unique_ptr<RoundServices> services_;  // of the current round
  std::vector<int> services_ranks_;          // the ranks services_ was started for
  int node_rank_ = 0;
  double rdzv_ms_ = 0;  // how long the latest rendezvous took
  double start_time_ = core::unix_time();
  Rendezvous& rdzv_;
  const AgentOptions& o_;
  core::EventLog events_;
};

std::vector<WorkerSpec> Agent::worker_specs(const World& world) const {
  WorkerEnvOptions env_options;
  env_options.max_restarts = o_.max_restarts;
  env_options.run_dir = o_.run_dir;
  env_options.num_cores = o_.num_cores;
  std::vector<WorkerSpec> specs;
  for (int local = 0; local < world.nproc_per_node; ++local) {
    WorkerSpec s;
    s.rank = world.global_rank(local);
    s.local_rank = local;
    s.argv = o_.command;
    s.env = to_envp(worker_env(world, local, env_options, o_.base_env));
    specs.push_back(std::move(s));
  }
  return specs;
}

// Every local worker that reported progress in this round but none for the hang timeout: its
// stacks are dumped, then it is killed (its exit, diagnosed as a hang, ends the round). One
// hung rank holds up every other in the next collective, so their hang detectors fire too: a
// worker whose main thread waits in a collective, and that is not stopped, is reported as
// waiting for its peers, and one whose main thread waits for the master to answer (a node cut
// off from it: the shard service's calls) as the master lost; neither counts against its node.
std::vector<int> Agent::detect_hangs(WorkerGroup& group, const World& world, double round_start,
                                     std::vector<int>* waiting, std::vector<int>* on_master) {
  std::vector<int> hung;
  const double now = core::unix_time();
  // When one local worker is over the timeout, a stopped local worker is taken with it even if
  // its own silence is a little shorter: it is the cause, the others wait for it.
  bool any_over = false;
  for (int local = 0; local < world.nproc_per_node; ++local) {
    auto p = read_progress(o_.run_dir, world.global_rank(local));
    if (p && group.pid(local) != 0 && p->unix_time >= round_start &&
        now - p->unix_time > o_.hang_timeout_s)
      any_over = true;
  }
  if (!any_over) return hung;
  for (int local = 0; local < world.nproc_per_node; ++local) {
    const int rank = world.global_rank(local);
    auto p = read_progress(o_.run_dir, rank);
    const pid_t pid = group.pid(local);
    if (!p || pid == 0 || p->unix_time < round_start) continue;
    if (now - p->unix_time <= o_.hang_timeout_s && !core::process_stopped(pid)) continue;
    spdlog::error(
        "rank {} (pid {}) made no progress for {:.0f} s after step {}: dumping its "
        "stacks, then restarting",
        rank, pid, now - p->unix_time, p->step);
    std::string file = o_.run_dir + "/logs/hang-rank-" + std::to_string(rank) + ".txt";
    const bool stopped = core::process_stopped(pid);  // before gdb stops it
    std::string stacks = dump_stacks(pid, 60.0);
    (void)core::write_file_atomic(file, stacks);
    const MainThreadWait wait =
        stopped ? MainThreadWait::kNothing : main_thread_waits_for(stacks, pid);
    const bool on_peers = wait == MainThreadWait::kCollective;
    const bool master = wait == MainThreadWait::kMaster;
    spdlog::error("stacks of rank {} (also in {}){}:\n{}", rank, file,
                  stopped    ? "; it was stopped (SIGSTOP)"
                  : on_peers ? "; it waits for other ranks in a collective"
                  : master   ? "; it waits for the elastic master to answer"
                             : "",
                  stacks);
    events_.write("hang", {{"rank", rank},
                           {"pid", pid},
                           {"last_step", p->step},
                           {"silent_s", now - p->unix_time},
                           {"stopped", stopped},
                           {"waiting_for_peers", on_peers},
                           {"waiting_for_master", master},
                           {"stacks", file}});
    if (on_peers) waiting->push_back(rank);
    if (master) on_master->push_back(rank);
    group.signal_one(local, SIGKILL);
    hung.push_back(rank);
  }
  return hung;
}

AgentResult Agent::interrupted(WorkerGroup* group, int restarts) {
  AgentResult r;
  r.interrupt_signal = interrupt_signal();
  r.restarts = restarts;
  r.exit_code = agent_exit_code(std::nullopt, r.interrupt_signal);
  const std::string sig = signal_name(r.interrupt_signal);
  if (group != nullptr && group->num_running() > 0) {
    // SIGUSR1 is a scheduler's notice (Slurm's --signal before the time limit or a
    // preemption): the workers get SIGTERM, on which they checkpoint and stop.
    const int to_workers = r.interrupt_signal == SIGUSR1 ? SIGTERM : r.interrupt_signal;
    spdlog::warn("received {}: sending {} to {} worker(s), SIGKILL after {:g} s", sig,
                 signal_name(to_workers), group->num_running(), o_.grace_period_s);
    for (const WorkerExit& e :
         group->stop(to_workers, o_.grace_period_s, [this] { return hurry(); }))
      spdlog::info("rank {} stopped: {}", e.rank, e.status.ToString());
  }
  r.summary = "interrupted by " + sig + "; workers stopped";
  persist_memory("interrupted");
  return r;
}

// REQUIRES: r.failure.
std::string Agent::failure_summary(const AgentResult& r) const {
  const WorkerExit& f = *r.failure;
  std::string s = "worker rank " + std::to_string(f.rank) + " (local rank " +
                  std::to_string(f.local_rank) + ", pid " + std::to_string(f.pid) +
                  ") failed: " + f.status.ToString() + "\n";
  if (r.diagnosis) s += "diagnosis: " + r.diagnosis->reason + "\n";
  if (r.diagnosis && !r.diagnosis->restartable)
    s += "not restarted: the failure is not one a restart can fix";
  else if (o_.max_restarts == 0)
    s += "no restarts allowed (--max-restarts 0)";
  else
    s += "no restarts left (" + std::to_string(r.restarts) + " of " +
         std::to_string(o_.max_restarts) + " used)";
  s += "\ncommand: " + shell_join(o_.command);
  if (!r.failure_tail.empty()) {
    s += "\nlast " + std::to_string(r.failure_tail.size()) + " line(s) of " +
         (r.failure_log.empty() ? "its output" : r.failure_log) + ":";
    for (const std::string& line : r.failure_tail) s += "\n  " + line;
  }
  return s;
}

Result<std::unique_ptr<WorkerGroup>> Agent::start_round(int round, int restarts,
                                                        const World& world) {
  if (round == 0)
    events_.write("agent_start", {{"nproc", world.nproc_per_node},
                                  {"nnodes", world.num_nodes},
                                  {"node_rank", world.node_rank},
                                  {"world_size", world.world_size()},
                                  {"run_id", world.run_id},
                                  {"max_restarts", o_.max_restarts},
                                  {"command", o_.command}});
  events_.write("rendezvous", {{"round", round},
                               {"world_size", world.world_size()},
                               {"nnodes", world.num_nodes},
                               {"node_rank", world.node_rank},
                               {"duration_ms", rdzv_ms_}});
  node_rank_ = world.node_rank;
  ranks_.clear();
  for (int i = 0; i < world.nproc_per_node; ++i) ranks_.push_back(world.global_rank(i));
  // The round's services stay while this node runs the same ranks (a restart in place): a
  // persist queued at the failure goes on while the workers restart.
  if (ranks_ != services_ranks_) services_.reset();
  services_ranks_ = ranks_;
  if (o_.start_round && !services_) {
    auto services = o_.start_round(
        ranks_, [this](const std::string& e, const json& fields) { events_.write(e, fields); });
    if (!services.ok()) return services.status().WithContext("starting the round's services");
    services_ = std::move(services).value();
  }
  WorkerGroupOptions go;
  go.log_dir = o_.run_dir + "/logs";
  go.echo_stdout_fd = o_.echo_stdout_fd;
  go.echo_stderr_fd = o_.echo_stderr_fd;
  go.tail_lines = o_.tail_lines;
  if (round > 0) go.log_header = "--- cairn run: restart " + std::to_string(round) + " ---";
  CAIRN_ASSIGN_OR_RETURN(
      std::unique_ptr<WorkerGroup> group,
      WorkerGroup::Start(worker_specs(world), go, o_.standby ? &standbys_ : nullptr));
  const int from_standby = group->num_from_standby();
  json pids = json::object();  // by global rank: an activated standby's environ is stale
  for (int local = 0; local < world.nproc_per_node; ++local)
    pids[std::to_string(world.global_rank(local))] = group->pid(local);
  events_.write("workers_started", {{"round", round},
                                    {"world_size", world.world_size()},
                                    {"master_addr", world.master_addr},
                                    {"master_port", world.master_port},
                                    {"from_standby", from_standby},
                                    {"pids", pids}});
  spdlog::info(
      "started {} worker(s){}: ranks {}..{} of {}, master {}:{}{}", world.nproc_per_node,
      from_standby > 0 ? fmt::format(" ({} from standby)", from_standby) : "", world.global_rank(0),
      world.global_rank(world.nproc_per_node - 1), world.world_size(), world.master_addr,
      world.master_port,
      round > 0 ? fmt::format(", round {} ({} restart(s) of {})", round, restarts, o_.max_restarts)
                : "");
  return group;
}

Agent::RoundEnd Agent::supervise(WorkerGroup& group, const World& world, int restarts) {
  RoundEnd end;
  const double round_start = core::unix_time();
  int64_t last_step = -1;
  // Only worth it when another round can come: restarts left, or membership that can change.
  bool standbys_filled =
      !o_.standby || !(may_restart(restarts, o_.max_restarts) || rdzv_.follows_membership());
  // A worker the hang detector killed is a failure even when the round ends meanwhile (a
  // peer's agent may end it first): the loop goes on until its exit is collected, so that the
  // hang is recorded and handed to the rendezvous.
  // Every rank the hang detector killed is collected before the round ends: its exit carries
  // the diagnosis, and a peer it held up (killed first, while the hung rank's stacks were
  // dumped) must not be the only failure on record. SIGKILL ends them; the bound is for safety.
  double hung_at = 0;
  auto hung_uncollected = [&] {
    if (end.hung.empty() || core::unix_time() - hung_at > 10.0) return false;
    for (int rank : end.hung)
      if (std::none_of(end.failures.begin(), end.failures.end(),
                       [&](const WorkerExit& e) { return e.rank == rank; }))
        return true;
    return false;
  };
  while ((end.failures.empty() || hung_uncollected()) && group.num_running() > 0 &&
         !interrupt_signal() && (end.round_over.empty() || !end.hung.empty())) {
    if (o_.hang_timeout_s > 0 && end.hung.empty()) {
      end.hung = detect_hangs(group, world, round_start, &end.hung_waiting, &end.hung_on_master);
      if (!end.hung.empty()) hung_at = core::unix_time();
    }
    // Standbys start once every local worker has stepped, so their start does not compete
    // with the round's own (on a small node, that would slow the recovery they are for).
    if (!standbys_filled && all_stepped(world, round_start)) {
      standbys_.fill(worker_specs(world), prefault_sizes(group));
      standbys_filled = true;
    }
    if (auto p = read_progress(o_.run_dir, world.global_rank(0)); p && p->step != last_step) {
      last_step = p->step;
      rdzv_.progress(last_step);
    }
    if (std::string why; rdzv_.round_over(&why))
      end.round_over = why.empty() ? "membership changed" : why;
    for (const WorkerExit& e : group.poll(o_.monitor_interval_s)) {
      if (e.status.success()) {
        spdlog::info("rank {} exited 0", e.rank);
        ++end.finished;
        continue;
      }
      spdlog::error("rank {} (pid {}) failed: {}", e.rank, e.pid, e.status.ToString());
      end.failures.push_back(e);
      end.failure_times.push_back(core::unix_time());
    }
  }
  return end;
}

std::optional<AgentResult> Agent::handle_failure(WorkerGroup& group, const RoundEnd& end, int round,
                                                 int* restarts) {
  // Stop the rest at once, then restart or give up. A graceful stop would only wait for their
  // collectives with the lost rank to fail; what they can save is already in their in-memory
  // checkpoints.
  if (group.num_running() > 0) spdlog::warn("stopping the other workers (SIGKILL)");
  for (const WorkerExit& e : group.stop(SIGKILL, 0, [this] { return hurry(); }))
    spdlog::info("rank {} stopped: {}", e.rank, e.status.ToString());
  group.drain(0.5);  // the failed workers' last lines, for the diagnosis
  // The failure that explains the others: a rank that lost its peer is a consequence.
  size_t primary = 0;
  std::vector<Diagnosis> diagnoses;
  for (size_t i = 0; i < end.failures.size(); ++i) {
    const WorkerExit& e = end.failures[i];
    diagnoses.push_back(diagnose(e.status, group.tail(e.local_rank)));
    auto has = [&](const std::vector<int>& ranks) {
      return std::find(ranks.begin(), ranks.end(), e.rank) != ranks.end();
    };
    const std::string stacks_at = o_.run_dir + "/logs/hang-rank-" + std::to_string(e.rank) + ".txt";
    if (has(end.hung_waiting))
      diagnoses.back() = {FailureKind::kPeerLost, true,
                          "no progress for " + fmt::format("{:g}", o_.hang_timeout_s) +
                              " s (--hang-timeout), blocked in a collective waiting for other "
                              "ranks; stacks in " +
                              stacks_at};
    else if (has(end.hung_on_master))
      diagnoses.back() = {FailureKind::kMasterLost, true,
                          "no progress for " + fmt::format("{:g}", o_.hang_timeout_s) +
                              " s (--hang-timeout), blocked in a call to the elastic master "
                              "(unreachable or slow); stacks in " +
                              stacks_at};
    else if (has(end.hung))
      diagnoses.back() = {FailureKind::kHang, true,
                          "no progress for " + fmt::format("{:g}", o_.hang_timeout_s) +
                              " s (--hang-timeout); stacks in " + stacks_at};
    json j = exit_fields(e);
    j["round"] = round;
    j["time"] = end.failure_times[i];
    j["diagnosis"] = failure_kind_name(diagnoses[i].kind);
    j["restartable"] = diagnoses[i].restartable;
    j["reason"] = diagnoses[i].reason;
    events_.write("worker_failed", j);
    if (diagnoses[primary].kind == FailureKind::kPeerLost &&
        diagnoses[i].kind != FailureKind::kPeerLost)
      primary = i;
  }
  const WorkerExit first = end.failures[primary];
  const Diagnosis& why = diagnoses[primary];
  spdlog::error("rank {}: {}", first.rank, why.reason);
  const bool will_restart =
      why.restartable && may_restart(*restarts, o_.max_restarts) && !interrupt_signal();
  if (will_restart)
    queue_memory();  // persisted while the workers restart
  else
    persist_memory("worker_failed");
  rdzv_.worker_failed(first.rank, first.status,
                      std::string(failure_kind_name(why.kind)) + ": " + why.reason);
  if (interrupt_signal()) return interrupted(&group, *restarts);
  if (!why.restartable) {
    spdlog::error("not restarting: {}", why.reason);
    events_.write(
        "job_stopped",
        {{"rank", first.rank}, {"diagnosis", failure_kind_name(why.kind)}, {"reason", why.reason}});
  } else if (may_restart(*restarts, o_.max_restarts)) {
    ++*restarts;
    spdlog::warn("restarting the workers (restart {} of {})", *restarts, o_.max_restarts);
    events_.write("restart", {{"count", *restarts}, {"max_restarts", o_.max_restarts}});
    return std::nullopt;
  }
  rdzv_.job_done();
  AgentResult r;
  r.restarts = *restarts;
  r.failure = first;
  r.failure_tail = group.tail(first.local_rank);
  r.failure_log = group.log_path(first.local_rank);
  r.exit_code = agent_exit_code(first.status, 0);
  r.diagnosis = why;
  r.summary = failure_summary(r);
  return r;
}

Result<AgentResult> Agent::run() {
  if (Status s = core::make_dirs(o_.run_dir + "/logs"); !s.ok()) return s;
  int restarts = 0;  // after failures; a round also ends when membership changes
  for (int round = 0;; ++round) {
    if (interrupt_signal()) return finish(interrupted(nullptr, restarts));
    const auto rdzv_start = std::chrono::steady_clock::now();
    auto world = rdzv_.next_round(round, o_.rendezvous_timeout_s);
    if (!world.ok()) return fail(world.status().WithContext("rendezvous"));
    rdzv_ms_ =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - rdzv_start)
            .count();
    auto group = start_round(round, restarts, *world);
    if (!group.ok()) return fail(group.status());
    RoundEnd end = supervise(**group, *world, restarts);
    if (interrupt_signal()) return finish(interrupted(group->get(), restarts));
    if (end.failures.empty() && !end.round_over.empty()) {
      // Membership changed (a node lost or waiting to join): a new round, not a failure.
      spdlog::warn("the round is over: {}; stopping the workers to join the next one",
                   end.round_over);
      for (const WorkerExit& e :
           (*group)->stop(SIGTERM, o_.grace_period_s, [this] { return hurry(); })) {
        spdlog::info("rank {} stopped: {}", e.rank, e.status.ToString());
        end.finished += e.status.success();
      }
      if (end.finished < (*group)->size()) {
        events_.write("round_over", {{"round", round}, {"reason", end.round_over}});
        persist_memory("round_over");
        continue;
      }
      // The workers had finished the job (another node leaving at the end ended the round).
    }
    if (end.failures.empty()) {
      (*group)->drain(1.0);
      rdzv_.job_done();
      AgentResult r;
      r.restarts = restarts;
      r.summary = "all " + std::to_string((*group)->size()) + " worker(s) exited 0";
      return finish(r);
    }
    if (std::optional<AgentResult> r = handle_failure(**group, end, round, &restarts))
      return finish(*std::move(r));
  }
}

}  // namespace

Result<AgentResult> run_agent(Rendezvous& rendezvous, const AgentOptions& options) {
  return Agent(rendezvous, options).run();
}

}  // namespace cairn::elastic
