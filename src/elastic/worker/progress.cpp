// Worker progress segments.
#include "cairn/elastic/progress.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "cairn/core/fs.h"
#include "cairn/elastic/flash_slots.h"

namespace cairn::elastic {
namespace {

constexpr char kMagic[8] = {'C', 'A', 'I', 'R', 'N', 'P', 'R', 'G'};
constexpr size_t kBytes = 4096;

struct Page {
  char magic[8];
  std::atomic<uint64_t> seq;  // odd while a report is being written (a seqlock)
  std::atomic<int64_t> step;
  std::atomic<int64_t> time_us;
  std::atomic<int32_t> pid;
};
static_assert(sizeof(Page) <= kBytes);

}  // namespace

std::string progress_name(const std::string& run_dir, int global_rank) {
  // Same hash as the run's slots: "/cairn-<hash>-r<rank>-<i>" → "/cairn-<hash>-p<rank>".
  std::string slot = flash_slot_name(run_dir, 0, 0);
  return slot.substr(0, slot.rfind("-r")) + "-p" + std::to_string(global_rank);
}

int unlink_progress(const std::string& run_dir, const std::vector<int>& ranks) {
  int n = 0;
  for (int r : ranks) n += ::shm_unlink(progress_name(run_dir, r).c_str()) == 0;
  return n;
}

Result<std::unique_ptr<ProgressWriter>> ProgressWriter::Open(const std::string& run_dir, int rank) {
  std::string name = progress_name(run_dir, rank);
  int fd = ::shm_open(name.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) return core::errno_status("cannot create shared memory", name);
  if (::ftruncate(fd, kBytes) != 0) {
    Status s = core::errno_status("cannot size shared memory", name);
    ::close(fd);
    return s;
  }
  // The page is allocated now, or the error is reported now: a page of a full /dev/shm first
  // touched through the mapping would kill this process (and a reader of it) with SIGBUS.
  if (int e = ::posix_fallocate(fd, 0, kBytes); e != 0) {
    errno = e;
    Status s = core::errno_status("cannot allocate shared memory (is /dev/shm full?)", name);
    ::close(fd);
    return s;
  }
  void* base = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) return core::errno_status("cannot map shared memory", name);
  auto* p = static_cast<Page*>(base);
  std::memcpy(p->magic, kMagic, sizeof(kMagic));
  p->pid.store(int32_t(::getpid()));
  return std::unique_ptr<ProgressWriter>(new ProgressWriter(base));
}

ProgressWriter::~ProgressWriter() { ::munmap(base_, kBytes); }

void ProgressWriter::report(int64_t step) {
  auto* p = static_cast<Page*>(base_);
  p->seq.fetch_add(1, std::memory_order_acq_rel);
  p->step.store(step, std::memory_order_relaxed);
  p->time_us.store(int64_t(core::unix_time() * 1e6), std::memory_order_relaxed);
  p->pid.store(int32_t(::getpid()), std::memory_order_relaxed);
  p->seq.fetch_add(1, std::memory_order_release);
}

std::optional<Progress> read_progress(const std::string& run_dir, int rank) {
  std::string name = progress_name(run_dir, rank);
  int fd = ::shm_open(name.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  struct stat st;
  // A page its writer has not allocated yet (it died first) is not read through a mapping:
  // that would allocate it, and on a full /dev/shm kill the reader (the agent) with SIGBUS.
  if (::fstat(fd, &st) != 0 || size_t(st.st_size) < kBytes || ::lseek(fd, 0, SEEK_DATA) != 0) {
    ::close(fd);
    return std::nullopt;
  }
  void* base = ::mmap(nullptr, kBytes, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) return std::nullopt;
  const auto* p = static_cast<const Page*>(base);
  std::optional<Progress> out;
  if (std::memcmp(p->magic, kMagic, sizeof(kMagic)) == 0) {
    for (int tries = 0; tries < 100 && !out; ++tries) {
      uint64_t s0 = p->seq.load(std::memory_order_acquire);
      if (s0 % 2 != 0 || s0 == 0) continue;
      Progress g{p->step.load(std::memory_order_relaxed), double(p->time_us.load()) / 1e6,
                 p->pid.load(std::memory_order_relaxed)};
      if (p->seq.load(std::memory_order_acquire) == s0) out = g;
    }
  }
  ::munmap(base, kBytes);
  return out;
}

}  // namespace cairn::elastic
