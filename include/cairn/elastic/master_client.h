// The agents' (and tools') side of the elastic master's gRPC service: typed calls with a
// deadline per attempt and retries with exponential backoff while the master is unavailable
// (restarting, not yet up), bounded in total time. No gRPC types in this header.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cairn/core/status.h"
#include "cairn/elastic/node_check.h"
#include "cairn/elastic/rdzv_state.h"
#include "cairn/elastic/shard_state.h"

namespace cairn::elastic {

inline constexpr char kJobTokenMetadataKey[] = "x-cairn-job-token";
// Trailing metadata of a call the master refused for its client's rate: milliseconds to wait.
inline constexpr char kRetryAfterMetadataKey[] = "x-cairn-retry-after-ms";

struct MasterClientOptions {
  std::string address;              // "host:port" of the master
  std::string job_token;            // REQUIRES: non-empty
  double call_timeout_s = 5.0;      // deadline of one attempt
  double retry_total_s = 30.0;      // give up retrying UNAVAILABLE after this long
  double initial_backoff_s = 0.05;  // first sleep between attempts; doubles up to max_backoff_s
  double max_backoff_s = 2.0;
  std::string tls_ca_path;  // PEM roots that sign the master's certificate; empty: plaintext
  // Both or neither: this client's PEM certificate chain and key, for a master that asks for
  // one (mutual TLS). REQUIRES: tls_ca_path.
  std::string tls_cert_path;
  std::string tls_key_path;
  // Plaintext to a master that is not on loopback sends the job token in the clear: refused
  // unless this is set (Open then logs a warning).
  bool insecure = false;
};

// How an agent hands its connection to the master on to its workers (the shard service of
// data.sharding: dynamic): CAIRN_MASTER_ADDR, CAIRN_JOB_TOKEN, CAIRN_MASTER_TLS_CA,
// CAIRN_MASTER_TLS_CERT, CAIRN_MASTER_TLS_KEY and CAIRN_MASTER_INSECURE=1; empty fields are left
// out. master_client_from_env reads them back (other fields at their defaults).
std::vector<std::pair<std::string, std::string>> master_client_env(const MasterClientOptions& o);
MasterClientOptions master_client_from_env();

struct JoinReply {
  std::optional<Round> round;  // set when this node is a member of a round newer than last_round
  int64_t open_round = 0;      // otherwise: the round being gathered (0: this node is a spare)
  int candidates = 0;
  std::string reason;
};

struct HeartbeatReply {
  bool rejoin = false;
  int64_t latest_round = 0;
  std::string reason;
};

// A node's answer to a check assignment.
struct CheckReport {
  std::string check_id;
  int check_round = 1;
  NodeCheckResult result;
};

// A training step's share of the dataset (see ShardState::acquire_for_step).
struct StepQuota {
  int64_t step = 1;  // >= 1
  int rank = 0;
  int world = 1;
  int quota = 1;  // shards per step over the world
};

// The shards one GetShards call handed out.
struct ShardBatch {
  bool step_full = false;  // with a StepQuota: the step has no shard left for this rank
  std::vector<Shard> shards;
  bool exhausted = false;  // nothing more will come
  std::string reason;      // why fewer than asked for
  ShardStats stats;        // the dataset's, after the call
};

struct MasterStatus {
  RdzvStatus rdzv;  // nodes' NodeStatus::silent_s as the master saw it
  int64_t rejected_calls = 0;
};

// Thread-safe: calls may be made from several threads at once.
class MasterClient {
 public:
  // Builds the channel; does not connect (the first call does). kInvalidArgument for bad
  // options, kIoError when the TLS roots cannot be read.
  static Result<std::unique_ptr<MasterClient>> Open(const MasterClientOptions& options);
  ~MasterClient();
  MasterClient(const MasterClient&) = delete;
  MasterClient& operator=(const MasterClient&) = delete;

  // Every call retries UNAVAILABLE for at most `budget_s` seconds in total (negative: the
  // options' retry_total_s). Errors: kPeerLost when the master stayed unreachable, kTimeout when
  // an attempt ran past its deadline, kInvalidArgument when the master rejected the request or
  // the job token (the message says which, with the master's reason), kFailedPrecondition when
  // the master refused in its current state, kInternal otherwise.
  // With `only_self` the round holds only this node's entry, with Round::num_members and
  // Round::nproc_differs set: a reply of constant size at any number of nodes.
  Result<JoinReply> join(const NodeInfo& node, int64_t last_round, double budget_s = -1,
                         bool only_self = false);
  Result<HeartbeatReply> heartbeat(const std::string& node_id, int64_t round, int64_t last_step,
                                   double budget_s = -1);
  // True when the master knew the node.
  Result<bool> leave(const std::string& node_id, double budget_s = -1);
  // Retried, like every call, only on UNAVAILABLE (the request did not get through).
  Status report_failure(const FailureReport& report, double budget_s = -1);
  // Every page of the status (`page_size` nodes per call; 0: the master's default), put together.
  Result<MasterStatus> get_status(double budget_s = -1, int page_size = 0);
  // The node check of `round` (see elastic/node_check.h); `report` answers the assignment the
  // previous reply gave (check id, check round, result).
  // The shard service (see elastic/shard_state.h). create_dataset is true when it created the
  // dataset, false when one with the same parameters existed.
  Result<bool> create_dataset(const std::string& dataset, const ShardParams& params,
                              double budget_s = -1);
  // `done` were trained by step `done_step` (-1: not given); with `quota`, the shards are for
  // its training step (ShardState::acquire_for_step).
  Result<ShardBatch> get_shards(const std::string& dataset, const std::string& worker,
                                const std::vector<Shard>& done, int want, double budget_s = -1,
                                int64_t done_step = -1, const StepQuota* quota = nullptr);
  Status release_shards(const std::string& dataset, const std::string& worker,
                        double budget_s = -1);
  // max_step > 0: shards completed by later steps count as not done.
  Result<nlohmann::json> shard_snapshot(const std::string& dataset, double budget_s = -1,
                                        int64_t max_step = 0);
  Status restore_shards(const std::string& dataset, const nlohmann::json& snapshot,
                        double budget_s = -1);
  Status extend_dataset(const std::string& dataset, int64_t num_samples, bool finished,
                        double budget_s = -1);
  Result<CheckReply> check_node(const std::string& node_id, int64_t round,
                                const std::optional<CheckReport>& report, double budget_s = -1);

  const std::string& address() const;

 private:
  struct Impl;
  explicit MasterClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::elastic
