// The elastic master's rendezvous and membership logic as a pure state machine: which nodes are
// alive, which round is being gathered, when it completes and who gets which rank. No clock, no
// I/O: every call takes `now` (seconds on any monotonic scale) and every change of durable state
// is also emitted as an RdzvEvent, which the master journals and replays after a restart.
//
// Rounds. Round numbers start at 1 (0 = none completed yet). A round is "open" while it is being
// gathered; the nodes that called join() since it opened are its candidates. It completes at
// once when the candidates fill the largest usable world, or with at least min_nodes once wait_s
// has passed since that many were there and no live member of the previous round is still on
// its way back (those are waited for up to heartbeat_timeout_s after the round opened). The
// participant count is rounded down to a multiple of node_unit; surplus candidates wait for the
// next round. A completed round stays the job's world until a member is dropped (silent past
// heartbeat_timeout_s) or leaves, a member asks for a new round (it joins again: its workers
// restarted), or waiting nodes would let the world grow; then the next round opens and heartbeat()
// tells the other live nodes to join it.
//
// Ranks are stable: members of the previous round that joined again keep their relative order and
// come first, the other candidates follow sorted by node id.
#pragma once

#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/elastic/exit_status.h"

namespace cairn::elastic {

struct RdzvParams {
  int min_nodes = 1;                  // a round may complete with this many nodes after wait_s
  int max_nodes = 1;                  // a round completes at once with this many
  int node_unit = 1;                  // participant counts are multiples of this
  double wait_s = 10.0;               // wait after reaching min_nodes for more nodes to come
  double heartbeat_timeout_s = 30.0;  // a node silent this long is dropped
  // A node whose workers failed this many times (crashes, hangs, allocation failures, errors;
  // not a lost peer or a restarted master, a kill from outside or a user error; a hung worker
  // that waits for others in a collective is a lost peer) is faulty: dropped and refused from
  // then on. 0 = never.
  int max_node_failures = 3;
};

// Whether a failure diagnosis ("<kind>: <reason>", see elastic/diagnosis.h) counts against the
// node it happened on.
bool failure_counts_against_node(const std::string& diagnosis);

// kInvalidArgument naming the field when params cannot work (e.g. no multiple of node_unit
// between min_nodes and max_nodes).
Status validate_rdzv_params(const RdzvParams& params);

inline constexpr size_t kMaxNodeIdLength = 128;
inline constexpr size_t kMaxHostLength = 255;
inline constexpr size_t kMaxDiagnosisLength = 4096;  // longer diagnoses are truncated
inline constexpr size_t kRecentFailures = 32;        // failure reports kept for status

// What a node says about itself when it joins.
struct NodeInfo {
  std::string node_id;       // stable across agent restarts; ranks are sorted by it
  std::string host;          // address other nodes reach this node at
  int nproc = 1;             // workers on this node
  int store_port = 0;        // free port for the c10d store should this node get node rank 0
  uint64_t incarnation = 0;  // differs after the node's agent restarted

  bool operator==(const NodeInfo& o) const {
    return node_id == o.node_id && host == o.host && nproc == o.nproc &&
           store_port == o.store_port && incarnation == o.incarnation;
  }
  bool operator!=(const NodeInfo& o) const { return !(*this == o); }
};

// kInvalidArgument naming the field: empty or over-long id/host, control characters, nproc or
// store_port out of range.
Status validate_node_info(const NodeInfo& node);

struct RoundMember {
  std::string node_id;
  std::string host;
  int nproc = 1;
  int node_rank = 0;  // index in the round
  int rank_base = 0;  // global rank of this node's local rank 0 (sum of nproc before it)
};

// A completed round: the world every member's workers join.
struct Round {
  int64_t number = 0;                // 0: no round completed yet
  std::vector<RoundMember> members;  // in node-rank order
  int world_size = 0;                // sum of the members' nproc
  std::string master_addr;           // host of node rank 0, which serves the c10d store
  int master_port = 0;               // the store_port node rank 0 joined with
  // Set by the master in a reply holding only the asking node's entry (`members` is then that
  // entry alone): the number of members, and in words how two members' nproc differ (empty
  // when every member runs the same number of workers).
  int num_members = 0;
  std::string nproc_differs;

