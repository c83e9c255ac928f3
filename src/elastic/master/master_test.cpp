// Tests of the master over real gRPC on 127.0.0.1 (server, client and MasterRendezvous in one
// process): shared worlds with stable ranks, the job token, dropped nodes, a restarted master,
// garbage on the port, TLS. Every wait is bounded.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>

#include "cairn.grpc.pb.h"
#include "cairn/core/json_lines.h"
#include "cairn/elastic/master_client.h"
#include "cairn/elastic/master_rendezvous.h"
#include "cairn/elastic/master_server.h"
#include "cairn/elastic/shard_client.h"
#include "elastic/master/master_testing_impl.h"
#include "elastic/testing_impl.h"

namespace cairn::elastic {
namespace {

using testing::CapturedLog;
using testing::Deadline;
using testing::ScratchDir;
using testing::wait_until;

constexpr char kToken[] = "s3cret-job-token";

MasterServerOptions server_options(RdzvParams p, const std::string& journal = "") {
  MasterServerOptions o;
  o.listen_address = "127.0.0.1:0";
  o.job_token = kToken;
  o.journal_path = journal;
  o.rdzv = p;
  o.tick_interval_s = 0.02;
  o.shutdown_deadline_s = 0.5;
  return o;
}

std::unique_ptr<MasterServer> start(const MasterServerOptions& o) {
  auto s = MasterServer::Start(o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

MasterClientOptions client_options(const std::string& address, double retry_s = 2) {
  MasterClientOptions o;
  o.address = address;
  o.job_token = kToken;
  o.call_timeout_s = 2;
  o.retry_total_s = retry_s;
  o.initial_backoff_s = 0.02;
  o.max_backoff_s = 0.2;
  return o;
}

std::unique_ptr<MasterRendezvous> node(const MasterServer& s, const std::string& id,
                                       int nproc = 1) {
  MasterRendezvousOptions o;
  o.client = client_options(s.address());
  o.node_id = id;
  o.host = "127.0.0.1";
  o.nproc_per_node = nproc;
  o.run_id = "job";
  o.poll_interval_s = 0.02;
  o.heartbeat_interval_s = 0.05;
  auto r = MasterRendezvous::Open(o);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(r).value() : nullptr;
}

// Every node's next_round(round) at once; the worlds in the nodes' order.
std::vector<World> rendezvous(const std::vector<MasterRendezvous*>& nodes, int round) {
  std::vector<std::future<Result<World>>> futures;
  for (auto* n : nodes)
    futures.push_back(
        std::async(std::launch::async, [n, round] { return n->next_round(round, 10); }));
  std::vector<World> worlds;
  for (auto& f : futures) {
    Result<World> w = f.get();
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    worlds.push_back(w.ok() ? *w : World{});
  }
  return worlds;
}

TEST(MasterServer, TwoNodesShareOneWorld) {
  Deadline guard(60);
  auto server = start(server_options({2, 2, 1, 0, 5}));
  ASSERT_TRUE(server);
  EXPECT_GT(server->port(), 0);
  auto b = node(*server, "node-b", 2), a = node(*server, "node-a", 2);
  auto w = rendezvous({b.get(), a.get()}, 0);
  EXPECT_EQ(w[0].num_nodes, 2);
  EXPECT_EQ(w[0].node_rank, 1);  // sorted by node id
  EXPECT_EQ(w[1].node_rank, 0);
  EXPECT_EQ(w[0].world_size(), 4);
  EXPECT_EQ(w[1].global_rank(1), 1);
  EXPECT_EQ(w[0].global_rank(0), 2);
  EXPECT_EQ(w[0].master_addr, "127.0.0.1");
  EXPECT_EQ(w[0].master_port, w[1].master_port);
  EXPECT_GT(w[0].master_port, 0);
  EXPECT_EQ(w[0].run_id, "job");
  EXPECT_EQ(w[0].round, 0);
  EXPECT_EQ(a->master_round(), 1);
  RdzvStatus st = server->status();
  EXPECT_EQ(st.round.number, 1);
  EXPECT_EQ(st.counters.rounds_completed, 1);
}

TEST(MasterServer, ThreeNodesGetStableRanks) {
  Deadline guard(60);
  auto server = start(server_options({3, 3, 1, 0, 5}));
  ASSERT_TRUE(server);
  auto n3 = node(*server, "n3"), n1 = node(*server, "n1"), n2 = node(*server, "n2");
  auto w = rendezvous({n3.get(), n1.get(), n2.get()}, 0);
  EXPECT_EQ(w[0].node_rank, 2);
  EXPECT_EQ(w[1].node_rank, 0);
  EXPECT_EQ(w[2].node_rank, 1);
  for (const auto& x : w) {
    EXPECT_EQ(x.num_nodes, 3);
    EXPECT_EQ(x.master_port, w[0].master_port);
  }
  // n3 restarts its workers: a new round, same ranks for everyone.
  auto again = std::async(std::launch::async, [&] { return n3->next_round(1, 10); });
  ASSERT_TRUE(wait_until([&] { return n1->rejoin_requested() && n2->rejoin_requested(); }, 5));
  auto w2 = rendezvous({n1.get(), n2.get()}, 1);
  auto w3 = again.get();
  ASSERT_TRUE(w3.ok()) << w3.status().ToString();
  EXPECT_EQ(w3->node_rank, 2);
  EXPECT_EQ(w2[0].node_rank, 0);
  EXPECT_EQ(w2[1].node_rank, 1);
  EXPECT_EQ(n1->master_round(), 2);
  EXPECT_FALSE(n1->rejoin_requested());
  EXPECT_EQ(server->status().counters.restarts_requested, 1);
}

TEST(MasterServer, MissingOrWrongTokenIsRejectedAndChangesNothing) {
  Deadline guard(60);
  auto server = start(server_options({1, 2, 1, 5, 5}));
  ASSERT_TRUE(server);
  auto rpc = v1::Master::NewStub(
      grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials()));
  v1::JoinRequest req;
  req.mutable_node()->set_node_id("intruder");
  req.mutable_node()->set_host("127.0.0.1");
  req.mutable_node()->set_nproc(1);
  req.mutable_node()->set_store_port(1234);
  CapturedLog log;
  for (const char* token : {"", "wrong-token", "s3cret-job-toke", "s3cret-job-tokenX"}) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (*token) ctx.AddMetadata(kJobTokenMetadataKey, token);
    v1::JoinResponse resp;
    grpc::Status s = rpc->Join(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << token;
  }
  EXPECT_EQ(server->rejected_calls(), 4);
  EXPECT_TRUE(server->status().nodes.empty());
  EXPECT_EQ(server->status().counters.nodes_joined, 0);
  EXPECT_NE(log.text().find("rejected Join from ipv4:127.0.0.1"), std::string::npos) << log.text();
  EXPECT_NE(log.text().find("no job token"), std::string::npos);
  // One line per address per 10 s: the next three refusals are counted, not logged, and never
  // with the tokens they carried.
  EXPECT_EQ(log.text().find("wrong job token"), std::string::npos) << log.text();
  EXPECT_EQ(log.text().find("wrong-token"), std::string::npos) << log.text();

  MasterClientOptions o = client_options(server->address());
  o.job_token = "not-the-token";
  auto client = MasterClient::Open(o).value();
  auto st = client->get_status();
  EXPECT_EQ(st.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.status().message().find("job token"), std::string::npos) << st.status().ToString();
  // The right token works.
  auto good = MasterClient::Open(client_options(server->address())).value();
  auto ok = good->get_status();
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->rejected_calls, 5);
}

TEST(MasterServer, BadRequestsAreRejectedWithTheReason) {
  Deadline guard(60);
  auto server = start(server_options({1, 2, 1, 5, 5}));
  ASSERT_TRUE(server);
  auto client = MasterClient::Open(client_options(server->address())).value();
  auto r = client->join({"", "127.0.0.1", 1, 1234, 1}, 0);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("node id is empty"), std::string::npos)
      << r.status().ToString();
  auto p = client->join({"a", "127.0.0.1", 1, 0, 1}, 0);
  EXPECT_NE(p.status().message().find("store_port"), std::string::npos);
  EXPECT_TRUE(server->status().nodes.empty());
}

TEST(MasterServer, SilentNodeIsDroppedAndTheSurvivorsGetASmallerWorld) {
  Deadline guard(60);
  ScratchDir dir("master-events");
  MasterServerOptions so = server_options({2, 3, 1, 0.5, 0.6});
  so.events_path = dir.path() + "/events.jsonl";  // membership for the dashboard
  auto server = start(so);
  ASSERT_TRUE(server);
  auto a = node(*server, "a"), b = node(*server, "b"), c = node(*server, "c");
  auto w = rendezvous({a.get(), b.get(), c.get()}, 0);
  ASSERT_EQ(w[0].num_nodes, 3);
  c.reset();  // c's agent is gone: no more heartbeats
  ASSERT_TRUE(wait_until([&] { return a->rejoin_requested() && b->rejoin_requested(); }, 10));
  EXPECT_NE(a->rejoin_reason().find("member c stopped heartbeating"), std::string::npos)
      << a->rejoin_reason();
  auto w2 = rendezvous({b.get(), a.get()}, 1);
  EXPECT_EQ(w2[0].num_nodes, 2);
  EXPECT_EQ(w2[1].node_rank, 0);
  EXPECT_EQ(w2[0].node_rank, 1);
  RdzvStatus st = server->status();
  EXPECT_EQ(st.round.number, 2);
  EXPECT_EQ(st.counters.nodes_dropped, 1);
  EXPECT_EQ(st.nodes.size(), 2u);
  // The events file tells the same story in order, each row with its time.
  std::vector<std::string> kinds;
  std::vector<int> worlds;
  std::set<std::string> joined;
  std::string dropped;
  for (const nlohmann::json& e : core::read_json_lines(so.events_path)) {
    EXPECT_GT(e.value("time", 0.0), 1.6e9) << e.dump();
    kinds.push_back(e.value("event", ""));
    if (kinds.back() == "master_round_completed") worlds.push_back(e["round"]["world_size"]);
    if (kinds.back() == "master_node_joined") joined.insert(e["node"].value("id", ""));
    if (kinds.back() == "master_node_removed")
      dropped = e.value("node_id", "") + ":" + e.value("reason", "");
  }
  ASSERT_FALSE(kinds.empty());
  EXPECT_EQ(kinds.front(), "master_start");
  EXPECT_EQ(joined, (std::set<std::string>{"a", "b", "c"})) << "a and b joined twice";
  EXPECT_EQ(worlds, (std::vector<int>{3, 2}));
  EXPECT_EQ(dropped, "c:dropped");
}

TEST(MasterServer, RestartedMasterResumesFromItsJournal) {
  Deadline guard(60);
  ScratchDir dir("master");
  MasterServerOptions o = server_options({2, 2, 1, 0, 3}, dir / "master.journal");
  auto server = start(o);
  ASSERT_TRUE(server);
  const std::string address = server->address();
  auto a = node(*server, "a"), b = node(*server, "b");
  auto w = rendezvous({a.get(), b.get()}, 0);
  ASSERT_EQ(w[0].num_nodes, 2);
  const RdzvStatus before = server->status();

  server.reset();  // the master dies; a and b keep heartbeating into the void
  auto client = MasterClient::Open(client_options(address, 10)).value();
  auto pending = std::async(std::launch::async, [&] { return client->heartbeat("a", 1, 7); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  o.listen_address = address;
  server = start(o);
  ASSERT_TRUE(server);
  EXPECT_GT(server->replayed_records(), 0);

  auto hb = pending.get();  // retried with backoff until the master was back
  ASSERT_TRUE(hb.ok()) << hb.status().ToString();
  EXPECT_FALSE(hb->rejoin);
  EXPECT_EQ(hb->latest_round, 1);
  const RdzvStatus after = server->status();
  EXPECT_EQ(after.round.number, before.round.number);
  ASSERT_EQ(after.round.members.size(), 2u);
  EXPECT_EQ(after.round.members[0].node_id, "a");
  EXPECT_EQ(after.round.master_port, before.round.master_port);
  EXPECT_FALSE(after.open);
  EXPECT_EQ(after.nodes.size(), 2u);
  EXPECT_EQ(after.counters.rounds_completed, 1);
  // The nodes' heartbeats reach the new master; nothing asks them to rejoin.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(a->rejoin_requested());
  EXPECT_FALSE(b->rejoin_requested());
  EXPECT_EQ(server->status().counters.nodes_dropped, 0);
}

TEST(MasterServer, AMasterThatDiesWhileARoundFormsFinishesItAfterItsRestart) {
  Deadline guard(60);
  ScratchDir dir("master_mid_round");
  MasterServerOptions o = server_options({2, 2, 1, 0, 5}, dir / "master.journal");
  auto server = start(o);
  ASSERT_TRUE(server);
  const std::string address = server->address();
  auto a = node(*server, "a");
  auto first = std::async(std::launch::async, [&] { return a->next_round(0, 20); });
  // a has joined and waits for a second node when the master dies.
  ASSERT_TRUE(wait_until([&] { return server->status().nodes.size() == 1; }, 10));
  ASSERT_TRUE(server->status().open);
  server.reset();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  o.listen_address = address;
  server = start(o);
  ASSERT_TRUE(server);
  EXPECT_GT(server->replayed_records(), 0);
  EXPECT_EQ(server->status().nodes.size(), 1u) << "the journal forgot the waiting node";
  // b arrives at the restarted master; the round completes with both, a keeping its wait.
  auto b = node(*server, "b");
  auto wb = b->next_round(0, 20);
  auto wa = first.get();
  ASSERT_TRUE(wa.ok()) << wa.status().ToString();
  ASSERT_TRUE(wb.ok()) << wb.status().ToString();
  EXPECT_EQ(wa->num_nodes, 2);
  EXPECT_EQ(wa->node_rank, 0);
  EXPECT_EQ(wb->node_rank, 1);
  EXPECT_EQ(wa->master_port, wb->master_port);
  EXPECT_EQ(server->status().counters.rounds_completed, 1);
}

// Sends `bytes` on a fresh TCP connection to 127.0.0.1:port and closes it.
void send_raw(int port, const std::string& bytes) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  if (!bytes.empty()) (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  ::close(fd);
}

TEST(MasterServer, GarbageOnThePortDoesNotHurtIt) {
  Deadline guard(60);
  auto server = start(server_options({1, 1, 1, 0, 5}));
  ASSERT_TRUE(server);
  std::mt19937 gen(7);
  std::string noise(8192, '\0');
  for (auto& ch : noise) ch = char(gen());
  const std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  for (const std::string& bytes :
       {noise, std::string(), std::string("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        preface + std::string("\xff\xff\xff\x01\x00\x00\x00\x00\x01", 9) + noise.substr(0, 512),
        preface + noise, std::string(100000, 'A')})
    send_raw(server->port(), bytes);
  auto client = MasterClient::Open(client_options(server->address())).value();
  auto st = client->get_status();
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  auto j = client->join({"a", "127.0.0.1", 1, 1234, 1}, 0);
  ASSERT_TRUE(j.ok()) << j.status().ToString();
  ASSERT_TRUE(j->round);
  EXPECT_EQ(j->round->number, 1);
}

TEST(MasterServer, LeaveFailureReportsAndStatus) {
  Deadline guard(60);
  auto server = start(server_options({2, 2, 1, 0, 5}));
  ASSERT_TRUE(server);
  auto a = node(*server, "a"), b = node(*server, "b");
  rendezvous({a.get(), b.get()}, 0);
  a->set_step(42);
  ASSERT_TRUE(
      b->report_failure(3, ExitStatus::Signaled(9), "worker 3 killed by the OOM killer").ok());
  ASSERT_TRUE(b->leave().ok());
  ASSERT_TRUE(wait_until([&] { return a->rejoin_requested(); }, 5));
  EXPECT_NE(a->rejoin_reason().find("member b left"), std::string::npos);
  auto st = a->client().get_status();
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->rdzv.counters.nodes_left, 1);
  EXPECT_EQ(st->rdzv.counters.failures_reported, 1);
  ASSERT_EQ(st->rdzv.recent_failures.size(), 1u);
  EXPECT_EQ(st->rdzv.recent_failures[0].exit, ExitStatus::Signaled(9));
  EXPECT_EQ(st->rdzv.recent_failures[0].rank, 3);
  ASSERT_EQ(st->rdzv.nodes.size(), 1u);
  EXPECT_EQ(st->rdzv.nodes[0].last_step, 42);
  EXPECT_EQ(st->rdzv.params.max_nodes, 2);
  EXPECT_TRUE(st->rdzv.open);
  auto again = a->client().leave("b");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
}

// GetStatus is paged by node id; the client puts the pages together; a bad page size is refused.
TEST(MasterServer, StatusIsPagedByNodeId) {
  Deadline guard(60);
  auto server = start(server_options({5, 5, 1, 0, 30}));
  ASSERT_TRUE(server);
  auto client = MasterClient::Open(client_options(server->address()));
  ASSERT_TRUE(client.ok());
  for (const char* id : {"e", "c", "a", "d", "b"})
    ASSERT_TRUE((*client)->join({id, "127.0.0.1", 1, 29500, 1}, 0).ok());
  auto whole = (*client)->get_status(-1, 2);
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  std::vector<std::string> ids;
  for (const auto& n : whole->rdzv.nodes) ids.push_back(n.node.node_id);
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(whole->rdzv.round.members.size(), 5u);
  EXPECT_TRUE(whole->rdzv.next_after.empty());

  // One page by hand: two nodes after "b", and where the next page starts.
  auto rpc = v1::Master::NewStub(
      grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.AddMetadata(kJobTokenMetadataKey, kToken);
  v1::GetStatusRequest req;
  req.set_page_size(2);
  req.set_after("b");
  v1::GetStatusResponse resp;
  ASSERT_TRUE(rpc->GetStatus(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.nodes_size(), 2);
  EXPECT_EQ(resp.nodes(0).node().node_id(), "c");
  EXPECT_EQ(resp.next_after(), "d");
  EXPECT_EQ(resp.round().members_size(), 0);  // members come with the first page
  EXPECT_EQ(resp.round().num_members(), 5);

  grpc::ClientContext bad_ctx;
  bad_ctx.AddMetadata(kJobTokenMetadataKey, kToken);
  req.set_page_size(kMaxStatusPage + 1);
  grpc::Status bad = rpc->GetStatus(&bad_ctx, req, &resp);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad.error_message().find("page_size"), std::string::npos);
}

// The node check over real RPC: c's checks fail (its "network" is broken), so a and b exclude it
// and train as two; c's agent is told why. A later round of the same nodes is not checked again.
TEST(MasterServer, NodeCheckExcludesTheBrokenNodeAndTheOthersGoOn) {
  Deadline guard(60);
  MasterServerOptions so = server_options({2, 3, 1, 0.5, 5});
  so.network_check = true;
  so.node_check.timeout_s = 5;
  auto server = start(so);
  ASSERT_TRUE(server);
  std::mutex mu;
  std::vector<std::string> runs;  // "round:leader+...", one per group leader
  auto checker = [&](const CheckAssignment& a) -> Result<NodeCheckResult> {
    std::string group;
    for (const auto& m : a.group) {
      group += (group.empty() ? "" : "+") + m.node_id;
      EXPECT_GT(m.store_port, 0);
    }
    if (a.group_rank == 0) {
      std::lock_guard<std::mutex> lock(mu);
      runs.push_back(std::to_string(a.check_round) + ":" + group);
    }
    if (group.find('c') != std::string::npos)
      return Status::Timeout("all-reduce timed out after 5000 ms");
    NodeCheckResult r;
    r.ok = true;
    r.matmul_s = 0.1;
    r.allreduce_s = 0.01;
    return r;
  };
  std::vector<std::unique_ptr<MasterRendezvous>> nodes;
  for (const char* id : {"a", "b", "c"}) {
    MasterRendezvousOptions o;
    o.client = client_options(server->address());
    o.node_id = id;
    o.host = "127.0.0.1";
    o.run_id = "job";
    o.poll_interval_s = 0.02;
    o.heartbeat_interval_s = 0.05;
    o.node_checker = checker;
    auto r = MasterRendezvous::Open(o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    nodes.push_back(std::move(r).value());
  }
  std::vector<std::future<Result<World>>> f;
  for (auto& n : nodes)
    f.push_back(std::async(std::launch::async, [&n] { return n->next_round(0, 20); }));
  auto wa = f[0].get(), wb = f[1].get(), wc = f[2].get();
  ASSERT_TRUE(wa.ok()) << wa.status().ToString();
  ASSERT_TRUE(wb.ok()) << wb.status().ToString();
  EXPECT_EQ(wa->num_nodes, 2);
  EXPECT_EQ(wb->node_rank, 1);
  ASSERT_EQ(wc.status().code(), StatusCode::kFailedPrecondition) << wc.status().ToString();
  EXPECT_NE(wc.status().message().find("excluded from the job: failed the node check"),
            std::string::npos)
      << wc.status().message();
  EXPECT_NE(wc.status().message().find("all-reduce timed out"), std::string::npos);
  {
    std::lock_guard<std::mutex> lock(mu);
    std::sort(runs.begin(), runs.end());
    EXPECT_EQ(runs, (std::vector<std::string>{"1:a+b", "1:c", "2:c+a"}));
    runs.clear();
  }
  EXPECT_EQ(server->status().nodes.size(), 2u);
  // a's workers restart: a new round of checked nodes starts without a check.
  auto again = std::async(std::launch::async, [&] { return nodes[0]->next_round(1, 10); });
  ASSERT_TRUE(wait_until([&] { return nodes[1]->rejoin_requested(); }, 5));
  auto wb2 = nodes[1]->next_round(1, 10);
  ASSERT_TRUE(wb2.ok()) << wb2.status().ToString();
  ASSERT_TRUE(again.get().ok());
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_TRUE(runs.empty());
}

ShardClientOptions shard_options(const MasterServer& s, const std::string& worker) {
  ShardClientOptions o;
  o.client = client_options(s.address());
  o.dataset = "kjv/train.bin";
  o.worker = worker;
  o.params.num_samples = 1000;
  o.params.shard_size = 7;
  o.params.seed = 3;
  o.params.num_epochs = 2;
  o.prefetch = 3;
  o.wait_timeout_s = 0.1;
  return o;
}

// Three workers over real RPC take every sample of two epochs exactly once; a worker that dies
// holding shards gives them back; a snapshot taken mid-way restores that consumption.
TEST(ShardService, WorkersTakeEverySampleOnceOverRpc) {
  Deadline guard(60);
  auto server = start(server_options({1, 1, 1, 0, 5}));
  ASSERT_TRUE(server);
  std::vector<std::unique_ptr<ShardClient>> workers;
  for (int i = 0; i < 3; ++i) {
    auto c = ShardClient::Open(shard_options(*server, "rank-" + std::to_string(i)));
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    workers.push_back(std::move(c).value());
  }
  std::map<std::pair<int64_t, int64_t>, int> seen;
  // 1: took a shard; 0: the dataset is exhausted; -1: the others hold the rest for now.
  auto take = [&](ShardClient& w) -> int {
    auto s = w.next();
    if (!s.ok() && s.status().code() == StatusCode::kTimeout) return -1;
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    if (!s.ok() || !*s) return 0;
    for (int64_t id = (*s)->start; id < (*s)->end; ++id) ++seen[{(*s)->epoch, id}];
    w.done(**s);
    return 1;
  };
  // Round-robin over `ws` until every one of them finds the dataset exhausted.
  auto drain = [&](const std::vector<ShardClient*>& ws) {
    std::vector<bool> over(ws.size(), false);
    for (int guard = 0; guard < 10000; ++guard) {
      bool all = true;
      for (size_t i = 0; i < ws.size(); ++i) {
        if (!over[i]) over[i] = take(*ws[i]) == 0;
        all = all && over[i];
      }
      if (all) return;
    }
    ADD_FAILURE() << "the dataset never ran out";
  };
  for (int i = 0; i < 30; ++i) ASSERT_EQ(take(*workers[size_t(i % 3)]), 1);
  ASSERT_TRUE(workers[0]->flush().ok());
  ASSERT_TRUE(workers[1]->flush().ok());
  ASSERT_TRUE(workers[2]->flush().ok());
  auto snap = workers[0]->snapshot();
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  const auto seen_at_snapshot = seen;
  // Worker 2 dies holding its prefetched shards: they go to the others.
  auto held = workers[2]->next();
  ASSERT_TRUE(held.ok() && *held);
  ASSERT_TRUE(workers[2]->release().ok());
  drain({workers[0].get(), workers[1].get()});
  EXPECT_EQ(seen.size(), 2000u);
  for (const auto& [k, n] : seen) ASSERT_EQ(n, 1) << k.first << "/" << k.second;
  EXPECT_TRUE(workers[0]->last_stats().finished);
  // Roll back to the snapshot: exactly the samples not taken by then come again.
  ASSERT_TRUE(workers[1]->restore(*snap).ok());
  ASSERT_TRUE(workers[0]->restore(*snap).ok());  // drops its local state too
  seen.clear();
  drain({workers[0].get(), workers[1].get()});
  EXPECT_EQ(seen.size() + seen_at_snapshot.size(), 2000u);
  for (const auto& [k, n] : seen) EXPECT_EQ(seen_at_snapshot.count(k), 0u);
}

TEST(ShardService, BadCallsAreRefusedWithTheReason) {
  Deadline guard(60);
  auto server = start(server_options({1, 1, 1, 0, 5}));
  ASSERT_TRUE(server);
  auto a = ShardClient::Open(shard_options(*server, "a"));
  ASSERT_TRUE(a.ok());
  ShardClientOptions other = shard_options(*server, "b");
  other.params.shard_size = 8;
  auto b = ShardClient::Open(other);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("exists with other parameters"), std::string::npos)
      << b.status().ToString();
  auto client = MasterClient::Open(client_options(server->address()));
  ASSERT_TRUE(client.ok());
  auto unknown = (*client)->get_shards("nope", "w", {}, 1);
  EXPECT_NE(unknown.status().message().find("not known to the master"), std::string::npos);
  EXPECT_FALSE((*client)->get_shards("kjv/train.bin", "w", {}, 5000).ok());
  Shard never{0, 1, 7, 14};
  EXPECT_NE((*client)
                ->get_shards("kjv/train.bin", "w", {never}, 1)
                .status()
                .message()
                .find("not held by w"),
            std::string::npos);
  ShardClientOptions bad = shard_options(*server, "c");
  bad.params.num_epochs = 0;
  EXPECT_EQ(ShardClient::Open(bad).status().code(), StatusCode::kInvalidArgument);
  MasterClientOptions wrong = client_options(server->address());
  wrong.job_token = "not-the-token";
  auto intruder = MasterClient::Open(wrong);
  ASSERT_TRUE(intruder.ok());
  EXPECT_FALSE((*intruder)->get_shards("kjv/train.bin", "w", {}, 1).ok());
  EXPECT_GE(server->rejected_calls(), 1);
}

TEST(MasterRendezvous, TimesOutWithTheReason) {
  Deadline guard(60);
  auto server = start(server_options({2, 2, 1, 0, 5}));
  ASSERT_TRUE(server);
  auto a = node(*server, "a");
  const auto t0 = std::chrono::steady_clock::now();
  auto w = a->next_round(0, 0.5);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(w.status().code(), StatusCode::kTimeout);
  EXPECT_NE(w.status().message().find("1 node(s) joined, min 2"), std::string::npos)
      << w.status().ToString();
  EXPECT_LT(took, 3.0);
}

TEST(MasterRendezvous, UnequalNodesAreUnsupported) {
  Deadline guard(60);
  auto server = start(server_options({2, 2, 1, 0, 5}));
  ASSERT_TRUE(server);
  auto a = node(*server, "a", 1), b = node(*server, "b", 2);
  auto fa = std::async(std::launch::async, [&] { return a->next_round(0, 10); });
  auto wb = b->next_round(0, 10);
  EXPECT_EQ(wb.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(wb.status().message().find("--nproc-per-node"), std::string::npos);
  EXPECT_EQ(fa.get().status().code(), StatusCode::kUnsupported);
}

TEST(MasterClient, UnreachableMasterIsPeerLostWithinTheBudget) {
  Deadline guard(60);
  auto port = pick_free_port();
  ASSERT_TRUE(port.ok());
  auto client = MasterClient::Open(client_options("127.0.0.1:" + std::to_string(*port), 0.3));
  ASSERT_TRUE(client.ok());
  const auto t0 = std::chrono::steady_clock::now();
  auto st = (*client)->get_status();
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(st.status().code(), StatusCode::kPeerLost);
  EXPECT_NE(st.status().message().find("attempts"), std::string::npos) << st.status().ToString();
  // The cause, not a bare deadline.
  EXPECT_NE(st.status().message().find("onnection refused"), std::string::npos)
      << st.status().ToString();
  EXPECT_LT(took, 3.0);
  EXPECT_FALSE(MasterClient::Open(client_options("")).ok());
}

TEST(MasterServer, OptionsAreValidated) {
  MasterServerOptions o = server_options({1, 1, 1, 0, 5});
  o.job_token.clear();
  EXPECT_NE(MasterServer::Start(o).status().message().find("job token"), std::string::npos);
  o = server_options({1, 1, 1, 0, 5});
  o.tls_cert_path = "/nonexistent/cert.pem";
  EXPECT_NE(MasterServer::Start(o).status().message().find("private key"), std::string::npos);
  o = server_options({1, 1, 1, 0, 5});
  o.listen_address = "no-port";
  EXPECT_EQ(MasterServer::Start(o).status().code(), StatusCode::kInvalidArgument);
  o = server_options({2, 1, 1, 0, 5});
  EXPECT_NE(MasterServer::Start(o).status().message().find("max_nodes"), std::string::npos);
  // A second master on the same port fails instead of sharing it.
  auto first = start(server_options({1, 1, 1, 0, 5}));
  ASSERT_TRUE(first);
  o = server_options({1, 1, 1, 0, 5});
  o.listen_address = first->address();
  EXPECT_EQ(MasterServer::Start(o).status().code(), StatusCode::kFailedPrecondition);
}

// Runs `cmd` (openssl) in `dir`; its output goes to openssl.log, shown on failure.
void openssl(const ScratchDir& dir, const std::string& cmd) {
  const std::string full = "cd " + dir.path() + " && " + cmd + " >>openssl.log 2>&1";
  ASSERT_EQ(std::system(full.c_str()), 0) << "openssl failed: " << cmd << "\n"
                                          << testing::slurp(dir / "openssl.log");
}

// A CA ("name"-ca.pem/.key) and, signed by it, a certificate "name"-leaf.pem/.key for
// localhost and 127.0.0.1 (usable by servers and clients).
void make_ca_and_leaf(const ScratchDir& dir, const std::string& name) {
  // openssl is a test prerequisite (scripts/install-deps.sh installs it): without it this
  // test fails, naming it, instead of skipping.
  ASSERT_EQ(std::system("command -v openssl >/dev/null 2>&1"), 0)
      << "openssl is not installed (scripts/install-deps.sh installs it): it makes the "
         "test certificates";
  openssl(dir, "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=" + name +
                   "-ca -keyout " + name + "-ca.key -out " + name + "-ca.pem");
  openssl(dir, "openssl req -newkey rsa:2048 -nodes -subj /CN=" + name + " -keyout " + name +
                   "-leaf.key -out " + name + "-leaf.csr");
  std::ofstream(dir / (name + "-san.ext")) << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
  openssl(dir, "openssl x509 -req -days 1 -in " + name + "-leaf.csr -CA " + name +
                   "-ca.pem -CAkey " + name + "-ca.key -CAcreateserial -extfile " + name +
                   "-san.ext -out " + name + "-leaf.pem");
}

TEST(MasterServer, ServesTlsWhenGivenACertificate) {
  Deadline guard(60);
  ScratchDir dir("master_tls");
  make_ca_and_leaf(dir, "job");
  MasterServerOptions o = server_options({1, 1, 1, 0, 5});
  o.tls_cert_path = dir / "job-leaf.pem";
  o.tls_key_path = dir / "job-leaf.key";
  auto server = start(o);
  ASSERT_TRUE(server);
  MasterClientOptions co = client_options(server->address());
  co.tls_ca_path = dir / "job-ca.pem";
  auto client = MasterClient::Open(co).value();
  auto j = client->join({"a", "127.0.0.1", 1, 1234, 1}, 0);
  ASSERT_TRUE(j.ok()) << j.status().ToString();
  EXPECT_TRUE(j->round);
  // A plaintext client cannot talk to it.
  auto plain = MasterClient::Open(client_options(server->address(), 0.3)).value();
  EXPECT_FALSE(plain->get_status().ok());
  // Nor one that trusts another CA (the master's certificate is not verified).
  make_ca_and_leaf(dir, "other");
  co.tls_ca_path = dir / "other-ca.pem";
  co.retry_total_s = 0.3;
  auto wrong_ca = MasterClient::Open(co).value();
  // Refused at once, naming the handshake: retrying does not fix a certificate.
  auto refused = wrong_ca->get_status();
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition)
      << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("TLS handshake"), std::string::npos);
}

TEST(MasterServer, MutualTlsRefusesClientsWithoutACertificateOfTheCa) {
  Deadline guard(60);
  ScratchDir dir("master_mtls");
  make_ca_and_leaf(dir, "job");
  make_ca_and_leaf(dir, "other");
  MasterServerOptions o = server_options({1, 1, 1, 0, 5});
  o.tls_cert_path = dir / "job-leaf.pem";
  o.tls_key_path = dir / "job-leaf.key";
  o.tls_client_ca_path = dir / "job-ca.pem";
  auto server = start(o);
  ASSERT_TRUE(server);
  MasterClientOptions co = client_options(server->address(), 0.3);
  co.tls_ca_path = dir / "job-ca.pem";
  // No client certificate: the handshake fails, nothing reaches the service.
  auto anonymous = MasterClient::Open(co).value();
  EXPECT_FALSE(anonymous->get_status().ok());
  // A certificate another CA signed: refused as well.
  co.tls_cert_path = dir / "other-leaf.pem";
  co.tls_key_path = dir / "other-leaf.key";
  auto stranger = MasterClient::Open(co).value();
  EXPECT_FALSE(stranger->get_status().ok());
  // The job's certificate: served.
  co.tls_cert_path = dir / "job-leaf.pem";
  co.tls_key_path = dir / "job-leaf.key";
  co.retry_total_s = 5;
  auto member = MasterClient::Open(co).value();
  auto st = member->get_status();
  EXPECT_TRUE(st.ok()) << st.status().ToString();
  // With a certificate but a wrong token: still refused by the token check.
  co.job_token = "not-the-token";
  auto wrong_token = MasterClient::Open(co).value();
  auto denied = wrong_token->get_status();
  EXPECT_NE(denied.status().message().find("rejected the job token"), std::string::npos)
      << denied.status().ToString();
}

TEST(MasterServer, PlaintextOffLoopbackNeedsInsecure) {
  // The server: plaintext on an address other machines reach is refused without `insecure`.
  MasterServerOptions o = server_options({1, 1, 1, 0, 5});
  o.listen_address = "0.0.0.0:0";
  auto refused = MasterServer::Start(o);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("--insecure"), std::string::npos)
      << refused.status().ToString();
  o.insecure = true;
  auto server = start(o);
  ASSERT_TRUE(server);
  o.insecure = false;
  o.tls_client_ca_path = "ca.pem";
  EXPECT_NE(MasterServer::Start(o).status().message().find("mutual TLS"), std::string::npos);
  // The client: the same rule for where the token is sent.
  MasterClientOptions co = client_options("10.0.0.1:29400");
  auto client = MasterClient::Open(co);
  ASSERT_FALSE(client.ok());
  EXPECT_NE(client.status().message().find("plaintext"), std::string::npos)
      << client.status().ToString();
  co.insecure = true;
  EXPECT_TRUE(MasterClient::Open(co).ok());
  co = client_options("[::1]:29400");
  EXPECT_TRUE(MasterClient::Open(co).ok());
  co.tls_cert_path = "cert.pem";
  EXPECT_NE(MasterClient::Open(co).status().message().find("private key"), std::string::npos);
  co.tls_key_path = "key.pem";
  EXPECT_NE(MasterClient::Open(co).status().message().find("CA certificate"), std::string::npos);
}

}  // namespace
}  // namespace cairn::elastic
