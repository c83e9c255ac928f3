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

// gdb's text for a worker (pid 7310) whose main thread waits for its peers in an all-reduce,
// while another of its threads is in a frame of the same name (which does not count).
constexpr char kWaitingWorker[] = R"(Thread 3 (Thread 0x7ff12deb66c0 (LWP 8129) "cairn-torch"):
#0  0x00007ff148926f36 in epoll_wait (epfd=8) at epoll_wait.c:30
#1  0x00005623019c8bda in cairn::comm::Pending::wait () at src/comm/group.cpp:98

Thread 1 (Thread 0x7ff12e9f8240 (LWP 7310) "cairn-torch"):
#0  __futex_abstimed_wait_common64 (private=0) at ./nptl/futex-internal.c:57
#6  0x00007ff14cec290e in c10d::Work::wait(std::chrono::duration<long>) () from libtorch_cpu.so
#7  0x00005623019c8bda in cairn::comm::Pending::wait () at src/comm/group.cpp:98
#8  0x00005623019be2d5 in cairn::parallel::DataParallel::finish_backward () at data_parallel.cpp:264
)";

using W = MainThreadWait;

TEST(Stacks, AMainThreadInACollectiveWaitsForItsPeers) {
  EXPECT_EQ(main_thread_waits_for(kWaitingWorker, 7310), W::kCollective);
  // Another pid's main thread is not in the text; thread 3 (8129) is not a main thread.
  EXPECT_EQ(main_thread_waits_for(kWaitingWorker, 7311), W::kNothing);
  EXPECT_EQ(main_thread_waits_for(kWaitingWorker, 812), W::kNothing);
}

// A worker cut off from the master waits in the shard service's call (dynamic data sharding):
// the master is what it waits for, not other ranks and not itself.
TEST(Stacks, AMainThreadInAMasterCallWaitsForTheMaster) {
  const std::string on_master = R"(Thread 1 (Thread 0x7ff2 (LWP 7310) "cairn-torch"):
#0  0x00007ff148926f36 in epoll_wait (epfd=8) at epoll_wait.c:30
#4  0x00007ff14a1b2c11 in grpc::internal::BlockingUnaryCallImpl<cairn::proto::GetShardsRequest, cairn::proto::GetShardsReply>::BlockingUnaryCallImpl () from libgrpc++.so.1.51
#6  0x00005623019d0a22 in cairn::elastic::MasterClient::get_shards (this=0x5623) at master_client.cpp:210
#7  0x00005623019d2b10 in cairn::elastic::ShardClient::next_for_step (this=0x5624) at rpc_shard_client.cpp:53
#8  0x00005623018ebfad in cairn::train::Trainer::Impl::train_step () at trainer.cpp:600
)";
  EXPECT_EQ(main_thread_waits_for(on_master, 7310), W::kMaster);
  EXPECT_EQ(main_thread_waits_for(on_master, 8129), W::kNothing);
  // Between polls for shards the shard client sleeps in its own frame: waiting all the same.
  EXPECT_EQ(
      main_thread_waits_for("Thread 1 (process 42 \"w\"):\n#2  0x1 in "
                            "cairn::elastic::ShardClient::next () at rpc_shard_client.cpp:40\n",
                            42),
      W::kMaster);
}

TEST(Stacks, AMainThreadComputingIsNotWaiting) {
  const std::string computing = R"(Thread 2 (Thread 0x7ff1 (LWP 8128) "cairn-torch"):
#0  0x00007ff14891a26f in __GI___poll () at poll.c:29
#1  0x00005623019c8bda in cairn::comm::Pending::wait () at src/comm/group.cpp:98

Thread 1 (Thread 0x7ff2 (LWP 7310) "cairn-torch"):
#0  0x00007fe7162da4ed in sgemm_kernel_HASWELL () from libopenblas.so.0
#1  0x00005623018ebfad in cairn::train::Trainer::Impl::train_step () at trainer.cpp:600
)";
  EXPECT_EQ(main_thread_waits_for(computing, 7310), W::kNothing);
  EXPECT_EQ(main_thread_waits_for(
                "Thread 1 (process 42 \"w\"):\n#3  0x1 in cairn::comm::Pending::wait () at "
                "group.cpp:98\n",
                42),
            W::kCollective);
  // The kernel's view (no gdb) cannot tell.
  EXPECT_EQ(
      main_thread_waits_for(
          "gdb is not installed (...); the kernel's view of pid 7310:\nthread 7310 (cairn-torch) "
          "waiting in futex_wait_queue\n",
          7310),
      W::kNothing);
}

}  // namespace
}  // namespace cairn::elastic