  // The number of members, whether `members` holds them all or only one.
  int size() const { return num_members > 0 ? num_members : int(members.size()); }

  // The member with `node_id`, or nullptr.
  const RoundMember* find(const std::string& node_id) const;
};

struct FailureReport {
  std::string node_id;
  int rank = -1;  // global rank of the failed worker; -1 for the node as a whole
  ExitStatus exit;
  std::string diagnosis;
};

struct RdzvCounters {
  int64_t nodes_joined = 0;  // first joins of a node id (again after removal)
  int64_t nodes_left = 0;
  int64_t nodes_dropped = 0;  // heartbeat timeouts
  int64_t rounds_completed = 0;
  int64_t restarts_requested = 0;  // rounds opened because a member joined again
  int64_t failures_reported = 0;
};

enum class RemoveReason { kLeft, kDropped, kExcluded };  // dropped: heartbeat timeout

// Durable changes, in the order they happened. Replaying them into a fresh RdzvState gives back
// the nodes, the completed round, whether a round is open, the counters and recent failures.
struct NodeJoined {  // registered or updated, and a candidate of the next round
  NodeInfo node;
};
struct NodeRemoved {
  std::string node_id;
  RemoveReason reason = RemoveReason::kLeft;
};
struct RoundOpened {
  int64_t number = 0;    // always the completed round's number + 1
  bool restart = false;  // a member joined again (its workers restarted)
  std::string reason;
};
struct RoundCompleted {
  Round round;
};
struct FailureReported {
  FailureReport report;
};
struct NodeExcluded {  // refused from now on (e.g. it failed the node check); removed if known
  std::string node_id;
  std::string reason;
};
using RdzvEvent = std::variant<NodeJoined, NodeRemoved, RoundOpened, RoundCompleted,
                               FailureReported, NodeExcluded>;

struct JoinResult {
  // Set when the node is a member of a completed round it has not seen: the state's own copy,
  // shared (a join copies nothing of the round's size).
  std::shared_ptr<const Round> round;
  int64_t open_round = 0;  // the round being gathered (0 if none) while waiting
  int candidates = 0;      // nodes joined for it so far
  std::string reason;      // why the node waits
};

struct HeartbeatResult {
  bool rejoin = false;       // stop the workers and join: the node's round is over
  int64_t latest_round = 0;  // number of the latest completed round
  std::string reason;        // why rejoin
};

struct NodeStatus {
  NodeInfo node;
  double silent_s = 0;     // since the last join or heartbeat
  int64_t last_step = -1;  // as last reported by heartbeat
  bool in_round = false;   // a member of the latest completed round
  bool candidate = false;  // joined and waiting for the next round
};

struct RdzvStatus {
  RdzvParams params;
  Round round;  // latest completed round (number 0 if none)
  bool open = false;
  int64_t open_round = 0;
  std::string open_reason;
  std::vector<NodeStatus> nodes;  // sorted by node id
  std::string next_after;         // a paged status: the `after` of the next page ("": the last)
  RdzvCounters counters;
  std::vector<FailureReport> recent_failures;  // oldest first
};

// Thread-compatible; the master serializes calls. Every mutating call appends the events it
// caused to an internal list that take_events() hands out (the caller journals them).
class RdzvState {
 public:
  // REQUIRES: validate_rdzv_params(params).ok().
  explicit RdzvState(RdzvParams params);

