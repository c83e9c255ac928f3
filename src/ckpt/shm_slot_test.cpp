#include "cairn/ckpt/shm_slot.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <thread>

namespace cairn::ckpt {
namespace {

using ::testing::HasSubstr;

std::string Name(const char* what) {
  return "/cairn-test-" + std::to_string(getpid()) + "-" + what;
}

std::vector<NamedTensor> State(float v) {
  return {{"model.w", torch::full({300, 7}, v)},
          {"optim.w.exp_avg", torch::arange(11, torch::kLong)},
          {"model.h", torch::ones({5}, torch::kBFloat16) * v},
          {"t.strided", torch::full({4, 6}, v).t()}};
}

TEST(ShmSlot, WriteThenReadFromAnotherMapping) {
  auto owner = ShmSlot::Create(Name("rt"), 1 << 20);
  ASSERT_TRUE(owner.ok()) << owner.status().ToString();
  EXPECT_EQ((*owner)->ready_step(), -1);
  EXPECT_EQ((*owner)->read().status().code(), StatusCode::kNotFound);
  auto worker = ShmSlot::Open(Name("rt"));
  ASSERT_TRUE(worker.ok());
  auto info = (*worker)->write(42, State(2.5f), {{"step", 42}, {"note", "x"}}, 3);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_GT(info->bytes, 300 * 7 * 4);
  EXPECT_EQ((*owner)->ready_step(), 42);
  auto snap = (*owner)->read();
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  EXPECT_EQ(snap->step, 42);
  EXPECT_EQ(snap->state["note"], "x");
  for (auto& nt : State(2.5f)) {
    ASSERT_TRUE(snap->tensors.count(nt.name)) << nt.name;
    EXPECT_TRUE(torch::equal(snap->tensors[nt.name], nt.tensor)) << nt.name;
    EXPECT_EQ(snap->tensors[nt.name].scalar_type(), nt.tensor.scalar_type());
  }
}

TEST(ShmSlot, BigWriteUsesThreadsAndRoundTrips) {
  auto big = torch::randn({12 << 20});  // 48 MiB
  std::vector<NamedTensor> t{{"big", big}};
  auto slot = ShmSlot::Create(Name("big"), ShmSlot::bytes_needed(t, {}));
  ASSERT_TRUE(slot.ok());
  ASSERT_TRUE((*slot)->write(1, t, nlohmann::json::object(), 4).ok());
  auto snap = (*slot)->read();
  ASSERT_TRUE(snap.ok());
  EXPECT_TRUE(torch::equal(snap->tensors["big"], big));
}

TEST(ShmSlot, TooBigLeavesThePreviousContent) {
  auto slot = ShmSlot::Create(Name("small"), 16 << 10);
  ASSERT_TRUE(slot.ok());
  ASSERT_TRUE((*slot)->write(1, {{"a", torch::ones({10})}}, {}).ok());
  auto r = (*slot)->write(2, {{"a", torch::ones({100000})}}, {});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("does not fit"));
  EXPECT_EQ((*slot)->ready_step(), 1);
  EXPECT_TRUE((*slot)->read().ok());
}

TEST(ShmSlot, OwnerUnlinksAndStaleSegmentsAreReplaced) {
  {
    auto slot = ShmSlot::Create(Name("gone"), 4096);
    ASSERT_TRUE(slot.ok());
    ASSERT_TRUE(ShmSlot::Open(Name("gone")).ok());
  }
  EXPECT_EQ(ShmSlot::Open(Name("gone")).status().code(), StatusCode::kNotFound);
  // A segment an earlier job left behind under the same name does not stop a new job.
  auto first = ShmSlot::Create(Name("stale"), 4096);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE((*first)->write(3, {{"a", torch::ones({4})}}, {}).ok());
  auto second = ShmSlot::Create(Name("stale"), 8192);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ((*second)->ready_step(), -1);
}

TEST(ShmSlot, RefusesWhenDevShmIsTooSmall) {
  auto free_bytes = shm_free_bytes();
  ASSERT_TRUE(free_bytes.ok());
  auto r = ShmSlot::Create(Name("huge"), *free_bytes * 2);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("bytes free but the checkpoint slot"));
  EXPECT_EQ(ShmSlot::Open(Name("huge")).status().code(), StatusCode::kNotFound);
}

TEST(ShmSlot, GarbageSegmentIsRejected) {
  int fd = ::shm_open(Name("junk").c_str(), O_CREAT | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  std::string junk(8192, 'x');
  ASSERT_EQ(::write(fd, junk.data(), junk.size()), ssize_t(junk.size()));
  ::close(fd);
  auto r = ShmSlot::Open(Name("junk"));
  ::shm_unlink(Name("junk").c_str());
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("not a cairn checkpoint slot"));
}

// A slot is allocated whole when it is created: a page first touched through the mapping of a
// full /dev/shm would be a SIGBUS instead of an error.
TEST(ShmSlot, CreateAllocatesEveryPage) {
  auto slot = ShmSlot::Create(Name("alloc"), 3 << 20);
  ASSERT_TRUE(slot.ok()) << slot.status().ToString();
  struct stat st;
  ASSERT_EQ(::stat(("/dev/shm" + Name("alloc")).c_str(), &st), 0);
  EXPECT_GE(int64_t(st.st_blocks) * 512, int64_t(st.st_size));
}

// A segment whose creator died between sizing and allocating it is refused without reading it
// through a mapping (a read fault allocates the page: on a full /dev/shm, a SIGBUS).
TEST(ShmSlot, SegmentWithoutAnAllocatedHeaderIsNotTouched) {
  const std::string path = "/dev/shm" + Name("sparse");
  int fd = ::shm_open(Name("sparse").c_str(), O_CREAT | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 1 << 20), 0);
  ::close(fd);
  auto r = ShmSlot::Open(Name("sparse"), /*populate=*/true);
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  ::shm_unlink(Name("sparse").c_str());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_THAT(r.status().message(), HasSubstr("has no slot header"));
  EXPECT_EQ(st.st_blocks, 0) << "the header page was faulted in";
}

