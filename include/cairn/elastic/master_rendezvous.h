// A Rendezvous that asks the elastic master: next_round() joins and polls until the master
// completes a round this node is a member of, and a background thread heartbeats for the node
// and notices when the master wants the node to join again (a member was lost, a node came,
// another node's workers restarted). The agent uses it in place of StaticRendezvous:
//
//   agent loop                       MasterRendezvous
//   next_round(k) ──────────────────► Join(last_round) until a round; World{round = k}
//   supervise workers; every check:   heartbeats every heartbeat_interval_s in the background
//     rejoin_requested()? ──yes──► stop the workers, next_round(k + 1)
//     a worker failed ──► report_failure(...), stop the workers, next_round(k + 1)
//   job done ──► leave()
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "cairn/core/status.h"
#include "cairn/elastic/exit_status.h"
#include "cairn/elastic/master_client.h"
#include "cairn/elastic/rendezvous.h"

namespace cairn::elastic {

struct MasterRendezvousOptions {
  MasterClientOptions client;
  std::string node_id;  // REQUIRES: non-empty, the same every time this node's agent starts
  std::string host;     // address the other nodes reach this node at (its store, if node rank 0)
  int nproc_per_node = 1;
  std::string run_id;               // World::run_id
  double poll_interval_s = 0.5;     // between Join polls while a round gathers
  double heartbeat_interval_s = 5;  // REQUIRES: well below the master's heartbeat timeout
  uint64_t incarnation = 0;         // 0: a random one for this agent process
  // Runs one node-check assignment (`cairn node-check`) and returns what it measured; an error
  // counts as a failed check. Empty: the node takes no part in node checks (a master that runs
  // them fails this node's part at its timeout).
  std::function<Result<NodeCheckResult>(const CheckAssignment&)> node_checker;
};

// Thread-safe. The destructor stops the heartbeat thread (it does not leave the job: a node
// whose agent dies without leave() is dropped by the heartbeat timeout).
class MasterRendezvous : public Rendezvous {
 public:
  static Result<std::unique_ptr<MasterRendezvous>> Open(const MasterRendezvousOptions& options);
  ~MasterRendezvous() override;

  // Joins (with a store port picked now, used if this node gets node rank 0) and polls until a
  // round includes this node; with a node_checker, takes part in the master's node check of that
  // round and joins again when the check excluded other nodes. World::round is `round` (the agent's
  // restart count), not the master's round number. Errors: kTimeout when no round came within
  // `timeout_s` (the message says why the master kept the node waiting), kFailedPrecondition when
  // the master excluded this node (faulty, or it failed the node check: the message says why),
  // kUnsupported when the round's nodes run different numbers of workers (World describes equal
  // nodes only), the client's errors.
  Result<World> next_round(int round, double timeout_s) override;
  bool round_over(std::string* reason) override;
  bool follows_membership() const override { return true; }
  void worker_failed(int global_rank, const ExitStatus& exit,
                     const std::string& diagnosis) override;
  void progress(int64_t step) override { set_step(step); }
  void job_done() override;

  // Set by the heartbeat thread when the master says this node's round is over; cleared when
  // next_round() returns a round.
  bool rejoin_requested() const;
  std::string rejoin_reason() const;
  // The master's number of the round this node last got (0 before the first).
  int64_t master_round() const;
  // Progress reported with the next heartbeats.
  void set_step(int64_t step);

  Status report_failure(int global_rank, ExitStatus exit, const std::string& diagnosis);
  // Tells the master this node is gone for good; heartbeats stop.
  Status leave();

  MasterClient& client();

 private:
  struct Impl;
  explicit MasterRendezvous(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::elastic
