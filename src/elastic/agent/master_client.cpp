// MasterClient: the generated gRPC client with the job token on every call, per-attempt deadlines
// and bounded retries with exponential backoff (and jitter) while the master is unavailable.
#include "cairn/elastic/master_client.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>

#include "cairn.grpc.pb.h"
#include "cairn/core/fs.h"
#include "cairn/core/net.h"
#include "elastic/deadline_impl.h"
#include "elastic/master/rpc_convert_impl.h"

namespace cairn::elastic {
namespace {

// A factor in [0.5, 1): spreads the retries of many agents after a master restart.
double jitter() {
  thread_local std::mt19937 gen{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.5, 1.0)(gen);
}

// gRPC reports a failed verification of the server's certificate as UNAVAILABLE with OpenSSL's
// reason in the message (gRPC 1.51).
bool tls_verification_failed(const grpc::Status& s) {
  const std::string& m = s.error_message();
  return m.find("Ssl handshake failed") != std::string::npos ||
         m.find("not in peer certificate") != std::string::npos ||
         m.find("certificate verify failed") != std::string::npos;
}

// Seconds to wait before retrying a call the master refused as busy: its retry hint for a client
// over its rate, a short pause when it had no thread free; -1 for any other outcome.
double busy_retry_after(const grpc::Status& s, const grpc::ClientContext& ctx) {
  if (s.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) return -1;
  const auto& md = ctx.GetServerTrailingMetadata();
  if (auto it = md.find(kRetryAfterMetadataKey); it != md.end()) {
    const std::string ms(it->second.data(), it->second.size());
    char* end = nullptr;
    const double v = std::strtod(ms.c_str(), &end);
    if (end != ms.c_str() && v >= 0) return std::min(v, 10000.0) / 1000;
  }
  if (s.error_message().find("Threadpool Exhausted") != std::string::npos) return 0.05;
  return -1;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> master_client_env(const MasterClientOptions& o) {
  std::vector<std::pair<std::string, std::string>> env = {{"CAIRN_MASTER_ADDR", o.address},
                                                          {"CAIRN_JOB_TOKEN", o.job_token}};
  if (!o.tls_ca_path.empty()) env.emplace_back("CAIRN_MASTER_TLS_CA", o.tls_ca_path);
  if (!o.tls_cert_path.empty()) env.emplace_back("CAIRN_MASTER_TLS_CERT", o.tls_cert_path);
  if (!o.tls_key_path.empty()) env.emplace_back("CAIRN_MASTER_TLS_KEY", o.tls_key_path);
  if (o.insecure) env.emplace_back("CAIRN_MASTER_INSECURE", "1");
  return env;
}

MasterClientOptions master_client_from_env() {
  auto get = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v ? v : "");
  };
  MasterClientOptions o;
  o.address = get("CAIRN_MASTER_ADDR");
  o.job_token = get("CAIRN_JOB_TOKEN");
  o.tls_ca_path = get("CAIRN_MASTER_TLS_CA");
  o.tls_cert_path = get("CAIRN_MASTER_TLS_CERT");
  o.tls_key_path = get("CAIRN_MASTER_TLS_KEY");
  o.insecure = get("CAIRN_MASTER_INSECURE") == "1";
  return o;
}

struct MasterClient::Impl {
  MasterClientOptions o;
  bool tls = false;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Master::Stub> rpc;

