#include "cairn/elastic/standby.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "elastic/testing_impl.h"

namespace cairn::elastic {
namespace {

using testing::read_all;
using testing::ScratchDir;
using testing::slurp;

// This test binary doubles as the standby program: run with STANDBY_TEST_CHILD=1 it parks
// before gtest's main, like cairn's main does, then prints what it was activated with.
const bool kIsChild = [] {
  if (std::getenv("STANDBY_TEST_CHILD") == nullptr) return false;
  await_activation_if_standby();
  char comm[32] = {};
  std::ifstream("/proc/self/comm").getline(comm, sizeof(comm));
  const char* rank = std::getenv("RANK");
  const char* keep = std::getenv("KEEP");
  std::printf("RANK=%s KEEP=%s FD=%s comm=%s\n", rank ? rank : "-", keep ? keep : "-",
              std::getenv(kStandbyFdVariable) ? "set" : "unset", comm);
  std::fflush(stdout);
  std::_Exit(0);
}();

WorkerSpec child_spec(int local_rank, const std::string& rank, const std::string& keep) {
  WorkerSpec s;
  s.rank = std::stoi(rank);
  s.local_rank = local_rank;
  s.argv = {std::filesystem::read_symlink("/proc/self/exe").string()};
  s.env = {"STANDBY_TEST_CHILD=1", "KEEP=" + keep, "RANK=" + rank, "WORLD_SIZE=8"};
  return s;
}

std::string comm_of(pid_t pid) {
  std::string c = slurp("/proc/" + std::to_string(pid) + "/comm");
  while (!c.empty() && c.back() == '\n') c.pop_back();
  return c;
}

// Waits until `pid` has parked (renamed itself), at most 20 s.
bool parked(pid_t pid) {
  for (int i = 0; i < 2000; ++i) {
    if (comm_of(pid) == kStandbyProcessName) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST(Standby, ActivationMessageRoundTrips) {
  const std::vector<std::string> env = {"A=1", "B=", "C=x=y", "PATH=/usr/bin:/bin"};
  auto parsed = parse_activation(activation_message(env));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(*parsed, env);
  auto empty = parse_activation(activation_message({}));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(Standby, MalformedActivationsAreRejectedByName) {
  auto no_magic = parse_activation(std::string("A=1\0", 4));
  ASSERT_FALSE(no_magic.ok());
  EXPECT_NE(no_magic.status().message().find("cairn-activate"), std::string::npos);
  auto unterminated = parse_activation("cairn-activate 1\nA=1");
  ASSERT_FALSE(unterminated.ok());
  EXPECT_NE(unterminated.status().message().find("NUL"), std::string::npos);
  auto no_equals = parse_activation(std::string("cairn-activate 1\nNOVALUE\0", 25));
  ASSERT_FALSE(no_equals.ok());
  EXPECT_NE(no_equals.status().message().find("NOVALUE"), std::string::npos);
  auto empty_name = parse_activation(std::string("cairn-activate 1\n=x\0", 20));
  EXPECT_FALSE(empty_name.ok());
}

TEST(Standby, RoundVariablesAreTheOnesThatChangeBetweenRounds) {
  for (const char* v : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK",
                        "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_RUN_ID"})
    EXPECT_TRUE(is_round_variable(v)) << v;
  for (const char* v :
       {"OMP_NUM_THREADS", "PATH", "CAIRN_RUN_DIR", "RANKS", "LOCAL_RANK", "LOCAL_WORLD_SIZE", ""})
    EXPECT_FALSE(is_round_variable(v)) << v;
}

TEST(StandbyPool, ActivatedStandbyRunsWithTheRoundsEnvironment) {
  StandbyPool pool;
  pool.fill({child_spec(0, "0", "same")});
  ASSERT_EQ(pool.size(), 1);
  const pid_t pid = pool.pid(0);
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(parked(pid)) << "comm " << comm_of(pid);
  // Another round: a new rank and world, the same everything else.
  auto process = pool.take(child_spec(0, "5", "same"));
  ASSERT_NE(process, nullptr);
  EXPECT_EQ(process->pid(), pid);
  EXPECT_EQ(pool.size(), 0);
  const std::string out = read_all(process->stdout_fd());
  // The standby's CAIRN_STANDBY_FD is gone with the rest of its old environment, and it has its
  // own name back.
  EXPECT_NE(out.find("RANK=5 KEEP=same FD=unset comm="), std::string::npos) << out;
  EXPECT_EQ(out.find("comm=cairn-standby"), std::string::npos) << out;
  auto status = process->wait(20);
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->success()) << status->ToString();
}

// Resident anonymous memory of `pid`, in bytes.
int64_t rss_anon(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("RssAnon:", 0) == 0) return std::atoll(line.c_str() + 8) * 1024;
  return -1;
}

TEST(StandbyPool, StandbyFaultsInTheHeapItIsAskedForAndKeepsIt) {
  StandbyPool pool;
  pool.fill({child_spec(0, "0", "x"), child_spec(1, "1", "x")}, {300ll << 20, 0});
  const pid_t big = pool.pid(0), small = pool.pid(1);
  ASSERT_TRUE(parked(big));
  ASSERT_TRUE(parked(small));
  // Parked means renamed, which happens before the prefault: wait for the pages.
  for (int i = 0; i < 500 && rss_anon(big) < (300ll << 20); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_GE(rss_anon(big), 300ll << 20) << "freed again instead of kept for reuse";
  EXPECT_LT(rss_anon(small), rss_anon(big) - (250ll << 20));
  auto process = pool.take(child_spec(0, "0", "x"));
  ASSERT_NE(process, nullptr);
  // CAIRN_STANDBY_PREFAULT is not part of the environment the comparison looks at.
  EXPECT_NE(read_all(process->stdout_fd()).find("RANK=0 KEEP=x"), std::string::npos);
}

TEST(StandbyPool, StandbyWithAnotherEnvironmentIsRetiredNotUsed) {
  StandbyPool pool;
  pool.fill({child_spec(0, "0", "old")});
  const pid_t pid = pool.pid(0);
  ASSERT_TRUE(parked(pid));
  EXPECT_EQ(pool.take(child_spec(0, "0", "new")), nullptr);
  EXPECT_EQ(pool.size(), 0);
  EXPECT_NE(::kill(pid, 0), 0) << "the retired standby was not reaped";
  // No standby for a local rank it was never filled for.
  pool.fill({child_spec(0, "0", "old")});
  EXPECT_EQ(pool.take(child_spec(1, "1", "old")), nullptr);
  EXPECT_EQ(pool.size(), 1);
}

TEST(StandbyPool, DeadStandbyIsNotUsed) {
  StandbyPool pool;
  pool.fill({child_spec(0, "0", "x"), child_spec(1, "1", "x")});
  ASSERT_EQ(pool.size(), 2);
  const pid_t victim = pool.pid(1);
  ASSERT_TRUE(parked(victim));
  ::kill(victim, SIGKILL);
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, victim, &info, WEXITED | WNOWAIT), 0);  // dead, left for the pool
  EXPECT_EQ(pool.take(child_spec(1, "1", "x")), nullptr);
  auto alive = pool.take(child_spec(0, "0", "x"));
  ASSERT_NE(alive, nullptr);
  EXPECT_NE(read_all(alive->stdout_fd()).find("RANK=0 KEEP=x"), std::string::npos);
}

TEST(StandbyPool, ClearRetiresEveryStandby) {
  std::vector<pid_t> pids;
  {
    StandbyPool pool;
    pool.fill({child_spec(0, "0", "x"), child_spec(1, "1", "x")});
    for (int local : {0, 1}) {
      pids.push_back(pool.pid(local));
      ASSERT_TRUE(parked(pids.back()));
    }
    const auto t0 = std::chrono::steady_clock::now();
    pool.clear();
    // Retired by closing the socket (they exit 0 at once), not after a kill timeout.
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.5);
    EXPECT_EQ(pool.size(), 0);
  }
  for (pid_t p : pids) EXPECT_NE(::kill(p, 0), 0) << "standby " << p << " still exists";
}

