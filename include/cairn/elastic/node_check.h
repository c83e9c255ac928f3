// The node check (`--network-check`) as a pure state machine the master runs for one round: which
// nodes check together, what their results mean, who is excluded and who is a straggler. No
// clock, no I/O: every call takes `now`.
//
//   round completes ──► NodeCheck(members) ── check round 1: groups of two in node-rank order
//                       (an odd node out checks alone: its network is not verified)
//   each node: poll() ─► kRun(group) ─► its agent runs `cairn node-check` (a matmul, then an
//                        all-reduce with its group) ─► poll(result) ─► kWait until all reported
//   nobody failed ──► kProceed (stragglers reported, or excluded with exclude_stragglers)
//   some failed ──► check round 2: each node that did not pass is grouped with a node that did
//                   (never its round-1 partner), else with another that did not
//   after round 2: a node that passed neither round is excluded ──► kExcluded for it, the
//                   master drops it and opens the next round (kRejoin for the others) — unless
//                   no node passed at all: then the fault cannot be attributed, the verdict is
//                   inconclusive (logged with every failure) and nobody is excluded
//
// "Passed" means the check succeeded in a group of at least two nodes (a one-node job passes
// alone). A straggler is a passed node whose check time (matmul + all-reduce) exceeds
// straggler_ratio times the median of the other passed nodes' times; comparing with the others
// (not with a median that includes the node itself) is what lets two nodes find one slow node.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cairn::elastic {

struct NodeCheckParams {
  bool exclude_stragglers = false;
  double straggler_ratio = 2.0;  // slower than this times the others' median: a straggler
  double timeout_s = 60.0;       // a node's check process; a node silent past it has failed
};

// One node's outcome of one check round, as its agent measured it.
struct NodeCheckResult {
  bool ok = false;
  double matmul_s = 0;     // the fixed matmul workload
  double allreduce_s = 0;  // the all-reduce with the group, after a barrier
  std::string error;       // when !ok: what failed

  double elapsed() const { return matmul_s + allreduce_s; }
};

struct CheckMember {
  std::string node_id;
  std::string host;
  int store_port = 0;  // the port the node's group leader serves the check's store on
};

// What one node runs: one group of one check round.
struct CheckAssignment {
  std::string check_id;            // identifies the check (a new one per round of the rendezvous)
  int check_round = 1;             // 1 or 2
  std::vector<CheckMember> group;  // group rank order; group[0] serves the store
  int group_rank = 0;              // this node's index in `group`
  double timeout_s = 60;           // the longest this node's check may take (then it failed)
};

enum class CheckAction {
  kRun,       // run `assignment`, then poll with the result
  kWait,      // others are still checking: poll again
  kProceed,   // the check is over and this node is in: start the workers
  kExcluded,  // the check excluded this node
  kRejoin,    // the check excluded other nodes: join the next round
};

struct CheckReply {
  CheckAction action = CheckAction::kWait;
  CheckAssignment assignment;  // for kRun
  std::string reason;          // for kWait, kExcluded, kRejoin: why
};

struct NodeCheckVerdict {
  std::map<std::string, std::string> excluded;  // node id -> why
  std::vector<std::string> stragglers;          // passed nodes slower than the others
  std::map<std::string, double> elapsed_s;      // passed nodes' check time
  bool inconclusive = false;          // no node passed: nobody can be blamed, nobody is excluded
  std::vector<std::string> failures;  // when inconclusive: each node and why it failed
  std::string summary;                // one line for the log
};

class NodeCheck {
 public:
  // `members` in node-rank order; `check_id` distinguishes this check from earlier ones.
  NodeCheck(std::vector<CheckMember> members, std::string check_id, NodeCheckParams params,
            double now);

  // A poll by `node_id`; `report` is the result of the check round it last ran (its number and
  // the outcome). Unknown nodes get kExcluded with a reason.
  CheckReply poll(const std::string& node_id, std::optional<std::pair<int, NodeCheckResult>> report,
                  double now);
  // Fails the nodes of the current check round that did not report within the timeout.
  void tick(double now);

  bool done() const { return verdict_.has_value(); }
  // REQUIRES: done().
  const NodeCheckVerdict& verdict() const { return *verdict_; }
  const std::string& check_id() const { return check_id_; }
  int check_round() const { return round_; }

 private:
  struct Node {
    CheckMember member;
    std::optional<NodeCheckResult> result[2];  // per check round
    bool passed[2] = {false, false};
    int group[2] = {-1, -1};  // index into groups_[round]
  };

  void plan_round1();
  void plan_round2();
  void maybe_advance(double now);
  void decide();
  CheckAssignment assignment_for(const std::string& node_id) const;

  std::vector<CheckMember> members_;
  std::string check_id_;
  NodeCheckParams params_;
  std::map<std::string, Node> nodes_;
  std::vector<std::vector<std::string>> groups_[2];
  int round_ = 1;
  double round_start_ = 0;
  std::optional<NodeCheckVerdict> verdict_;
};

const char* check_action_name(CheckAction action);

}  // namespace cairn::elastic
