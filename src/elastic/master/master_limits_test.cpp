// A client that floods, sends garbage, holds connections open or sends oversized requests does
// not stop the master serving the others; a client over its rate is told when to retry, and
// MasterClient waits that out instead of failing.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "cairn.grpc.pb.h"
#include "cairn/elastic/master_client.h"
#include "cairn/elastic/master_server.h"
#include "elastic/master/master_testing_impl.h"
#include "elastic/testing_impl.h"

namespace cairn::elastic {
namespace {

using testing::CapturedLog;
using testing::Deadline;
using testing::ScratchDir;
using testing::wait_until;

constexpr char kToken[] = "limits-test-token";

MasterServerOptions options() {
  MasterServerOptions o;
  o.listen_address = "127.0.0.1:0";
  o.job_token = kToken;
  o.rdzv = {1, 2, 1, 5, 30};
  o.tick_interval_s = 0.05;
  o.shutdown_deadline_s = 0.5;
  return o;
}

MasterClientOptions client_options(const std::string& address) {
  MasterClientOptions o;
  o.address = address;
  o.job_token = kToken;
  o.call_timeout_s = 5;
  o.retry_total_s = 20;
  return o;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// A TCP connection to 127.0.0.1:port, or -1.
int connect_raw(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) return fd;
  if (fd >= 0) ::close(fd);
  return -1;
}

// True when the server closed `fd` (end of file or reset) within `timeout_s`.
bool closed_by_server(int fd, double timeout_s) {
  const auto t0 = std::chrono::steady_clock::now();
  char buf[4096];
  while (seconds_since(t0) < timeout_s) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return true;
  }
  return false;
}

TEST(MasterLimits, ABadTokenFloodIsRefusedQuietlyAndOthersAreServed) {
  Deadline guard(120);
  CapturedLog log;
  auto server = MasterServer::Start(options());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const std::string address = (*server)->address();
  std::atomic<bool> stop{false};
  std::atomic<int64_t> sent{0};
  std::vector<std::thread> flooders;
  for (int t = 0; t < 4; ++t)
    flooders.emplace_back([&] {
      auto rpc =
          v1::Master::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
      while (!stop) {
        grpc::ClientContext ctx;
        ctx.AddMetadata(kJobTokenMetadataKey, "guess");
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        v1::GetStatusResponse resp;
        rpc->GetStatus(&ctx, v1::GetStatusRequest(), &resp);
        sent.fetch_add(1);
      }
    });
  // Meanwhile a node joins and heartbeats: every call served, none waiting seconds.
  auto client = MasterClient::Open(client_options(address)).value();
  auto joined = client->join({"a", "127.0.0.1", 1, 1234, 1}, 0);
  ASSERT_TRUE(joined.ok()) << joined.status().ToString();
  double worst = 0;
  for (int i = 0; i < 40; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto beat = client->heartbeat("a", 1, i);
    worst = std::max(worst, seconds_since(t0));
    ASSERT_TRUE(beat.ok()) << beat.status().ToString();
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  stop = true;
  for (auto& t : flooders) t.join();
  EXPECT_LT(worst, 3.0) << "a heartbeat waited " << worst << " s behind the flood";
  EXPECT_GE((*server)->rejected_calls(), 100) << sent.load() << " bad calls sent";
  EXPECT_EQ((*server)->throttled_calls(), 0) << "refused calls count against no budget";
  // Thousands of refusals, one or two lines of log (one per address per 10 s).
  const std::string text = log.text();
  size_t lines = 0;
  for (size_t at = text.find("rejected GetStatus"); at != std::string::npos;
       at = text.find("rejected GetStatus", at + 1))
    ++lines;
  EXPECT_GE(lines, 1u);
  EXPECT_LE(lines, 2u) << text;
}

TEST(MasterLimits, AClientOverItsRateIsToldWhenToRetryAndIsServedThen) {
  Deadline guard(120);
  MasterServerOptions o = options();
  o.max_calls_per_s = 20;  // bursts of 40
  auto server = MasterServer::Start(o);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto rpc = v1::Master::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  int refused = 0;
  std::string hint;
  for (int i = 0; i < 100; ++i) {
    grpc::ClientContext ctx;
    ctx.AddMetadata(kJobTokenMetadataKey, kToken);
    v1::GetStatusResponse resp;
    grpc::Status s = rpc->GetStatus(&ctx, v1::GetStatusRequest(), &resp);
    if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++refused;
      auto it = ctx.GetServerTrailingMetadata().find(kRetryAfterMetadataKey);
      ASSERT_NE(it, ctx.GetServerTrailingMetadata().end()) << "no retry hint";
      hint = std::string(it->second.data(), it->second.size());
      EXPECT_NE(s.error_message().find("rate limit"), std::string::npos) << s.error_message();
    } else {
      EXPECT_TRUE(s.ok()) << s.error_message();
    }
  }
  EXPECT_GE(refused, 40) << "a burst of 100 calls against 40 allowed";
  EXPECT_GT(std::stoi(hint), 0);
  // MasterClient waits out the hints: 30 calls over the rate all succeed, at about the rate.
  auto client = MasterClient::Open(client_options((*server)->address())).value();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 30; ++i) {
    auto st = client->get_status();
    ASSERT_TRUE(st.ok()) << i << ": " << st.status().ToString();
  }
  EXPECT_GT(seconds_since(t0), 0.5) << "the calls were not held to the rate";
  EXPECT_GE((*server)->throttled_calls(), refused);
}