  // Calls `method` until it succeeds, fails with something other than UNAVAILABLE, or the
  // budget is spent. Each attempt first waits (within its deadline) for the channel to connect,
  // then calls fail-fast: the wait lets the channel's own reconnect backoff find a master that
  // just came up (with fail-fast calls alone, gRPC 1.51, an agent started 0.3 s before its
  // master joined 5 s after the master was up), and the fail-fast call still reports why an
  // unreachable master is unreachable (refused, DNS, TLS) instead of a bare deadline.
  template <class Req, class Resp>
  Status call(const char* what,
              grpc::Status (v1::Master::Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
              const Req& req, Resp* resp, double budget_s) {
    if (budget_s < 0) budget_s = o.retry_total_s;
    const auto give_up = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(budget_s));
    double backoff = o.initial_backoff_s;
    for (int attempt = 1;; ++attempt) {
      const double limit = std::max(0.01, std::min(o.call_timeout_s, seconds_until(give_up)));
      const auto deadline = std::chrono::system_clock::now() +
                            std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                std::chrono::duration<double>(limit));
      const auto attempt_start = Clock::now();
      // With TLS the wait is cut short when a connection attempt has failed, so that the call
      // below can report a certificate the handshake refused at once instead of after the
      // attempt's whole deadline.
      bool connected = false;
      for (;;) {
        const auto slice = tls ? std::min(deadline, std::chrono::system_clock::now() +
                                                        std::chrono::milliseconds(200))
                               : deadline;
        connected = channel->WaitForConnected(slice);
        if (connected || slice >= deadline ||
            channel->GetState(false) == GRPC_CHANNEL_TRANSIENT_FAILURE)
          break;
      }
      grpc::ClientContext ctx;
      ctx.AddMetadata(kJobTokenMetadataKey, o.job_token);
      ctx.set_deadline(
          connected ? deadline : std::chrono::system_clock::now() + std::chrono::milliseconds(100));
      resp->Clear();
      grpc::Status s = (rpc.get()->*method)(&ctx, req, resp);
      if (s.ok()) return Status::Ok();
      // The master's certificate failed this client's verification: a configuration error that
      // retrying cannot fix.
      if (s.error_code() == grpc::StatusCode::UNAVAILABLE && tls_verification_failed(s))
        return Status::FailedPrecondition(
            std::string(what) + ": the TLS handshake with the master at " + o.address +
            " failed: " + s.error_message() +
            " (is the master's certificate signed by the --tls-ca file, and does it name the "
            "host the master is reached at?)");
      // A busy master (this client over its rate, or no thread free) asks for a later retry.
      const double busy_pause = busy_retry_after(s, ctx);
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE && busy_pause < 0 &&
          !(!connected && s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED))
        return rpc::from_grpc(s, what, o.address);
      const double left = seconds_until(give_up);
      if (busy_pause >= 0 && left > 0) {
        std::this_thread::sleep_for(
            std::chrono::duration<double>(std::min(busy_pause * (2 - jitter()), left)));
        continue;
      }
      if (left <= 0)
        return Status::PeerLost(std::string(what) + ": master " + o.address + " unavailable for " +
                                std::to_string(budget_s) + " s (" + std::to_string(attempt) +
                                " attempts): " + s.error_message());
      // An attempt that spent its time waiting for a connection needs no further pause.
      const double waited = std::chrono::duration<double>(Clock::now() - attempt_start).count();
      const double pause = backoff * jitter() - waited;
      if (pause > 0)
        std::this_thread::sleep_for(std::chrono::duration<double>(std::min(pause, left)));
      backoff = std::min(backoff * 2, o.max_backoff_s);
    }
  }
};

Result<std::unique_ptr<MasterClient>> MasterClient::Open(const MasterClientOptions& options) {
  if (options.address.empty())
    return Status::InvalidArgument("the master address is empty (host:port)");
  if (options.job_token.empty())
    return Status::InvalidArgument("the job token is empty; the master rejects calls without it");
  if (!(options.call_timeout_s > 0) || !(options.retry_total_s >= 0) ||
      !(options.initial_backoff_s > 0) || !(options.max_backoff_s >= options.initial_backoff_s))
    return Status::InvalidArgument(
        "client timeouts: call_timeout_s > 0, retry_total_s >= 0, 0 < initial_backoff_s <= "
        "max_backoff_s");
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.tls_cert_path.empty() != options.tls_key_path.empty())
    return Status::InvalidArgument(
        "a client certificate needs both its certificate and its private key file (got only the " +
        std::string(options.tls_cert_path.empty() ? "key" : "certificate") + ")");
  if (!options.tls_ca_path.empty()) {
    auto roots = core::read_file(options.tls_ca_path);
    if (!roots.ok()) return roots.status().WithContext("TLS root certificates");
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = std::move(roots).value();
    if (!options.tls_cert_path.empty()) {
      auto cert = core::read_file(options.tls_cert_path);
      if (!cert.ok()) return cert.status().WithContext("TLS client certificate");
      auto key = core::read_file(options.tls_key_path);
      if (!key.ok()) return key.status().WithContext("TLS client private key");
      ssl.pem_cert_chain = std::move(cert).value();
      ssl.pem_private_key = std::move(key).value();
    }
    creds = grpc::SslCredentials(ssl);
  } else if (!options.tls_cert_path.empty()) {
    return Status::InvalidArgument(
        "a client certificate is for a TLS connection: give the master's CA certificate too");
  } else {
    const std::string host = core::host_of(options.address);
    if (!core::is_loopback_host(host)) {
      if (!options.insecure)
        return Status::InvalidArgument(
            "the job token would cross the network in plaintext to the master at " +
            options.address +
            ": give the CA certificate that signs the master's (--tls-ca), or --insecure to "
            "accept that");
      spdlog::warn(
          "plaintext connection to the master at {} (--insecure): the job token and the job's "
          "membership cross the network unencrypted",
          options.address);
    }
    creds = grpc::InsecureChannelCredentials();
  }
  // Reconnect about as fast as we retry, so a restarted master is found within one backoff.
  grpc::ChannelArguments args;
  const int initial_ms = std::max(10, int(options.initial_backoff_s * 1000));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, initial_ms);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, initial_ms);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              std::max(initial_ms, int(options.max_backoff_s * 1000)));
  auto impl = std::make_unique<Impl>();
  impl->o = options;
  impl->tls = !options.tls_ca_path.empty();
  args.SetMaxReceiveMessageSize(16 << 20);  // shard snapshots
  impl->channel = grpc::CreateCustomChannel(options.address, creds, args);
  impl->rpc = v1::Master::NewStub(impl->channel);
  return std::unique_ptr<MasterClient>(new MasterClient(std::move(impl)));
}

