// CheckCoordinator: the master's side of the node check without gRPC. It decides, for each
// round of the rendezvous, whether its nodes need a check (every node passes once per
// incarnation), runs one NodeCheck for the round, holds the world's growth meanwhile, applies
// the verdict to the rendezvous (exclusions) and forgets a check whose round ended under it.
// Not thread-safe: the server calls it under the rendezvous lock.
//
//   CheckNode(node, round) ──► poll ──► Rejoin (not the current round) | Proceed (no check
//   needed / verdict in) | Run assignment | Wait; each report is fed to the round's NodeCheck;
//   the ticker times out silent nodes; the verdict excludes through RdzvState::exclude.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "cairn/elastic/node_check.h"
#include "cairn/elastic/rdzv_state.h"

namespace cairn::elastic {

// One node's CheckNode call.
struct CheckQuery {
  std::string node_id;
  int64_t round = 0;     // the rendezvous round the node got from Join
  std::string check_id;  // of the assignment `result` answers ("" with none)
  int check_round = 0;   // of the assignment `result` answers
  std::optional<NodeCheckResult> result;
};

class CheckCoordinator {
 public:
  // enabled false: every node proceeds at once (the master runs without --network-check).
  CheckCoordinator(bool enabled, NodeCheckParams params) : enabled_(enabled), params_(params) {}

  CheckReply poll(RdzvState& state, const CheckQuery& query, double now);
  // Times out silent nodes and applies a verdict once there is one.
  void tick(RdzvState& state, double now);

  // The check under way or decided for the current round (none when no check was needed).
  const NodeCheck* check() const { return check_ ? &*check_ : nullptr; }

 private:
  void drop_stale(RdzvState& state, double now);
  void start(RdzvState& state, double now);
  void apply_verdict(RdzvState& state, double now);

  bool enabled_;
  NodeCheckParams params_;
  std::optional<NodeCheck> check_;  // of round check_for_round_
  int64_t check_for_round_ = 0;
  bool verdict_applied_ = false;
  int64_t check_serial_ = 0;
  std::map<std::string, uint64_t> checked_;  // node id -> incarnation that passed
};

}  // namespace cairn::elastic