// A node whose heartbeats the master refuses (another client at its address floods it over the
// rate) is not dropped for them: a refused heartbeat still shows the node alive. The flood keeps
// the budget empty for 2 s, twice the heartbeat timeout.
TEST(MasterLimits, ANodeWhoseHeartbeatsAreRefusedForRateIsNotDropped) {
  Deadline guard(120);
  MasterServerOptions o = options();
  o.max_calls_per_s = 5;  // bursts of 10
  o.rdzv = {1, 1, 1, 0, /*heartbeat_timeout_s=*/1.0};
  o.tick_interval_s = 0.05;
  auto server = MasterServer::Start(o);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto rpc = v1::Master::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  auto call = [&](auto method, const auto& req, auto* resp) {
    grpc::ClientContext ctx;
    ctx.AddMetadata(kJobTokenMetadataKey, kToken);
    return ((*rpc).*method)(&ctx, req, resp);
  };
  v1::JoinRequest join;
  join.mutable_node()->set_node_id("a");
  join.mutable_node()->set_host("127.0.0.1");
  join.mutable_node()->set_nproc(1);
  join.mutable_node()->set_store_port(29500);
  v1::JoinResponse joined;
  ASSERT_TRUE(call(&v1::Master::Stub::Join, join, &joined).ok());
  ASSERT_TRUE(joined.has_round());
  v1::HeartbeatRequest hb;
  hb.set_node_id("a");
  hb.set_round(joined.round().number());
  int refused = 0, served = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (seconds_since(t0) < 2.0) {
    v1::GetStatusResponse st;  // the flood from the same address
    for (int i = 0; i < 20; ++i)
      (void)call(&v1::Master::Stub::GetStatus, v1::GetStatusRequest(), &st);
    v1::HeartbeatResponse resp;
    grpc::Status s = call(&v1::Master::Stub::Heartbeat, hb, &resp);
    if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) ++refused;
    if (s.ok()) ++served;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_GE(refused, 10) << "the flood did not keep the heartbeats over the rate";
  EXPECT_EQ((*server)->status().counters.nodes_dropped, 0)
      << served << " heartbeats served, " << refused << " refused";
  ASSERT_EQ((*server)->status().nodes.size(), 1u);
}

