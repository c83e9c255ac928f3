// Deciding the world a node's workers join: how many nodes, which one this is, and where rank 0
// serves the store (MASTER_ADDR/MASTER_PORT). `Rendezvous` is the interface the agent asks once
// per round (first start and every restart); `StaticRendezvous` answers from the command line.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "cairn/core/status.h"
#include "cairn/elastic/exit_status.h"

namespace cairn::elastic {

// One round's world as seen from one node. Global rank of local worker i is
// node_rank * nproc_per_node + i.
struct World {
  int num_nodes = 1;
  int node_rank = 0;
  int nproc_per_node = 1;
  std::string master_addr;  // where global rank 0 serves the c10d store
  int master_port = 0;
  std::string run_id;  // TORCHELASTIC_RUN_ID
  int round = 0;       // 0 for the first start, +1 per restart

  int world_size() const { return num_nodes * nproc_per_node; }
  int global_rank(int local_rank) const { return node_rank * nproc_per_node + local_rank; }
};

// Decides the world for each round. StaticRendezvous answers from the command line; a
// rendezvous that decides membership at run time implements the same interface, and the agent
// needs nothing else to follow it. Thread-compatible: one agent thread calls it.
class Rendezvous {
 public:
  virtual ~Rendezvous() = default;
  // Returns the world for round `round` (0 = first start, then one more per restart), waiting
  // at most `timeout_s` for other nodes. kTimeout when they did not come in time.
  virtual Result<World> next_round(int round, double timeout_s) = 0;

  // Hooks for a rendezvous that follows membership at run time (the static one ignores them).
  // True when this node's round is over (a node was lost or is waiting to join): the agent
  // stops its workers and asks next_round again. `reason` says why.
  virtual bool round_over(std::string* reason) { return false; }
  // True when rounds can end for membership changes (so a later round may come without a
  // failure).
  virtual bool follows_membership() const { return false; }
  // A local worker failed (before the agent stops the others).
  virtual void worker_failed(int global_rank, const ExitStatus& exit,
                             const std::string& diagnosis) {}
  // The newest step this node's workers finished (for the master's view of the job).
  virtual void progress(int64_t step) {}
  // The job ended on this node (successfully or for good).
  virtual void job_done() {}
};

struct StaticRendezvousOptions {
  int num_nodes = 1;
  int node_rank = 0;       // REQUIRES: 0 <= node_rank < num_nodes
  int nproc_per_node = 1;  // REQUIRES: >= 1
  // Empty: standalone (MASTER_ADDR 127.0.0.1 and a free port picked anew for every round, so a
  // restarted round never trips over the previous round's socket). Otherwise node 0's address.
  std::string master_host;
  int master_port = 0;  // REQUIRES: 1..65535 unless standalone
  std::string run_id;
};

// The world is what the options say; never waits. Every node must be started with the same
// --nnodes, --nproc-per-node and endpoint; each node restarts only its own workers, so a restart
// on one node succeeds when the other nodes' workers also fail and restart (their collectives
// time out), which is how a static job recovers.
class StaticRendezvous : public Rendezvous {
 public:
  explicit StaticRendezvous(StaticRendezvousOptions options) : options_(std::move(options)) {}
  Result<World> next_round(int round, double timeout_s) override;

 private:
  StaticRendezvousOptions options_;
};

// A TCP port that is free on every local address right now (bind to port 0, read it, close).
// Another process may take it before it is used; the window is short.
Result<int> pick_free_port();

}  // namespace cairn::elastic
