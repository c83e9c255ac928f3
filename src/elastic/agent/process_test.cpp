#include "cairn/elastic/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>

#include "elastic/testing_impl.h"

namespace cairn::elastic {
namespace {

using testing::Deadline;
using testing::read_all;

std::unique_ptr<ProcessHandle> spawn_sh(const std::string& script,
                                        std::vector<std::string> env = {"PATH=/usr/bin:/bin"}) {
  SpawnOptions o;
  o.argv = {"/bin/sh", "-c", script};
  o.env = std::move(env);
  auto p = ProcessHandle::Spawn(o);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return p.ok() ? std::move(p).value() : nullptr;
}

// Running (or stopped), not gone and not a zombie waiting for a parent that does not reap.
bool alive(pid_t pid) {
  std::string stat = testing::slurp("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
}

TEST(Process, ExitCodeAndOutput) {
  Deadline d(30);
  auto p = spawn_sh("echo out; echo err >&2; exit 3");
  ASSERT_TRUE(p);
  EXPECT_EQ(read_all(p->stdout_fd()), "out\n");
  EXPECT_EQ(read_all(p->stderr_fd()), "err\n");
  auto s = p->wait(10);
  ASSERT_TRUE(s);
  EXPECT_EQ(*s, ExitStatus::Exited(3));
  EXPECT_TRUE(p->reaped());
  EXPECT_EQ(p->try_reap(), s);  // stable
}

TEST(Process, KilledBySignal) {
  Deadline d(30);
  auto p = spawn_sh("kill -SEGV $$");
  ASSERT_TRUE(p);
  auto s = p->wait(10);
  ASSERT_TRUE(s);
  EXPECT_EQ(*s, ExitStatus::Signaled(SIGSEGV));
}

TEST(Process, OwnProcessGroupAndExactEnvironment) {
  Deadline d(30);
  auto p = spawn_sh("echo $FOO; env | wc -l; read x || echo stdin-empty", {"FOO=bar"});
  ASSERT_TRUE(p);
  EXPECT_EQ(::getpgid(p->pid()), p->pid());
  std::string out = read_all(p->stdout_fd());
  // FOO plus what sh itself exports (PWD, maybe OLDPWD/SHLVL/_), nothing of the test's own.
  EXPECT_EQ(out.substr(0, 4), "bar\n") << out;
  EXPECT_LE(std::stoi(out.substr(4)), 5) << out;
  EXPECT_NE(out.find("stdin-empty"), std::string::npos);
  EXPECT_EQ(*p->wait(10), ExitStatus::Exited(0));
}

TEST(Process, DescriptorsAreNotInherited) {
  Deadline d(30);
  int fd = ::open("/dev/null", O_RDONLY);  // deliberately without O_CLOEXEC
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::dup2(fd, 57), 57);
  auto p = spawn_sh("if [ -e /proc/self/fd/57 ]; then echo leaked; else echo clean; fi");
  ASSERT_TRUE(p);
  EXPECT_EQ(read_all(p->stdout_fd()), "clean\n");
  p->wait(10);
  ::close(57);
  ::close(fd);
}

TEST(Process, BlockedAndIgnoredSignalsAreReset) {
  Deadline d(30);
  sigset_t term, old;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  ::pthread_sigmask(SIG_BLOCK, &term, &old);
  auto prev = ::signal(SIGINT, SIG_IGN);
  auto p = spawn_sh("echo ready; sleep 30");
  ::signal(SIGINT, prev);
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ASSERT_TRUE(p);
  ASSERT_EQ(read_all(p->stdout_fd(), 0.5).substr(0, 6), "ready\n");
  p->signal_group(SIGINT);
  auto s = p->wait(10);
  ASSERT_TRUE(s);
  EXPECT_EQ(*s, ExitStatus::Signaled(SIGINT));
}

TEST(Process, MissingExecutableFailsClearly) {
  SpawnOptions o;
  o.argv = {"/nonexistent/cairn-worker"};
  auto p = ProcessHandle::Spawn(o);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kNotFound);
  EXPECT_NE(p.status().message().find("/nonexistent/cairn-worker"), std::string::npos);
  o.argv = {"/etc/hostname"};  // not executable
  p = ProcessHandle::Spawn(o);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kIoError);
  o.argv = {};
  EXPECT_FALSE(ProcessHandle::Spawn(o).ok());
}

TEST(Process, WaitTimesOutWhileRunning) {
  Deadline d(30);
  auto p = spawn_sh("sleep 30");
  ASSERT_TRUE(p);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(p->wait(0.2));
  EXPECT_FALSE(p->try_reap());
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(waited, 0.19);
  EXPECT_LT(waited, 5);
}

TEST(Process, DestructorKillsTheWholeGroup) {
  Deadline d(30);
  pid_t leader, child;
  {
    auto p = spawn_sh("sleep 60 & echo $!; wait");
    ASSERT_TRUE(p);
    leader = p->pid();
    std::string out;
    while (out.find('\n') == std::string::npos) out += read_all(p->stdout_fd(), 0.2);
    child = std::stoi(out);
    EXPECT_TRUE(alive(child));
  }
  EXPECT_FALSE(alive(leader));  // reaped, not a zombie
  for (int i = 0; i < 100 && alive(child); ++i) ::usleep(20000);
  EXPECT_FALSE(alive(child));  // killed with the group (then reaped by init)
}

TEST(Process, ReapingKillsLeftoversOfTheGroup) {
  Deadline d(30);
  auto p = spawn_sh("sleep 60 >/dev/null 2>&1 & echo $!; exit 4");
  ASSERT_TRUE(p);
  std::string out;
  while (out.find('\n') == std::string::npos) out += read_all(p->stdout_fd(), 0.2);
  pid_t child = std::stoi(out);
  auto s = p->wait(10);
  ASSERT_TRUE(s);
  EXPECT_EQ(*s, ExitStatus::Exited(4));
  for (int i = 0; i < 100 && alive(child); ++i) ::usleep(20000);
  EXPECT_FALSE(alive(child));
}

TEST(Process, ExitDescriptorBecomesReadable) {
  Deadline d(30);
  auto p = spawn_sh("sleep 0.2");
  ASSERT_TRUE(p);
  // Kernels without pidfd (before 5.3) report -1; the agent then polls with a timeout.
  if (p->exit_fd() >= 0) {
    pollfd pfd{p->exit_fd(), POLLIN, 0};
    EXPECT_EQ(::poll(&pfd, 1, 10000), 1);
  }
  EXPECT_TRUE(p->wait(10));
  EXPECT_LT(p->exit_fd(), 0);
}

}  // namespace
}  // namespace cairn::elastic