// A slot others may write, or another user's, is refused before it is mapped; the writer's own
// (0600) opens.
TEST(ShmSlot, OnlyThisUsersPrivateSlotsAreOpened) {
  auto owner = ShmSlot::Create(Name("perm"), 1 << 16);
  ASSERT_TRUE(owner.ok()) << owner.status().ToString();
  ASSERT_TRUE(ShmSlot::Open(Name("perm")).ok());
  const std::string path = "/dev/shm" + Name("perm");
  ASSERT_EQ(::chmod(path.c_str(), 0666), 0);
  auto shared = ShmSlot::Open(Name("perm"));
  ASSERT_FALSE(shared.ok());
  EXPECT_EQ(shared.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(shared.status().message(), HasSubstr("with mode 0666; a checkpoint slot must be"));
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  ASSERT_TRUE(ShmSlot::Open(Name("perm")).ok());
  // Another user's slot: the tests run as root (make test), which can give it away.
  ASSERT_EQ(::geteuid(), 0u) << "this test gives a segment to another user: run it as root";
  ASSERT_EQ(::chown(path.c_str(), 65534, 65534), 0);
  auto foreign = ShmSlot::Open(Name("perm"));
  ASSERT_FALSE(foreign.ok());
  EXPECT_THAT(foreign.status().message(), HasSubstr("is owned by uid 65534"));
  ASSERT_EQ(::chown(path.c_str(), 0, 0), 0);
}

// The persist hand-off: a requested slot is never overwritten until a persister finished it.
TEST(ShmSlot, PersistHandOff) {
  auto writer = ShmSlot::Create(Name("hand"), 1 << 16);
  ASSERT_TRUE(writer.ok());
  auto persister = ShmSlot::Open(Name("hand"));
  ASSERT_TRUE(persister.ok());
  EXPECT_EQ((*persister)->persist_state(), kPersistNone);
  EXPECT_FALSE((*persister)->claim_persist());  // nothing asked
  ASSERT_TRUE(
      (*writer)->write(1, {{"a", torch::full({4}, 1.0f)}}, {}, 1, /*request_persist=*/true).ok());
  EXPECT_EQ((*persister)->persist_state(), kPersistRequested);
  EXPECT_TRUE((*writer)->persist_pending());
  auto refused = (*writer)->write(2, {{"a", torch::full({4}, 2.0f)}}, {});
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("still being persisted"));
  EXPECT_EQ((*writer)->ready_step(), 1);
  ASSERT_TRUE((*persister)->claim_persist());
  EXPECT_FALSE((*persister)->claim_persist());  // one claim only
  EXPECT_TRUE((*writer)->persist_pending());
  // A view points into the segment: no copy.
  auto view = (*persister)->view();
  ASSERT_TRUE(view.ok());
  EXPECT_TRUE(torch::equal(view->tensors["a"], torch::full({4}, 1.0f)));
  (*persister)->requeue_persist();  // as a restarted persister does with a dead one's claim
  EXPECT_EQ((*writer)->persist_state(), kPersistRequested);
  ASSERT_TRUE((*persister)->claim_persist());
  (*persister)->finish_persist(true);
  EXPECT_EQ((*writer)->persist_state(), kPersistDone);
  EXPECT_FALSE((*writer)->persist_pending());
  ASSERT_TRUE((*writer)->write(2, {{"a", torch::full({4}, 2.0f)}}, {}).ok());
  EXPECT_EQ((*writer)->persist_state(), kPersistNone);  // a memory-only copy
  EXPECT_TRUE((*persister)->is_current());
  // The writer replaces the segment (to grow it): the old mapping is no longer current.
  auto grown = ShmSlot::Create(Name("hand"), 1 << 20);
  ASSERT_TRUE(grown.ok());
  EXPECT_FALSE((*persister)->is_current());
}

// A writer killed in the middle of a copy leaves a slot that readers reject.
TEST(ShmSlot, SurvivesWriterCrash) {
  const int64_t n = 64 << 20;  // 256 MiB of floats: the copy takes long enough to be caught
  const std::string name = Name("crash");  // before fork: the name holds the pid
  auto owner = ShmSlot::Create(name, n * 4 + (1 << 20));
  ASSERT_TRUE(owner.ok()) << owner.status().ToString();
  ASSERT_TRUE((*owner)->write(7, {{"small", torch::ones({3})}}, {}).ok());
  pid_t child = ::fork();
  if (child == 0) {
    // The parent's OpenMP pool did not survive the fork (earlier tests of this binary started
    // it): the child fills and copies on its own thread only.
    at::set_num_threads(1);
    auto slot = ShmSlot::Open(name);
    if (!slot.ok()) {
      std::fprintf(stderr, "child: %s\n", slot.status().ToString().c_str());
      ::_exit(3);
    }
    auto big = torch::empty({n});
    std::fill_n(big.data_ptr<float>(), n, 1.0f);
    for (;;) (void)(*slot)->write(8, {{"big", big}}, {}, 1);  // until killed
  }
  // Wait until the child is inside a write, then kill it.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((*owner)->ready_step() == 7 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  while ((*owner)->ready_step() != -1 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "never saw the child writing";
  EXPECT_EQ((*owner)->ready_step(), -1);
  auto r = (*owner)->read();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_THAT(r.status().message(), HasSubstr("unfinished write"));
}

}  // namespace
}  // namespace cairn::ckpt