MasterClient::MasterClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MasterClient::~MasterClient() = default;

const std::string& MasterClient::address() const { return impl_->o.address; }

Result<JoinReply> MasterClient::join(const NodeInfo& node, int64_t last_round, double budget_s,
                                     bool only_self) {
  v1::JoinRequest req;
  rpc::to_proto(node, req.mutable_node());
  req.set_last_round(last_round);
  req.set_only_self(only_self);
  v1::JoinResponse resp;
  CAIRN_RETURN_IF_ERROR(impl_->call("Join", &v1::Master::Stub::Join, req, &resp, budget_s));
  JoinReply r;
  if (resp.has_round()) {
    r.round = rpc::from_proto(resp.round());
  } else {
    r.open_round = resp.waiting().open_round();
    r.candidates = resp.waiting().candidates();
    r.reason = resp.waiting().reason();
  }
  return r;
}

Result<HeartbeatReply> MasterClient::heartbeat(const std::string& node_id, int64_t round,
                                               int64_t last_step, double budget_s) {
  v1::HeartbeatRequest req;
  req.set_node_id(node_id);
  req.set_round(round);
  req.set_last_step(last_step);
  v1::HeartbeatResponse resp;
  CAIRN_RETURN_IF_ERROR(
      impl_->call("Heartbeat", &v1::Master::Stub::Heartbeat, req, &resp, budget_s));
  return HeartbeatReply{resp.rejoin(), resp.latest_round(), resp.reason()};
}

Result<bool> MasterClient::leave(const std::string& node_id, double budget_s) {
  v1::LeaveRequest req;
  req.set_node_id(node_id);
  v1::LeaveResponse resp;
  CAIRN_RETURN_IF_ERROR(impl_->call("Leave", &v1::Master::Stub::Leave, req, &resp, budget_s));
  return resp.was_known();
}

Status MasterClient::report_failure(const FailureReport& report, double budget_s) {
  v1::ReportFailureRequest req;
  rpc::to_proto(report, &req);
  v1::ReportFailureResponse resp;
  return impl_->call("ReportFailure", &v1::Master::Stub::ReportFailure, req, &resp, budget_s);
}

Result<MasterStatus> MasterClient::get_status(double budget_s, int page_size) {
  v1::GetStatusRequest req;
  req.set_page_size(page_size);
  v1::GetStatusResponse resp;
  CAIRN_RETURN_IF_ERROR(
      impl_->call("GetStatus", &v1::Master::Stub::GetStatus, req, &resp, budget_s));
  MasterStatus out = rpc::from_proto(resp);
  // The later pages: their nodes (the rest is the first page's; a page is a moment of its own).
  while (!out.rdzv.next_after.empty()) {
    req.set_after(out.rdzv.next_after);
    resp.Clear();
    CAIRN_RETURN_IF_ERROR(
        impl_->call("GetStatus", &v1::Master::Stub::GetStatus, req, &resp, budget_s));
    MasterStatus page = rpc::from_proto(resp);
    for (auto& n : page.rdzv.nodes) out.rdzv.nodes.push_back(std::move(n));
    out.rdzv.next_after = page.rdzv.next_after;
  }
  return out;
}

Result<CheckReply> MasterClient::check_node(const std::string& node_id, int64_t round,
                                            const std::optional<CheckReport>& report,
                                            double budget_s) {
  v1::CheckNodeRequest req;
  req.set_node_id(node_id);
  req.set_round(round);
  if (report) {
    req.set_check_id(report->check_id);
    req.set_check_round(report->check_round);
    v1::CheckResult* r = req.mutable_result();
    r->set_ok(report->result.ok);
    r->set_matmul_s(report->result.matmul_s);
    r->set_allreduce_s(report->result.allreduce_s);
    r->set_error(report->result.error.substr(0, kMaxDiagnosisLength));
  }
  v1::CheckNodeResponse resp;
  CAIRN_RETURN_IF_ERROR(
      impl_->call("CheckNode", &v1::Master::Stub::CheckNode, req, &resp, budget_s));
  CheckReply out;
  switch (resp.action()) {
    case v1::CheckNodeResponse::RUN:
      out.action = CheckAction::kRun;
      break;
    case v1::CheckNodeResponse::PROCEED:
      out.action = CheckAction::kProceed;
      break;
    case v1::CheckNodeResponse::EXCLUDED:
      out.action = CheckAction::kExcluded;
      break;
    case v1::CheckNodeResponse::REJOIN:
      out.action = CheckAction::kRejoin;
      break;
    default:
      out.action = CheckAction::kWait;
      break;
  }
  out.reason = resp.reason();
  out.assignment.check_id = resp.check_id();
  out.assignment.check_round = resp.check_round();
  out.assignment.group_rank = resp.group_rank();
  out.assignment.timeout_s = resp.timeout_s() > 0 ? resp.timeout_s() : 60;
  for (const auto& p : resp.group())
    out.assignment.group.push_back({p.node_id(), p.host(), p.store_port()});
  if (out.action == CheckAction::kRun &&
      (out.assignment.group_rank < 0 ||
       out.assignment.group_rank >= int(out.assignment.group.size())))
    return Status::Internal("the master's check assignment puts this node at group rank " +
                            std::to_string(out.assignment.group_rank) + " of " +
                            std::to_string(out.assignment.group.size()));
  return out;
}

