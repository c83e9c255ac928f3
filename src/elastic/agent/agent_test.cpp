#include "cairn/elastic/agent.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "cairn/elastic/process.h"
#include "cairn/elastic/progress.h"
#include "elastic/testing_impl.h"

namespace cairn::elastic {
namespace {

using testing::Deadline;
using testing::lines_of;
using testing::ScratchDir;
using testing::slurp;

std::vector<nlohmann::json> events_of(const std::string& run_dir) {
  std::vector<nlohmann::json> out;
  for (const std::string& l : lines_of(slurp(run_dir + "/events.jsonl")))
    out.push_back(nlohmann::json::parse(l));
  return out;
}

int count_events(const std::vector<nlohmann::json>& events, const std::string& kind) {
  int n = 0;
  for (const auto& e : events) n += e["event"] == kind;
  return n;
}

// Records the rounds it is asked for; fails from round `fail_at` on.
class FakeRendezvous : public Rendezvous {
 public:
  explicit FakeRendezvous(int nproc, int fail_at = 1 << 30) : nproc_(nproc), fail_at_(fail_at) {}
  Result<World> next_round(int round, double timeout_s) override {
    rounds.push_back(round);
    if (round >= fail_at_) return Status::Timeout("nodes did not arrive");
    World w;
    w.nproc_per_node = nproc_;
    w.master_addr = "127.0.0.1";
    w.master_port = 1234 + round;
    w.run_id = "test";
    w.round = round;
    return w;
  }
  std::vector<int> rounds;

