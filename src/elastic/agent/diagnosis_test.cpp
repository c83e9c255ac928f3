#include "cairn/elastic/diagnosis.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

namespace cairn::elastic {
namespace {

using ::testing::HasSubstr;

TEST(Diagnosis, UserErrorsAreNotRestartable) {
  auto d = diagnose(ExitStatus::Exited(2),
                    {"loading", "cairn: error: invalid argument: unknown key 'train.lrr'"});
  EXPECT_EQ(d.kind, FailureKind::kUserError);
  EXPECT_FALSE(d.restartable);
  EXPECT_THAT(d.reason, HasSubstr("unknown key 'train.lrr'"));
  EXPECT_FALSE(
      diagnose(ExitStatus::Exited(1), {"ModuleNotFoundError: No module named 'x'"}).restartable);
  EXPECT_FALSE(diagnose(ExitStatus::Exited(2), {}).restartable);  // usage errors exit 2
  EXPECT_EQ(std::string(failure_kind_name(FailureKind::kUserError)), "user_error");
}

TEST(Diagnosis, CrashesKillsAndLostPeersAreRestartable) {
  auto seg = diagnose(ExitStatus::Signaled(SIGSEGV), {});
  EXPECT_EQ(seg.kind, FailureKind::kCrash);
  EXPECT_TRUE(seg.restartable);
  EXPECT_THAT(diagnose(ExitStatus::Signaled(SIGBUS), {}).reason, HasSubstr("/dev/shm"));
  auto kill = diagnose(ExitStatus::Signaled(SIGKILL), {"step 10"});
  EXPECT_EQ(kill.kind, FailureKind::kKilled);
  EXPECT_THAT(kill.reason, HasSubstr("OOM"));
  auto peer =
      diagnose(ExitStatus::Exited(1),
               {"cairn: error: all-reduce failed: [pair.cc:598] Connection closed by peer"});
  EXPECT_EQ(peer.kind, FailureKind::kPeerLost);
  EXPECT_TRUE(peer.restartable);
  auto oom = diagnose(ExitStatus::Signaled(SIGABRT),
                      {"terminate called after throwing an instance of 'std::bad_alloc'"});
  EXPECT_EQ(oom.kind, FailureKind::kOutOfMemory);
  auto other = diagnose(ExitStatus::Exited(7), {"", "rank 1 is broken", ""});
  EXPECT_EQ(other.kind, FailureKind::kError);
  EXPECT_TRUE(other.restartable);
  EXPECT_THAT(other.reason, HasSubstr("exit code 7: rank 1 is broken"));
}

// A worker's typed PeerLost error (e.g. rank 0 could not take a snapshot the others wait for)
// and the shard service's answer after the master restarted are consequences, not the node's
// failure: the master does not count them against it.
TEST(Diagnosis, LostPeersAndARestartedMasterAreNamed) {
  auto peer = diagnose(ExitStatus::Exited(1),
                       {"cairn: error: peer lost: checkpoint at step 219: rank 0 could not take "
                        "the shard service's snapshot"});
  EXPECT_EQ(peer.kind, FailureKind::kPeerLost);
  EXPECT_TRUE(peer.restartable);
  auto master = diagnose(
      ExitStatus::Exited(1),
      {"cairn: error: internal error: GetShards at master 10.0.0.1:29400: gRPC status 5: dataset "
       "train.bin/60343-tokens/T32/B4 is not known to the master (create it first; a restarted "
       "master forgets datasets: the trainers restore them from their checkpoint)"});
  EXPECT_EQ(master.kind, FailureKind::kMasterLost);
  EXPECT_TRUE(master.restartable);
  EXPECT_THAT(master.reason, HasSubstr("the master restarted"));
  EXPECT_EQ(std::string(failure_kind_name(FailureKind::kMasterLost)), "master_lost");
}

// The newest line decides: a user error printed after a peer message wins, and the reverse.
TEST(Diagnosis, NewestMatchingLineDecides) {
  EXPECT_EQ(
      diagnose(ExitStatus::Exited(1), {"Connection closed by peer", "cairn: error: not found: x"})
          .kind,
      FailureKind::kUserError);
  EXPECT_EQ(diagnose(ExitStatus::Exited(1), {"FileNotFoundError: a", "all-reduce failed"}).kind,
            FailureKind::kPeerLost);
}

}  // namespace
}  // namespace cairn::elastic