// Stopping the master under load (what SIGTERM does in `cairn master`) takes its shutdown
// deadline at most, plus a little: calls in flight do not hold it.
TEST(MasterLimits, AMasterUnderLoadStopsWithinItsShutdownDeadline) {
  Deadline guard(120);
  ScratchDir dir("master_stop_under_load");
  MasterServerOptions o = options();
  o.rdzv = {64, 64, 1, 0, 30};  // never full: every Join stays a poll
  o.journal_path = dir / "journal";
  o.shutdown_deadline_s = 1.0;
  o.max_calls_per_s = 1e9;
  auto server = MasterServer::Start(o);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const std::string address = (*server)->address();
  std::atomic<bool> stop{false};
  std::atomic<int64_t> served{0};
  std::vector<std::thread> load;
  for (int t = 0; t < 8; ++t)
    load.emplace_back([&, t] {
      auto rpc =
          v1::Master::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
      for (int i = 0; !stop.load(); ++i) {
        grpc::ClientContext ctx;
        ctx.AddMetadata(kJobTokenMetadataKey, kToken);
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        v1::JoinRequest req;
        req.mutable_node()->set_node_id("n" + std::to_string(t) + "-" + std::to_string(i % 7));
        req.mutable_node()->set_host("127.0.0.1");
        req.mutable_node()->set_nproc(1);
        req.mutable_node()->set_store_port(29500);
        req.set_only_self(true);
        v1::JoinResponse resp;
        if (rpc->Join(&ctx, req, &resp).ok()) served.fetch_add(1);
      }
    });
  ASSERT_TRUE(wait_until([&] { return served.load() > 500; }, 30)) << served.load();
  const auto t0 = std::chrono::steady_clock::now();
  server->reset();
  const double took = seconds_since(t0);
  stop.store(true);
  for (auto& th : load) th.join();
  EXPECT_LT(took, o.shutdown_deadline_s + 1.0) << "stopping took " << took << " s";
}

TEST(MasterLimits, SilentGarbledAndOversizedClientsDoNotStopTheMaster) {
  Deadline guard(120);
  MasterServerOptions o = options();
  o.handshake_timeout_s = 1;
  o.max_message_bytes = 64 << 10;
  auto server = MasterServer::Start(o);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const int port = (*server)->port();
  // 100 connections that never speak, 10 that send random bytes.
  std::vector<int> silent, garbled;
  for (int i = 0; i < 100; ++i) silent.push_back(connect_raw(port));
  std::mt19937 gen(7);
  for (int i = 0; i < 10; ++i) {
    const int fd = connect_raw(port);
    std::string junk(4096, '\0');
    for (char& c : junk) c = char(gen());
    if (fd >= 0) (void)::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL);
    garbled.push_back(fd);
  }
  ASSERT_EQ(std::count(silent.begin(), silent.end(), -1), 0);
  // An oversized request is refused by size, not served.
  auto rpc = v1::Master::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata(kJobTokenMetadataKey, kToken);
    v1::ReportFailureRequest big;
    big.set_node_id("a");
    big.set_signal(9);
    big.set_diagnosis(std::string(1 << 20, 'x'));
    v1::ReportFailureResponse resp;
    EXPECT_EQ(rpc->ReportFailure(&ctx, big, &resp).error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  // With all of them open, a node joins and beats.
  auto client = MasterClient::Open(client_options((*server)->address())).value();
  auto joined = client->join({"a", "127.0.0.1", 1, 1234, 1}, 0);
  ASSERT_TRUE(joined.ok()) << joined.status().ToString();
  ASSERT_TRUE(client->heartbeat("a", 1, 0).ok());
  // The garbled ones are closed at once, the silent ones when their handshake time is up.
  for (int fd : garbled) EXPECT_TRUE(closed_by_server(fd, 5)) << "a garbled connection stays open";
  int closed = 0;
  for (int fd : silent) closed += closed_by_server(fd, 5);
  EXPECT_EQ(closed, 100) << "silent connections left open past the handshake timeout";
  for (int fd : silent) ::close(fd);
  for (int fd : garbled) ::close(fd);
  ASSERT_TRUE(client->heartbeat("a", 1, 1).ok());
}

}  // namespace
}  // namespace cairn::elastic