  // `node` asks for a round newer than `last_round` (0: it has seen none). Counts as a heartbeat.
  // Errors: kInvalidArgument for bad node info, kFailedPrecondition when too many nodes are
  // known (max_known_nodes()).
  Result<JoinResult> join(const NodeInfo& node, int64_t last_round, double now);
  // `round` is the round the node's workers run (0 if none), `step` its progress (-1 unknown).
  HeartbeatResult heartbeat(const std::string& node_id, int64_t round, int64_t step, double now);
  // Removes the node; false if unknown. A member leaving opens the next round.
  bool leave(const std::string& node_id, double now);
  // Drops nodes silent for longer than heartbeat_timeout_s and completes the open round when it
  // may. Call regularly (a fraction of wait_s and of the heartbeat timeout). The time the master
  // stalled (add_stall) since a node was last seen does not count as the node's silence.
  void tick(double now);
  // A call from the node that the master refused (it was busy) still shows it alive: its silence
  // starts again. False (and nothing changes) when the node is not known. Not journaled.
  bool touch(const std::string& node_id, double now);
  // The master could not serve for `seconds` (its ticker ran that late): time the nodes could
  // not be heard in, which heartbeat timeouts do not count. Not journaled.
  void add_stall(double seconds);
  void report_failure(const FailureReport& report);
  // Excludes the node for good (its joins are refused with `reason`); a member's exclusion opens
  // the next round.
  void exclude(const std::string& node_id, const std::string& reason, double now);
  // While held, waiting nodes do not open a round to grow the world (the master holds growth
  // while the current round's nodes are being checked); releasing opens it if they would.
  // Not journaled.
  void hold_growth(bool hold, double now);
  // The node's latest info, or nullptr when it is not known.
  const NodeInfo* node(const std::string& node_id) const;

  // Applies a journaled event. Nodes restored this way count as seen at `now`. kCorrupt when the
  // event does not fit the state (e.g. a round number out of sequence).
  Status replay(const RdzvEvent& event, double now);
  // Events caused since the last call, oldest first.
  std::vector<RdzvEvent> take_events();

  const Round& round() const { return round_; }
  // The member `node_id` of the latest completed round, or nullptr. O(1).
  const RoundMember* member(const std::string& node_id) const;
  // How two members of the latest round differ in nproc, in words; empty if none do.
  const std::string& nproc_differs() const { return nproc_differs_; }
  bool open() const { return open_; }
  int64_t open_round() const { return open_ ? round_.number + 1 : 0; }
  const RdzvCounters& counters() const { return counters_; }
  const RdzvParams& params() const { return params_; }
  // The status with the nodes whose ids sort after `after` ("": from the first), at most
  // `limit` of them; next_after is set when more follow. The round's members come only with the
  // first page (after ""): later pages cost O(limit + log N).
  RdzvStatus status(double now, const std::string& after = "",
                    size_t limit = std::numeric_limits<size_t>::max()) const;
  // Joins of unknown nodes are refused beyond this many known nodes.
  size_t max_known_nodes() const;

 private:
  struct Node {
    NodeInfo info;
    double last_seen = 0;
    int64_t last_step = -1;
    bool candidate = false;
    double stalled_at_seen = 0;  // stalled_s_ when last seen
  };

  void seen(Node& n, double now);
  void emit(RdzvEvent event, double now);
  void apply(const RdzvEvent& event, double now);
  void open_next(const std::string& reason, bool restart, double now);
  void remove(const std::string& node_id, RemoveReason reason, double now);
  std::vector<const Node*> ordered_candidates() const;
  int usable(int count) const;
  void try_complete(double now);
  void maybe_grow(double now);
  bool is_member(const std::string& node_id) const { return member_index_.count(node_id) > 0; }
  int candidate_count() const { return candidates_; }

  RdzvParams params_;
  std::map<std::string, Node> nodes_;
  Round round_;
  std::shared_ptr<const Round> shared_round_;  // round_, for join replies
  // Kept with the round and the nodes so that a join, a heartbeat or an incomplete round's
  // check costs O(log N), not O(N): the members' positions in round_, the nodes that are
  // candidates, and the members known but not (yet) candidates of the open round.
  std::unordered_map<std::string, size_t> member_index_;
  std::string nproc_differs_;
  int candidates_ = 0;
  double stalled_s_ = 0;  // the master's stalls so far (add_stall)
  int members_away_ = 0;
  bool open_ = true;  // round 1 is being gathered from the start
  std::string open_reason_ = "first round";
  bool hold_growth_ = false;
  std::optional<double> min_since_;   // when the candidates first reached min_nodes
  std::optional<double> open_since_;  // when the open round opened (none: the first round)
  RdzvCounters counters_;
  std::deque<FailureReport> recent_failures_;
  std::map<std::string, int> node_failures_;            // failures that count, per node id
  std::set<std::string> faulty_;                        // excluded for good
  std::map<std::string, std::string> excluded_reason_;  // the faulty excluded by exclude()
  std::vector<RdzvEvent> events_;
};

}  // namespace cairn::elastic
