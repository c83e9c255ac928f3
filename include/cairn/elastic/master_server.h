// The elastic job master (`cairn master`, or embedded in an agent): serves cairn.v1.Master over
// gRPC around an RdzvState, journals every durable change before answering (group-committed:
// concurrent calls share one write and fsync), and on Start replays
// the journal, so a restarted master resumes the job's membership and rounds. No gRPC types in
// this header.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "cairn/core/status.h"
#include "cairn/elastic/node_check.h"
#include "cairn/elastic/rdzv_state.h"

namespace cairn::elastic {

// GetStatus pages: the nodes per page by default, and the most a caller may ask for.
inline constexpr size_t kStatusPage = 1000;
inline constexpr int kMaxStatusPage = 10000;

struct MasterServerOptions {
  std::string listen_address = "0.0.0.0:0";  // "host:port"; port 0 picks a free one
  std::string job_token;                     // REQUIRES: non-empty; agents send the same
  std::string journal_path;  // empty: no journal (state is lost when the master stops)
  // Empty: none. Else the membership events (nodes joined, removed, excluded; rounds opened and
  // completed; failures reported) are appended to this events.jsonl as "master_<type>" rows,
  // the journal's records with their unix time, for the dashboard.
  std::string events_path;
  RdzvParams rdzv;
  // Check the nodes of every round that has a node not yet checked (same incarnation) before its
  // workers start: CheckNode (see elastic/node_check.h). Off: CheckNode answers "proceed".
  bool network_check = false;
  NodeCheckParams node_check;
  // Both or neither: serve TLS with this PEM certificate chain and private key.
  std::string tls_cert_path;
  std::string tls_key_path;
  // With TLS: every client must present a certificate these PEM roots sign (mutual TLS);
  // empty: clients are not asked for one (the job token still is).
  std::string tls_client_ca_path;
  // Serving plaintext on an address other machines reach lets job tokens cross the network in
  // the clear: refused unless this is set (the server then logs a warning). A loopback listen
  // address needs neither TLS nor this.
  bool insecure = false;
  double tick_interval_s = 0.5;      // how often heartbeat timeouts and waits are checked
  double shutdown_deadline_s = 2.0;  // in-flight calls get this long when the server stops
  // Larger requests are refused by gRPC. Shard snapshots (RestoreShards) are the largest:
  // about 3 bytes per done shard of an unfinished epoch.
  int max_message_bytes = 16 << 20;
  // Per client address: calls per second with the token (bursts of twice that); past it a call
  // is refused with RESOURCE_EXHAUSTED and a retry hint the client waits out. An agent makes
  // about 6 calls a second, each of its workers one or two per step (data.sharding: dynamic).
  double max_calls_per_s = 1000;
  int max_streams_per_connection = 32;  // concurrent calls on one connection
  double handshake_timeout_s = 10;      // a connection silent (or garbled) this long is closed
  double max_connection_idle_s = 600;   // a connection with no call this long is closed
};

// Owns the gRPC server and its threads; the destructor shuts them down (in-flight calls are
// cancelled after shutdown_deadline_s) and closes the journal. Thread-safe.
class MasterServer {
 public:
  // Validates the options, opens and replays the journal, binds and starts serving. Errors:
  // kInvalidArgument (options), kCorrupt (journal damaged before its last record), kIoError
  // (journal or TLS files), kUnsupported (a journal of another format version), kFailedPrecondition
  // (the address cannot be bound).
  static Result<std::unique_ptr<MasterServer>> Start(const MasterServerOptions& options);
  ~MasterServer();
  MasterServer(const MasterServer&) = delete;
  MasterServer& operator=(const MasterServer&) = delete;

  int port() const;             // the bound port
  std::string address() const;  // "host:port" with the bound port
  // A copy of the rendezvous state's status, as GetStatus returns it.
  RdzvStatus status() const;
  int64_t rejected_calls() const;   // calls refused for their token
  int64_t throttled_calls() const;  // calls refused for their client's rate
  // Records replayed from the journal on Start.
  int64_t replayed_records() const;

 private:
  struct Impl;
  explicit MasterServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::elastic
