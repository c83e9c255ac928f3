#include "cairn/elastic/worker_group.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <map>

#include "cairn/elastic/process.h"
#include "elastic/testing_impl.h"

namespace cairn::elastic {
namespace {

using testing::Deadline;
using testing::lines_of;
using testing::ScratchDir;
using testing::slurp;

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// `n` workers running `script` with RANK set; ranks start at `first_rank`.
std::vector<WorkerSpec> sh_workers(int n, const std::string& script, int first_rank = 0) {
  std::vector<WorkerSpec> specs;
  for (int i = 0; i < n; ++i) {
    WorkerSpec s;
    s.rank = first_rank + i;
    s.local_rank = i;
    s.argv = {"/bin/sh", "-c", script};
    s.env = {"PATH=/usr/bin:/bin", "RANK=" + std::to_string(first_rank + i)};
    specs.push_back(s);
  }
  return specs;
}

// A group whose terminal echo goes to files in `dir`.
struct Fixture {
  ScratchDir dir{"worker_group"};
  UniqueFd out{::open((dir / "echo.out").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644)};
  UniqueFd err{::open((dir / "echo.err").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644)};
  WorkerGroupOptions options() {
    WorkerGroupOptions o;
    o.log_dir = dir.path();
    o.echo_stdout_fd = out.get();
    o.echo_stderr_fd = err.get();
    o.tail_lines = 3;
    return o;
  }
};

// Polls until every worker has exited; returns exits by rank.
std::map<int, ExitStatus> run_to_end(WorkerGroup& g, double timeout_s = 20) {
  std::map<int, ExitStatus> exits;
  auto t0 = std::chrono::steady_clock::now();
  while (g.num_running() > 0 && since(t0) < timeout_s)
    for (const WorkerExit& e : g.poll(0.5)) exits[e.rank] = e.status;
  g.drain(2.0);
  return exits;
}

TEST(WorkerGroup, ExitCodesLogsAndPrefixedEcho) {
  Deadline d(60);
  Fixture f;
  auto g = WorkerGroup::Start(
      sh_workers(3, "echo hello from $RANK; echo oops $RANK >&2; exit $RANK", 4), f.options());
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ((*g)->size(), 3);
  auto exits = run_to_end(**g);
  ASSERT_EQ(exits.size(), 3u);
  for (int r = 4; r < 7; ++r) {
    EXPECT_EQ(exits[r], ExitStatus::Exited(r));
    std::string log = slurp(f.dir / ("worker-" + std::to_string(r) + ".log"));
    EXPECT_NE(log.find("hello from " + std::to_string(r) + "\n"), std::string::npos) << log;
    EXPECT_NE(log.find("oops " + std::to_string(r) + "\n"), std::string::npos) << log;
  }
  std::string out = slurp(f.dir / "echo.out");
  std::string err = slurp(f.dir / "echo.err");
  for (int r = 4; r < 7; ++r) {
    EXPECT_NE(out.find("[rank " + std::to_string(r) + "] hello from " + std::to_string(r) + "\n"),
              std::string::npos)
        << out;
    EXPECT_NE(err.find("[rank " + std::to_string(r) + "] oops " + std::to_string(r) + "\n"),
              std::string::npos)
        << err;
  }
  EXPECT_EQ((*g)->log_path(1), f.dir / "worker-5.log");
  EXPECT_EQ((*g)->tail(2), (std::vector<std::string>{"hello from 6", "oops 6"}));
}

TEST(WorkerGroup, LinesNeverInterleave) {
  Deadline d(60);
  Fixture f;
  // Each worker writes 300 long lines in many small pieces.
  std::string script =
      "i=0; while [ $i -lt 300 ]; do printf 'r%s-' $RANK; printf 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx';"
      " printf 'end\\n'; i=$((i+1)); done";
  auto g = WorkerGroup::Start(sh_workers(3, script), f.options());
  ASSERT_TRUE(g.ok());
  auto exits = run_to_end(**g);
  ASSERT_EQ(exits.size(), 3u);
  auto lines = lines_of(slurp(f.dir / "echo.out"));
  ASSERT_EQ(lines.size(), 900u);
  for (const std::string& l : lines) {
    std::string rank = l.substr(6, 1);
    EXPECT_EQ(l, "[rank " + rank + "] r" + rank + "-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxend");
  }
}

TEST(WorkerGroup, PartialLastLineAndOutputBeforeExitAreKept) {
  Deadline d(60);
  Fixture f;
  auto g =
      WorkerGroup::Start(sh_workers(1, "echo first; printf 'no newline'; exit 9"), f.options());
  ASSERT_TRUE(g.ok());
  std::vector<WorkerExit> exits;
  auto t0 = std::chrono::steady_clock::now();
  while (exits.empty() && since(t0) < 20) exits = (*g)->poll(1.0);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].status, ExitStatus::Exited(9));
  EXPECT_GT(exits[0].pid, 0);
  // Forwarded by the time the exit is reported.
  EXPECT_EQ((*g)->tail(0), (std::vector<std::string>{"first", "no newline"}));
  EXPECT_EQ(slurp(f.dir / "worker-0.log"), "first\nno newline\n");
}

