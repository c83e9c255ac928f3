#include "cairn/core/proc.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

namespace cairn::core {
namespace {

TEST(Proc, ThisProcessIsAliveWithItsStartTime) {
  const uint64_t start = process_start_time(::getpid());
  EXPECT_GT(start, 0u);
  EXPECT_TRUE(process_alive(::getpid(), start));
  EXPECT_TRUE(process_alive(::getpid(), 0));
  EXPECT_FALSE(process_alive(::getpid(), start + 1)) << "another start time is another process";
}

TEST(Proc, AnExitedChildIsDeadEvenAsAZombie) {
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  const uint64_t start = process_start_time(child);
  // Not reaped yet: a zombie, which counts as dead.
  for (int i = 0; i < 200 && process_alive(child, start); ++i) ::usleep(10000);
  EXPECT_FALSE(process_alive(child, start));
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_FALSE(process_alive(child, start));
  EXPECT_EQ(process_start_time(child), 0u);
}

TEST(Proc, NoSuchProcess) {
  EXPECT_FALSE(process_alive(0, 0));
  EXPECT_FALSE(process_alive(-5, 0));
  EXPECT_EQ(process_start_time(0), 0u);
}

}  // namespace
}  // namespace cairn::core