Result<bool> MasterClient::create_dataset(const std::string& dataset, const ShardParams& params,
                                          double budget_s) {
  v1::CreateDatasetRequest req;
  req.set_dataset(dataset);
  rpc::to_proto(params, req.mutable_params());
  v1::CreateDatasetResponse resp;
  CAIRN_RETURN_IF_ERROR(
      impl_->call("CreateDataset", &v1::Master::Stub::CreateDataset, req, &resp, budget_s));
  return resp.created();
}

Result<ShardBatch> MasterClient::get_shards(const std::string& dataset, const std::string& worker,
                                            const std::vector<Shard>& done, int want,
                                            double budget_s, int64_t done_step,
                                            const StepQuota* quota) {
  v1::GetShardsRequest req;
  req.set_dataset(dataset);
  req.set_worker(worker);
  req.set_want(want);
  if (done_step > 0) req.set_done_step(done_step);
  if (quota) {
    req.set_step(quota->step);
    req.set_rank(quota->rank);
    req.set_world(quota->world);
    req.set_step_quota(quota->quota);
  }
  for (const Shard& s : done) rpc::to_proto(s, req.add_done());
  v1::GetShardsResponse resp;
  CAIRN_RETURN_IF_ERROR(
      impl_->call("GetShards", &v1::Master::Stub::GetShards, req, &resp, budget_s));
  ShardBatch b;
  for (const auto& s : resp.shards()) b.shards.push_back(rpc::from_proto(s));
  b.exhausted = resp.exhausted();
  b.step_full = resp.step_full();
  b.reason = resp.reason();
  const auto& st = resp.stats();
  b.stats.epoch = st.epoch();
  b.stats.todo = st.todo();
  b.stats.doing = st.doing();
  b.stats.done = st.done();
  b.stats.failed = st.failed();
  b.stats.done_samples = st.done_samples();
  b.stats.finished = st.finished();
  return b;
}

Status MasterClient::release_shards(const std::string& dataset, const std::string& worker,
                                    double budget_s) {
  v1::ReleaseShardsRequest req;
  req.set_dataset(dataset);
  req.set_worker(worker);
  v1::ReleaseShardsResponse resp;
  return impl_->call("ReleaseShards", &v1::Master::Stub::ReleaseShards, req, &resp, budget_s);
}

Result<nlohmann::json> MasterClient::shard_snapshot(const std::string& dataset, double budget_s,
                                                    int64_t max_step) {
  v1::ShardSnapshotRequest req;
  req.set_dataset(dataset);
  req.set_max_step(max_step);
  v1::ShardSnapshot resp;
  CAIRN_RETURN_IF_ERROR(
      impl_->call("GetShardSnapshot", &v1::Master::Stub::GetShardSnapshot, req, &resp, budget_s));
  return rpc::from_proto(resp);
}

Status MasterClient::restore_shards(const std::string& dataset, const nlohmann::json& snapshot,
                                    double budget_s) {
  v1::RestoreShardsRequest req;
  req.set_dataset(dataset);
  CAIRN_RETURN_IF_ERROR(rpc::to_proto(snapshot, req.mutable_snapshot()));
  v1::RestoreShardsResponse resp;
  return impl_->call("RestoreShards", &v1::Master::Stub::RestoreShards, req, &resp, budget_s);
}

Status MasterClient::extend_dataset(const std::string& dataset, int64_t num_samples, bool finished,
                                    double budget_s) {
  v1::ExtendDatasetRequest req;
  req.set_dataset(dataset);
  req.set_num_samples(num_samples);
  req.set_finished(finished);
  v1::ExtendDatasetResponse resp;
  return impl_->call("ExtendDataset", &v1::Master::Stub::ExtendDataset, req, &resp, budget_s);
}

}  // namespace cairn::elastic