TEST(WorkerGroup, StopForwardsTheSignal) {
  Deadline d(60);
  Fixture f;
  auto g = WorkerGroup::Start(
      sh_workers(2, "trap 'echo got INT; exit 5' INT; echo ready; while :; do sleep 0.05; done"),
      f.options());
  ASSERT_TRUE(g.ok());
  auto t0 = std::chrono::steady_clock::now();
  while (lines_of(slurp(f.dir / "echo.out")).size() < 2 && since(t0) < 20) (*g)->poll(0.1);
  auto exits = (*g)->stop(SIGINT, 20);
  EXPECT_LT(since(t0), 15);
  ASSERT_EQ(exits.size(), 2u);
  for (const WorkerExit& e : exits) EXPECT_EQ(e.status, ExitStatus::Exited(5));
  EXPECT_EQ((*g)->num_running(), 0);
  for (int r = 0; r < 2; ++r)
    EXPECT_NE(slurp(f.dir / ("worker-" + std::to_string(r) + ".log")).find("got INT"),
              std::string::npos);
}

TEST(WorkerGroup, GracePeriodEndsWithSigkill) {
  Deadline d(60);
  Fixture f;
  auto g = WorkerGroup::Start(
      sh_workers(2, "trap '' TERM; echo ready; while :; do sleep 0.05; done"), f.options());
  ASSERT_TRUE(g.ok());
  auto t0 = std::chrono::steady_clock::now();
  while (lines_of(slurp(f.dir / "echo.out")).size() < 2 && since(t0) < 20) (*g)->poll(0.1);
  auto t1 = std::chrono::steady_clock::now();
  auto exits = (*g)->stop(SIGTERM, 1.0);
  double took = since(t1);
  EXPECT_GE(took, 0.95);
  EXPECT_LT(took, 8);
  ASSERT_EQ(exits.size(), 2u);
  for (const WorkerExit& e : exits) EXPECT_EQ(e.status, ExitStatus::Signaled(SIGKILL));
}

TEST(WorkerGroup, HurrySkipsTheGracePeriod) {
  Deadline d(60);
  Fixture f;
  auto g = WorkerGroup::Start(
      sh_workers(1, "trap '' TERM; echo ready; while :; do sleep 0.05; done"), f.options());
  ASSERT_TRUE(g.ok());
  auto t0 = std::chrono::steady_clock::now();
  while (lines_of(slurp(f.dir / "echo.out")).empty() && since(t0) < 20) (*g)->poll(0.1);
  t0 = std::chrono::steady_clock::now();
  auto exits = (*g)->stop(SIGTERM, 30, [] { return true; });
  EXPECT_LT(since(t0), 8);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].status, ExitStatus::Signaled(SIGKILL));
}

TEST(WorkerGroup, DestructionKillsRunningWorkers) {
  Deadline d(60);
  Fixture f;
  std::vector<pid_t> pids;
  {
    auto g = WorkerGroup::Start(sh_workers(2, "echo $$; exec sleep 60"), f.options());
    ASSERT_TRUE(g.ok());
    auto t0 = std::chrono::steady_clock::now();
    while (lines_of(slurp(f.dir / "echo.out")).size() < 2 && since(t0) < 20) (*g)->poll(0.1);
    for (const std::string& l : lines_of(slurp(f.dir / "echo.out")))
      pids.push_back(std::stoi(l.substr(l.find(']') + 2)));
  }
  ASSERT_EQ(pids.size(), 2u);
  for (pid_t p : pids) EXPECT_NE(::kill(p, 0), 0) << p;  // our children: reaped, gone
}

TEST(WorkerGroup, FailedStartStopsTheOthers) {
  Deadline d(60);
  Fixture f;
  auto specs = sh_workers(2, "exec sleep 60");
  specs[1].argv = {"/nonexistent/worker"};
  auto g = WorkerGroup::Start(specs, f.options());
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("rank 1"), std::string::npos);
  EXPECT_NE(g.status().message().find("/nonexistent/worker"), std::string::npos);
}

TEST(WorkerGroup, LogHeaderAndAppend) {
  Deadline d(60);
  Fixture f;
  for (int round = 0; round < 2; ++round) {
    WorkerGroupOptions o = f.options();
    if (round == 1) o.log_header = "--- restart 1 ---";
    auto g = WorkerGroup::Start(sh_workers(1, "echo run"), o);
    ASSERT_TRUE(g.ok());
    run_to_end(**g);
  }
  EXPECT_EQ(slurp(f.dir / "worker-0.log"), "run\n--- restart 1 ---\nrun\n");
}

TEST(WorkerGroup, PollIsBoundedAndReturnsEarlyOnExit) {
  Deadline d(60);
  Fixture f;
  auto g = WorkerGroup::Start(sh_workers(1, "exec sleep 0.3"), f.options());
  ASSERT_TRUE(g.ok());
  auto t0 = std::chrono::steady_clock::now();
  std::vector<WorkerExit> exits;
  while (exits.empty() && since(t0) < 20) exits = (*g)->poll(10);
  EXPECT_LT(since(t0), 5);  // woke up on the exit, not the timeout
  auto t1 = std::chrono::steady_clock::now();
  EXPECT_TRUE((*g)->poll(0.2).empty());
  EXPECT_LT(since(t1), 5);
}

}  // namespace
}  // namespace cairn::elastic
