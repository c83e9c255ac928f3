#include "cairn/elastic/stacks.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

namespace cairn::elastic {
namespace {

// A child stuck in a named function: its stack names it (gdb), or at least its threads are
// listed (kernel view without gdb).
extern "C" __attribute__((noinline)) void cairn_test_stuck_here() {
  for (;;) ::pause();
}

TEST(Stacks, DumpsEveryThreadOfAStuckProcess) {
  pid_t child = ::fork();
  if (child == 0) {
    cairn_test_stuck_here();
    ::_exit(0);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::string s = dump_stacks(child, 60);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  if (s.find("gdb is not installed") == std::string::npos)
    EXPECT_THAT(s, ::testing::HasSubstr("cairn_test_stuck_here")) << s;
  else
    EXPECT_THAT(s, ::testing::HasSubstr("thread ")) << s;
}

}  // namespace
}  // namespace cairn::elastic