 private:
  int nproc_, fail_at_;
};

struct AgentFixture {
  ScratchDir dir{"agent"};
  UniqueFd echo{::open((dir / "echo.txt").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644)};
  Interrupt interrupt;
  AgentOptions options(const std::string& script) {
    AgentOptions o;
    o.command = {"/bin/sh", "-c", script};
    o.run_dir = dir.path();
    o.base_env = {{"PATH", "/usr/bin:/bin"}};
    o.num_cores = 4;
    o.grace_period_s = 2;
    o.monitor_interval_s = 0.05;
    o.echo_stdout_fd = echo.get();
    o.echo_stderr_fd = echo.get();
    o.interrupt = &interrupt;
    return o;
  }
};

TEST(Agent, AllWorkersSucceed) {
  Deadline d(60);
  AgentFixture f;
  StaticRendezvous rdzv({/*num_nodes=*/1, 0, /*nproc=*/3, "", 0, "job"});
  auto r =
      run_agent(rdzv, f.options("echo $RANK $LOCAL_RANK $WORLD_SIZE $MASTER_ADDR $OMP_NUM_THREADS "
                                "$TORCHELASTIC_RESTART_COUNT $TORCHELASTIC_RUN_ID $CAIRN_RUN_DIR"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->restarts, 0);
  EXPECT_FALSE(r->failure);
  for (int rank = 0; rank < 3; ++rank) {
    std::string want = std::to_string(rank) + " " + std::to_string(rank) + " 3 127.0.0.1 1 0 job " +
                       f.dir.path() + "\n";
    EXPECT_EQ(slurp(f.dir / ("logs/worker-" + std::to_string(rank) + ".log")), want);
  }
  auto events = events_of(f.dir.path());
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.front()["event"], "agent_start");
  EXPECT_EQ(events.front()["nproc"], 3);
  EXPECT_EQ(events.front()["world_size"], 3);
  EXPECT_EQ(events.front()["command"][0], "/bin/sh");
  EXPECT_EQ(count_events(events, "workers_started"), 1);
  EXPECT_EQ(count_events(events, "rendezvous"), 1);
  EXPECT_EQ(events.back()["event"], "agent_end");
  EXPECT_EQ(events.back()["exit_code"], 0);
  EXPECT_GT(events.back()["time"].get<double>(), 1.6e9);
}

TEST(Agent, FailingWorkerIsRestartedUpToTheLimit) {
  Deadline d(60);
  AgentFixture f;
  FakeRendezvous rdzv(3);
  // Rank 1 fails only once rank 0 has written its line, so the SIGKILL of
  // the survivors cannot cut that line off.
  AgentOptions o = f.options(
      "echo try $TORCHELASTIC_RESTART_COUNT of $TORCHELASTIC_MAX_RESTARTS; "
      "if [ $RANK = 1 ]; then "
      "until grep \"try $TORCHELASTIC_RESTART_COUNT of\" '" +
      (f.dir / "logs/worker-0.log") +
      "' > /dev/null 2>&1; do sleep 0.01; done; "
      "echo bad things >&2; exit 3; fi; exec sleep 30");
  o.max_restarts = 2;
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_agent(rdzv, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20);
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->restarts, 2);
  EXPECT_EQ(rdzv.rounds, (std::vector<int>{0, 1, 2}));
  ASSERT_TRUE(r->failure);
  EXPECT_EQ(r->failure->rank, 1);
  EXPECT_EQ(r->failure->status, ExitStatus::Exited(3));
  EXPECT_EQ(r->failure_log, f.dir / "logs/worker-1.log");
  EXPECT_EQ(r->failure_tail.back(), "bad things");
  EXPECT_NE(r->summary.find("worker rank 1"), std::string::npos) << r->summary;
  EXPECT_NE(r->summary.find("exit code 3"), std::string::npos) << r->summary;
  EXPECT_NE(r->summary.find("2 of 2"), std::string::npos) << r->summary;
  EXPECT_NE(r->summary.find("  bad things"), std::string::npos) << r->summary;
  EXPECT_NE(r->summary.find("command: /bin/sh -c 'echo try $TORCHELASTIC_RESTART_COUNT"),
            std::string::npos)
      << r->summary;
  auto events = events_of(f.dir.path());
  EXPECT_EQ(count_events(events, "workers_started"), 3);
  EXPECT_EQ(count_events(events, "rendezvous"), 3);  // one per round, restarts included
  EXPECT_EQ(count_events(events, "worker_failed"), 3);
  EXPECT_EQ(count_events(events, "restart"), 2);
  EXPECT_EQ(events.back()["exit_code"], 3);
  std::string log0 = slurp(f.dir / "logs/worker-0.log");
  EXPECT_EQ(log0,
            "try 0 of 2\n--- cairn run: restart 1 ---\ntry 1 of 2\n"
            "--- cairn run: restart 2 ---\ntry 2 of 2\n");
}

TEST(Agent, RestartThatSucceedsEndsWell) {
  Deadline d(60);
  AgentFixture f;
  FakeRendezvous rdzv(2);
  AgentOptions o = f.options("[ $TORCHELASTIC_RESTART_COUNT -ge 1 ] || exit 1");
  o.max_restarts = 5;
  auto r = run_agent(rdzv, o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->restarts, 1);
  EXPECT_EQ(rdzv.rounds, (std::vector<int>{0, 1}));
}

TEST(Agent, WorkerKilledBySignal) {
  Deadline d(60);
  AgentFixture f;
  FakeRendezvous rdzv(1);
  auto r = run_agent(rdzv, f.options("kill -SEGV $$"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 128 + SIGSEGV);
  EXPECT_NE(r->summary.find("SIGSEGV"), std::string::npos) << r->summary;
  EXPECT_NE(r->summary.find("--max-restarts 0"), std::string::npos) << r->summary;
  auto events = events_of(f.dir.path());
  ASSERT_EQ(count_events(events, "worker_failed"), 1);
  for (const auto& e : events)
    if (e["event"] == "worker_failed") EXPECT_EQ(e["signal"], "SIGSEGV");
}

TEST(Agent, InterruptIsForwardedAndEndsWith128PlusSignal) {
  Deadline d(60);
  AgentFixture f;
  FakeRendezvous rdzv(2);
  AgentOptions o =
      f.options("trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 0.05; done");
  o.max_restarts = 3;
  std::thread trigger([&] {
    for (int i = 0; i < 400 && lines_of(slurp(f.dir / "echo.txt")).size() < 2; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    f.interrupt.signal.store(SIGTERM);
    f.interrupt.count.fetch_add(1);
  });
  auto r = run_agent(rdzv, o);
  trigger.join();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 143);
  EXPECT_EQ(r->interrupt_signal, SIGTERM);
  EXPECT_EQ(r->restarts, 0);
  for (int rank = 0; rank < 2; ++rank)
    EXPECT_NE(slurp(f.dir / ("logs/worker-" + std::to_string(rank) + ".log")).find("got TERM"),
              std::string::npos);
  auto events = events_of(f.dir.path());
  EXPECT_EQ(events.back()["event"], "agent_end");
  EXPECT_EQ(events.back()["exit_code"], 143);
  EXPECT_EQ(events.back()["signal"], "SIGTERM");
}

TEST(Agent, SecondInterruptSkipsTheGracePeriod) {
  Deadline d(60);
  AgentFixture f;
  FakeRendezvous rdzv(1);
  AgentOptions o = f.options("trap '' INT; echo ready; while :; do sleep 0.05; done");
  o.grace_period_s = 30;
  std::thread trigger([&] {
    for (int i = 0; i < 400 && lines_of(slurp(f.dir / "echo.txt")).empty(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    f.interrupt.signal.store(SIGINT);
    f.interrupt.count.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    f.interrupt.count.fetch_add(1);
  });
  auto t0 = std::chrono::steady_clock::now();
  auto r = run_agent(rdzv, o);
  trigger.join();
  ASSERT_TRUE(r.ok());
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 15);
  EXPECT_EQ(r->exit_code, 130);
}

// Once `ranks` workers echoed "ready", reports step 1 for ranks 0..ranks-1 (their progress).
std::thread report_a_step_when_ready(AgentFixture& f, int ranks) {
  return std::thread([&f, ranks] {
    for (int i = 0; i < 400 && lines_of(slurp(f.dir / "echo.txt")).size() < size_t(ranks); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    for (int rank = 0; rank < ranks; ++rank) {
      auto p = ProgressWriter::Open(f.dir.path(), rank);
      if (p.ok()) (*p)->report(1);
    }
  });
}

// Ends the round once, right after the hang detector wrote its event (a peer's agent reported
// first: the master opened the next round); records the failures it is handed.
class RoundEndsAtTheHang : public FakeRendezvous {
 public:
  RoundEndsAtTheHang(int nproc, std::string events) : FakeRendezvous(nproc), events_(events) {}
  bool round_over(std::string* reason) override {
    if (ended_ || slurp(events_).find("\"event\":\"hang\"") == std::string::npos) return false;
    ended_ = true;
    *reason = "round 2 is gathering";
    return true;
  }
  bool follows_membership() const override { return true; }
  void worker_failed(int rank, const ExitStatus& exit, const std::string& diagnosis) override {
    failures.push_back(diagnosis);
  }
  std::vector<std::string> failures;

 private:
  std::string events_;
  bool ended_ = false;
};

TEST(Agent, AHangIsAFailureEvenWhenTheRoundEndsAtOnce) {
  Deadline d(120);
  AgentFixture f;
  RoundEndsAtTheHang rdzv(1, f.dir / "events.jsonl");
  // The first start reports a step (below, for it) and then nothing: hung.
  AgentOptions o = f.options(
      "if [ $TORCHELASTIC_RESTART_COUNT = 0 ]; then echo ready; exec sleep 60; fi; exit 0");
  o.hang_timeout_s = 1;
  o.max_restarts = 3;
  std::thread reporter = report_a_step_when_ready(f, 1);
  auto r = run_agent(rdzv, o);
  reporter.join();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->restarts, 1);
  ASSERT_EQ(rdzv.failures.size(), 1u);
  EXPECT_EQ(rdzv.failures[0].rfind("hang: no progress for 1 s", 0), 0u) << rdzv.failures[0];
  auto events = events_of(f.dir.path());
  EXPECT_EQ(count_events(events, "hang"), 1);
  EXPECT_EQ(count_events(events, "round_over"), 0);
  for (const auto& e : events)
    if (e["event"] == "worker_failed") {
      EXPECT_EQ(e["diagnosis"], "hang");
      EXPECT_EQ(e["signal"], "SIGKILL");
    }
  EXPECT_EQ(count_events(events, "worker_failed"), 1);
}

// Rank 1 stops itself (SIGSTOP) after its step, rank 0 only sleeps: both are over the hang
// timeout, both killed, and each exit is collected with its diagnosis before the round ends
// (rank 0's exit alone, collected while rank 1's stacks were dumped, once hid the stopped one).
TEST(Agent, EveryRankTheHangDetectorKillsIsRecorded) {
  Deadline d(120);
  AgentFixture f;
  FakeRendezvous rdzv(2);
  AgentOptions o = f.options(
      "if [ $TORCHELASTIC_RESTART_COUNT = 0 ]; then echo ready; sleep 0.5; "
      "if [ $RANK = 1 ]; then kill -STOP $$; fi; exec sleep 60; fi; exit 0");
  o.hang_timeout_s = 1;
  o.max_restarts = 1;
  std::thread reporter = report_a_step_when_ready(f, 2);
  auto r = run_agent(rdzv, o);
  reporter.join();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->restarts, 1);
  auto events = events_of(f.dir.path());
  EXPECT_EQ(count_events(events, "hang"), 2);
  std::set<int> failed;
  for (const auto& e : events)
    if (e["event"] == "worker_failed") {
      EXPECT_EQ(e["diagnosis"], "hang") << e.dump();
      failed.insert(e["rank"].get<int>());
    }
  EXPECT_EQ(failed, (std::set<int>{0, 1}));
  for (const auto& e : events)
    if (e["event"] == "hang" && e["rank"] == 1) EXPECT_TRUE(e["stopped"].get<bool>());
}

TEST(Agent, RendezvousFailureIsAnError) {
  Deadline d(60);
  AgentFixture f;
  FakeRendezvous rdzv(1, /*fail_at=*/1);
  AgentOptions o = f.options("exit 1");
  o.max_restarts = 3;
  auto r = run_agent(rdzv, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kTimeout);
  EXPECT_NE(r.status().message().find("rendezvous"), std::string::npos);
  auto events = events_of(f.dir.path());
  EXPECT_EQ(events.back()["event"], "agent_end");
  EXPECT_EQ(events.back()["exit_code"], 1);
}

TEST(Agent, UnstartableCommandIsAnError) {
  Deadline d(60);
  AgentFixture f;
  FakeRendezvous rdzv(2);
  AgentOptions o = f.options("");
  o.command = {"/nonexistent/worker"};
  auto r = run_agent(rdzv, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace cairn::elastic