TEST(StandbyPool, GarbageOnTheActivationSocketEndsTheStandbyWithAMessage) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd mine(sv[0]), theirs(sv[1]);
  WorkerSpec spec = child_spec(0, "0", "x");
  SpawnOptions so;
  so.argv = spec.argv;
  so.env = spec.env;
  so.env.push_back(std::string(kStandbyFdVariable) + "=3");
  so.child_fd3 = theirs.get();
  auto process = ProcessHandle::Spawn(so);
  ASSERT_TRUE(process.ok()) << process.status().ToString();
  theirs.reset();
  const std::string garbage = "GET / HTTP/1.1\r\n\r\n";
  ASSERT_EQ(::write(mine.get(), garbage.data(), garbage.size()), ssize_t(garbage.size()));
  mine.reset();
  const std::string err = read_all((*process)->stderr_fd());
  EXPECT_NE(err.find("standby worker: the activation does not start with"), std::string::npos)
      << err;
  auto status = (*process)->wait(20);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->ToString(), ExitStatus::Exited(2).ToString());
}

TEST(StandbyPool, WorkerGroupStartsRanksFromStandbysAndAfreshOtherwise) {
  ScratchDir dir{"standby_group"};
  StandbyPool pool;
  pool.fill({child_spec(0, "0", "x")});
  ASSERT_TRUE(parked(pool.pid(0)));
  WorkerGroupOptions o;
  o.log_dir = dir.path();
  o.echo_stdout_fd = -1;
  o.echo_stderr_fd = -1;
  // Rank 3 from the standby; rank 4 (local rank 1, no standby) as a new process.
  WorkerSpec fresh = child_spec(1, "4", "x");
  auto group = WorkerGroup::Start({child_spec(0, "3", "x"), fresh}, o, &pool);
  ASSERT_TRUE(group.ok()) << group.status().ToString();
  EXPECT_EQ((*group)->num_from_standby(), 1);
  for (int i = 0; i < 200 && (*group)->num_running() > 0; ++i) (*group)->poll(0.1);
  (*group)->drain(1.0);
  EXPECT_NE(slurp(dir / "worker-3.log").find("RANK=3 KEEP=x"), std::string::npos);
  EXPECT_NE(slurp(dir / "worker-4.log").find("RANK=4 KEEP=x"), std::string::npos);
}

}  // namespace
}  // namespace cairn::elastic
