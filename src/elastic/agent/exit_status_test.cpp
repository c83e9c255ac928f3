#include "cairn/elastic/exit_status.h"

#include <gtest/gtest.h>
#include <signal.h>

namespace cairn::elastic {
namespace {

TEST(ExitStatus, Describe) {
  EXPECT_EQ(ExitStatus::Exited(0).ToString(), "exit code 0");
  EXPECT_EQ(ExitStatus::Exited(3).ToString(), "exit code 3");
  EXPECT_EQ(ExitStatus::Signaled(SIGKILL).ToString(), "signal SIGKILL (9)");
  EXPECT_EQ(ExitStatus::Signaled(SIGSEGV).ToString(), "signal SIGSEGV (11)");
  EXPECT_EQ(signal_name(SIGTERM), "SIGTERM");
  EXPECT_EQ(signal_name(SIGINT), "SIGINT");
  EXPECT_EQ(signal_name(0), "signal 0");
  EXPECT_EQ(signal_name(200), "signal 200");
}

TEST(ExitStatus, SuccessAndShellCode) {
  EXPECT_TRUE(ExitStatus::Exited(0).success());
  EXPECT_FALSE(ExitStatus::Exited(1).success());
  EXPECT_FALSE(ExitStatus::Signaled(SIGTERM).success());
  EXPECT_EQ(ExitStatus::Exited(7).shell_code(), 7);
  EXPECT_EQ(ExitStatus::Signaled(SIGKILL).shell_code(), 137);
  EXPECT_EQ(ExitStatus::Signaled(SIGTERM).shell_code(), 143);
}

TEST(ExitStatus, RestartBudget) {
  EXPECT_FALSE(may_restart(0, 0));
  EXPECT_TRUE(may_restart(0, 1));
  EXPECT_FALSE(may_restart(1, 1));
  EXPECT_TRUE(may_restart(1, 2));
  EXPECT_FALSE(may_restart(2, 2));
  EXPECT_FALSE(may_restart(3, 2));
}

TEST(ExitStatus, AgentExitCode) {
  EXPECT_EQ(agent_exit_code(std::nullopt, 0), 0);
  EXPECT_EQ(agent_exit_code(ExitStatus::Exited(3), 0), 3);
  EXPECT_EQ(agent_exit_code(ExitStatus::Exited(255), 0), 255);
  EXPECT_EQ(agent_exit_code(ExitStatus::Signaled(SIGSEGV), 0), 139);
  EXPECT_EQ(agent_exit_code(ExitStatus::Exited(0), 0), 1);  // a failure never reports success
  // The agent's own interruption wins over any worker's status.
  EXPECT_EQ(agent_exit_code(std::nullopt, SIGINT), 130);
  EXPECT_EQ(agent_exit_code(std::nullopt, SIGTERM), 143);
  EXPECT_EQ(agent_exit_code(ExitStatus::Exited(3), SIGTERM), 143);
}

}  // namespace
}  // namespace cairn::elastic
