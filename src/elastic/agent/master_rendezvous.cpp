// MasterRendezvous: Join polling for next_round() and a heartbeat thread that raises
// rejoin_requested() when the master opens a new round.
#include "cairn/elastic/master_rendezvous.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <random>
#include <thread>

#include "cairn/core/mutex.h"
#include "elastic/deadline_impl.h"

namespace cairn::elastic {
namespace {

uint64_t random_incarnation() {
  std::random_device rd;
  uint64_t v = 0;
  while (v == 0) v = (uint64_t(rd()) << 32) ^ rd();
  return v;
}

}  // namespace

struct MasterRendezvous::Impl {
  MasterRendezvousOptions o;
  std::unique_ptr<MasterClient> client;

  mutable core::Mutex mu;
  core::CondVar cv;
  int64_t master_round CAIRN_GUARDED_BY(mu) = 0;
  int64_t step CAIRN_GUARDED_BY(mu) = -1;
  bool rejoin CAIRN_GUARDED_BY(mu) = false;
  std::string rejoin_reason CAIRN_GUARDED_BY(mu);
  bool stopping CAIRN_GUARDED_BY(mu) = false;
  std::thread heartbeats;

  Result<bool> check(int64_t round, Clock::time_point deadline);

  void heartbeat_loop() CAIRN_EXCLUDES(mu) {
    bool failing = false;
    mu.lock();  // released around each call to the master
    while (!stopping) {
      cv.wait_for(mu, std::chrono::duration<double>(o.heartbeat_interval_s));
      if (stopping || master_round == 0) continue;  // not in a round yet: Join keeps us alive
      const int64_t round = master_round, at_step = step;
      mu.unlock();
      auto r = client->heartbeat(o.node_id, round, at_step, o.heartbeat_interval_s);
      mu.lock();
      if (!r.ok()) {
        if (!failing) spdlog::warn("heartbeat to the master failed: {}", r.status().ToString());
        failing = true;
        continue;
      }
      if (failing) spdlog::info("heartbeats reach the master again");
      failing = false;
      // Only for the round asked about: next_round() may have moved on meanwhile.
      if (r->rejoin && round == master_round && !rejoin) {
        rejoin = true;
        rejoin_reason = r->reason;
        spdlog::info("master asks node {} to join again: {}", o.node_id, r->reason);
      }
    }
    mu.unlock();
  }
};

// The node check of the master's round `round`: true when this node may start its workers,
// false when the round is over (other nodes were excluded).
Result<bool> MasterRendezvous::Impl::check(int64_t round, Clock::time_point deadline) {
  std::optional<CheckReport> report;
  for (;;) {
    const double left = seconds_until(deadline);
    if (left <= 0)
      return Status::Timeout("the node check of round " + std::to_string(round) +
                             " did not end in time");
    auto reply = client->check_node(o.node_id, round, report, left);
    if (!reply.ok()) {
      if (reply.status().code() != StatusCode::kPeerLost &&
          reply.status().code() != StatusCode::kTimeout)
        return reply.status().WithContext("node check");
      continue;  // the master may come back; the report is sent again
    }
    report.reset();
    switch (reply->action) {
      case CheckAction::kRun: {
        const CheckAssignment& a = reply->assignment;
        std::string with;
        for (const auto& m : a.group)
          if (m.node_id != o.node_id) with += (with.empty() ? "" : ", ") + m.node_id;
        spdlog::info("node check {} round {}: matmul and all-reduce {}", a.check_id, a.check_round,
                     with.empty() ? std::string("alone") : "with " + with);
        NodeCheckResult result;
        if (auto r = o.node_checker(a); r.ok()) {
          result = *r;
        } else {
          result.error = r.status().message();
        }
        if (result.ok)
          spdlog::info("node check round {}: matmul {:.3f} s, all-reduce {:.3f} s", a.check_round,
                       result.matmul_s, result.allreduce_s);
        else
          spdlog::warn("node check round {} failed: {}", a.check_round, result.error);
        report = CheckReport{a.check_id, a.check_round, std::move(result)};
        continue;
      }
      case CheckAction::kWait:
        break;
      case CheckAction::kProceed:
        spdlog::info("{}", reply->reason);
        return true;
      case CheckAction::kRejoin:
        spdlog::warn("{}; joining the next round", reply->reason);
        return false;
      case CheckAction::kExcluded:
        return Status::FailedPrecondition("node " + o.node_id +
                                          " is excluded from the job: " + reply->reason);
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(
        std::min(o.poll_interval_s, std::max(0.0, seconds_until(deadline)))));
  }
}

Result<std::unique_ptr<MasterRendezvous>> MasterRendezvous::Open(
    const MasterRendezvousOptions& options) {
  NodeInfo probe{options.node_id, options.host, options.nproc_per_node, 1, 1};
  CAIRN_RETURN_IF_ERROR(validate_node_info(probe));
  if (!(options.poll_interval_s > 0) || !(options.heartbeat_interval_s > 0))
    return Status::InvalidArgument("poll_interval_s and heartbeat_interval_s must be > 0");
  auto impl = std::make_unique<Impl>();
  impl->o = options;
  if (impl->o.incarnation == 0) impl->o.incarnation = random_incarnation();
  CAIRN_ASSIGN_OR_RETURN(impl->client, MasterClient::Open(options.client));
  impl->heartbeats = std::thread([p = impl.get()] { p->heartbeat_loop(); });
  return std::unique_ptr<MasterRendezvous>(new MasterRendezvous(std::move(impl)));
}

MasterRendezvous::MasterRendezvous(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MasterRendezvous::~MasterRendezvous() {
  {
    core::MutexLock lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  impl_->heartbeats.join();
}

Result<World> MasterRendezvous::next_round(int round, double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(timeout_s));
  CAIRN_ASSIGN_OR_RETURN(int store_port, pick_free_port());
  const NodeInfo node{impl_->o.node_id, impl_->o.host, impl_->o.nproc_per_node, store_port,
                      impl_->o.incarnation};
  int64_t last_round = master_round();
  std::string why = "no answer from the master yet";
  auto next_warning = Clock::now();
  for (;;) {
    const double left = seconds_until(deadline);
    if (left <= 0)
      return Status::Timeout(fmt::format("no round including node {} within {:g} s: {}",
                                         node.node_id, timeout_s, why));
    auto reply = impl_->client->join(node, last_round, left, /*only_self=*/true);
    if (!reply.ok()) {
      // An unreachable master may come back (it journals its state) until the deadline.
      if (reply.status().code() != StatusCode::kPeerLost &&
          reply.status().code() != StatusCode::kTimeout)
        return reply.status().WithContext("rendezvous");
      why = reply.status().message();
      // Say why the wait goes on (an unreachable master, a refused certificate) every 30 s.
      if (Clock::now() >= next_warning) {
        spdlog::warn("node {} still waiting for the master ({:.0f} s left): {}", node.node_id,
                     std::max(0.0, seconds_until(deadline)), why);
        next_warning = Clock::now() + std::chrono::seconds(30);
      }
      continue;
    }
    if (reply->round) {
      const Round& r = *reply->round;
      const RoundMember* me = r.find(node.node_id);
      if (!me)
        return Status::Internal("master returned round " + std::to_string(r.number) +
                                " without node " + node.node_id);
      if (!r.nproc_differs.empty())
        return Status::Unsupported("round " + std::to_string(r.number) + ": " + r.nproc_differs +
                                   "; every node must use the same --nproc-per-node");
      for (const auto& m : r.members)
        if (m.nproc != me->nproc)
          return Status::Unsupported("round " + std::to_string(r.number) + ": node " + m.node_id +
                                     " runs " + std::to_string(m.nproc) + " workers and node " +
                                     me->node_id + " " + std::to_string(me->nproc) +
                                     "; every node must use the same --nproc-per-node");
      World w;
      w.num_nodes = r.size();
      w.node_rank = me->node_rank;
      w.nproc_per_node = me->nproc;
      w.master_addr = r.master_addr;
      w.master_port = r.master_port;
      w.run_id = impl_->o.run_id;
      w.round = round;
      {
        core::MutexLock lock(impl_->mu);
        impl_->master_round = r.number;
        impl_->rejoin = false;
        impl_->rejoin_reason.clear();
      }
      spdlog::info("rendezvous: round {} of the master: node rank {} of {}, store {}:{}", r.number,
                   w.node_rank, w.num_nodes, w.master_addr, w.master_port);
      if (!impl_->o.node_checker) return w;
      CAIRN_ASSIGN_OR_RETURN(bool admitted, impl_->check(r.number, deadline));
      if (admitted) return w;
      last_round = r.number;
      why = "the node check excluded other nodes of round " + std::to_string(r.number);
      continue;
    }
    why = reply->reason;
    std::this_thread::sleep_for(std::chrono::duration<double>(
        std::min(impl_->o.poll_interval_s, std::max(0.0, seconds_until(deadline)))));
  }
}

bool MasterRendezvous::rejoin_requested() const {
  core::MutexLock lock(impl_->mu);
  return impl_->rejoin;
}

std::string MasterRendezvous::rejoin_reason() const {
  core::MutexLock lock(impl_->mu);
  return impl_->rejoin_reason;
}

int64_t MasterRendezvous::master_round() const {
  core::MutexLock lock(impl_->mu);
  return impl_->master_round;
}

void MasterRendezvous::set_step(int64_t step) {
  core::MutexLock lock(impl_->mu);
  impl_->step = step;
}

Status MasterRendezvous::report_failure(int global_rank, ExitStatus exit,
                                        const std::string& diagnosis) {
  return impl_->client->report_failure({impl_->o.node_id, global_rank, exit, diagnosis},
                                       impl_->o.heartbeat_interval_s);
}

Status MasterRendezvous::leave() {
  {
    core::MutexLock lock(impl_->mu);
    impl_->master_round = 0;  // no more heartbeats for a round we left
  }
  auto r = impl_->client->leave(impl_->o.node_id, impl_->o.heartbeat_interval_s);
  return r.ok() ? Status::Ok() : r.status();
}

MasterClient& MasterRendezvous::client() { return *impl_->client; }

}  // namespace cairn::elastic

namespace cairn::elastic {

bool MasterRendezvous::round_over(std::string* reason) {
  if (!rejoin_requested()) return false;
  if (reason) *reason = rejoin_reason();
  return true;
}

void MasterRendezvous::worker_failed(int global_rank, const ExitStatus& exit,
                                     const std::string& diagnosis) {
  Status s = report_failure(global_rank, exit, diagnosis);
  if (!s.ok()) spdlog::warn("could not report the failure to the master: {}", s.ToString());
}

void MasterRendezvous::job_done() {
  Status s = leave();
  if (!s.ok()) spdlog::warn("could not tell the master this node is done: {}", s.ToString());
}

}  // namespace cairn::elastic
