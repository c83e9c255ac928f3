// Shared-memory checkpoint slots.
#include "cairn/ckpt/shm_slot.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "cairn/core/fs.h"
#include "cairn/core/proc.h"
#include "ckpt/format_impl.h"
#include "ckpt/torch_dtype_impl.h"

namespace cairn::ckpt {
namespace {

constexpr char kShmMagic[8] = {'C', 'A', 'I', 'R', 'N', 'S', 'H', 'M'};
constexpr uint32_t kShmVersion = 2;
constexpr int64_t kHeaderBytes = 4096;
enum SlotState : uint32_t { kEmpty = 0, kWriting = 1, kReady = 2 };

struct Header {
  char magic[8];
  uint32_t version;
  std::atomic<uint32_t> state;
  std::atomic<int64_t> step;
  int64_t capacity;
  int64_t meta_offset;  // from the start of the data area
  int64_t meta_bytes;
  uint64_t meta_xxh3;
  std::atomic<uint32_t> persist;      // PersistState: the hand-off between writer and persister
  std::atomic<int32_t> owner_pid;     // who removes the segment (0: not recorded)
  std::atomic<uint64_t> owner_start;  // that process's start time (core::process_start_time)
};
static_assert(sizeof(Header) <= kHeaderBytes);
static_assert(std::atomic<uint32_t>::is_always_lock_free &&
              std::atomic<int64_t>::is_always_lock_free);

Header* header(void* base) { return static_cast<Header*>(base); }
char* data(void* base) { return static_cast<char*>(base) + kHeaderBytes; }

struct Layout {
  std::vector<int64_t> offsets;
  int64_t data_end = 0;
};

Layout plan(const std::vector<NamedTensor>& tensors) {
  Layout l;
  for (auto& t : tensors) {
    l.data_end = align_up(l.data_end);
    l.offsets.push_back(l.data_end);
    l.data_end += int64_t(t.tensor.nbytes());
  }
  return l;
}

nlohmann::json metadata(const std::vector<NamedTensor>& tensors, const Layout& l,
                        const nlohmann::json& state) {
  nlohmann::json list = nlohmann::json::array();
  for (size_t i = 0; i < tensors.size(); ++i)
    list.push_back({{"name", tensors[i].name},
                    {"dtype", dtype_name(tensors[i].tensor.scalar_type())},
                    {"shape", tensors[i].tensor.sizes().vec()},
                    {"offset", l.offsets[i]},
                    {"bytes", int64_t(tensors[i].tensor.nbytes())}});
  return {{"tensors", list}, {"state", state}};
}

// Copies the pieces with `threads` threads; pieces are cut to at most 8 MiB so threads balance.
void parallel_copy(std::vector<std::tuple<char*, const char*, size_t>> pieces, int threads) {
  std::vector<std::tuple<char*, const char*, size_t>> cut;
  const size_t kPiece = size_t(8) << 20;
  size_t total = 0;
  for (auto& [dst, src, n] : pieces) {
    for (size_t off = 0; off < n; off += kPiece)
      cut.emplace_back(dst + off, src + off, std::min(kPiece, n - off));
    total += n;
  }
  if (threads <= 1 || total < (size_t(16) << 20)) {
    for (auto& [dst, src, n] : cut) std::memcpy(dst, src, n);
    return;
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < cut.size(); i = next++) {
      auto& [dst, src, n] = cut[i];
      std::memcpy(dst, src, n);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

}  // namespace

Result<int64_t> shm_free_bytes() {
  struct statvfs s;
  if (::statvfs("/dev/shm", &s) != 0) return core::errno_status("cannot stat", "/dev/shm");
  return int64_t(s.f_bavail) * int64_t(s.f_frsize);
}

int64_t ShmSlot::bytes_needed(const std::vector<NamedTensor>& tensors,
                              const nlohmann::json& state) {
  Layout l = plan(tensors);
  return align_up(l.data_end) + int64_t(metadata(tensors, l, state).dump().size());
}

ShmSlot::ShmSlot(std::string name, void* base, int64_t mapped, bool owner, uint64_t inode)
    : name_(std::move(name)),
      base_(base),
      mapped_(mapped),
      capacity_(mapped - kHeaderBytes),
      owner_(owner),
      inode_(inode) {}

ShmSlot::~ShmSlot() {
  ::munmap(base_, size_t(mapped_));
  if (owner_) ::shm_unlink(name_.c_str());
}

Result<std::unique_ptr<ShmSlot>> ShmSlot::Create(const std::string& name, int64_t capacity,
                                                 bool unlink_on_close) {
  if (name.size() < 2 || name[0] != '/' || name.find('/', 1) != std::string::npos)
    return Status::InvalidArgument("shared-memory name '" + name + "' must look like /name");
  const int64_t total = kHeaderBytes + align_up(capacity);
  CAIRN_ASSIGN_OR_RETURN(int64_t free_bytes, shm_free_bytes());
  // A segment left by an earlier job under the same name is replaced, and its space counts.
  struct stat old;
  int probe = ::shm_open(name.c_str(), O_RDONLY, 0);
  if (probe >= 0) {
    if (::fstat(probe, &old) == 0) free_bytes += old.st_size;
    ::close(probe);
    ::shm_unlink(name.c_str());
  }
  if (free_bytes < total)
    return Status::FailedPrecondition(
        "/dev/shm has " + std::to_string(free_bytes) + " bytes free but the checkpoint slot " +
        name + " needs " + std::to_string(total) +
        "; enlarge it (e.g. docker run --shm-size), or set ckpt.memory_interval=0 to write "
        "storage checkpoints directly");
  int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) return core::errno_status("cannot create shared memory", name);
  if (::ftruncate(fd, total) != 0) {
    Status s = core::errno_status("cannot size shared memory", name);
    ::close(fd);
    ::shm_unlink(name.c_str());
    return s;
  }
  // Every page now, or a clear error now: a page of a full /dev/shm (filled since the check
  // above, or by another process at once) first touched through the mapping is a SIGBUS, in
  // the writer or in whoever maps the slot next.
  if (int e = ::posix_fallocate(fd, 0, total); e != 0) {
    ::close(fd);
    ::shm_unlink(name.c_str());
    return Status::FailedPrecondition(
        "/dev/shm has no room for the checkpoint slot " + name + " of " + std::to_string(total) +
        " bytes (" + std::strerror(e) +
        "); enlarge it (e.g. docker run --shm-size), or set ckpt.memory_interval=0 to write "
        "storage checkpoints directly");
  }
  struct stat created;
  uint64_t inode = ::fstat(fd, &created) == 0 ? uint64_t(created.st_ino) : 0;
  // Mapped whole at once: the first save writing through a page fault per 4 KiB took 40 times
  // as long as later ones (2.4 s against 60 ms for 612 MB here).
  void* base =
      ::mmap(nullptr, size_t(total), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) {
    ::shm_unlink(name.c_str());
    return core::errno_status("cannot map shared memory", name);
  }
  Header* h = header(base);
  std::memcpy(h->magic, kShmMagic, sizeof(kShmMagic));
  h->version = kShmVersion;
  h->state.store(kEmpty);
  h->step.store(-1);
  h->persist.store(kPersistNone);
  h->capacity = total - kHeaderBytes;
  return std::unique_ptr<ShmSlot>(new ShmSlot(name, base, total, unlink_on_close, inode));
}

Result<std::unique_ptr<ShmSlot>> ShmSlot::Open(const std::string& name, bool populate) {
  int fd = ::shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound("shared memory " + name + " does not exist");
    return core::errno_status("cannot open shared memory", name);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || st.st_size < kHeaderBytes) {
    ::close(fd);
    return Status::Corrupt("shared memory " + name + " is smaller than a slot header");
  }
  // A header its creator has not allocated (it died between sizing and allocating the segment)
  // is not read through a mapping: that would allocate it, and on a full /dev/shm kill this
  // process with SIGBUS.
  if (::lseek(fd, 0, SEEK_DATA) != 0) {
    ::close(fd);
    return Status::Corrupt("shared memory " + name +
                           " has no slot header (its creator stopped before writing one)");
  }
  // Slots are created 0600 by their writer: one that another user owns, or that others may
  // write, is not this job's checkpoint (and could be changed under the reader).
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    ::close(fd);
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", unsigned(st.st_mode & 07777));
    return Status::FailedPrecondition("shared memory " + name + " is owned by uid " +
                                      std::to_string(st.st_uid) + " with mode " + mode +
                                      "; a checkpoint slot must be this user's (uid " +
                                      std::to_string(::geteuid()) + ") with mode 0600");
  }
  // With `populate`, one call maps every page instead of a page fault per 4 KiB later.
  void* base = ::mmap(nullptr, size_t(st.st_size), PROT_READ | PROT_WRITE,
                      MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) return core::errno_status("cannot map shared memory", name);
  Header* h = header(base);
  Status bad;
  if (std::memcmp(h->magic, kShmMagic, sizeof(kShmMagic)) != 0)
    bad = Status::Corrupt("shared memory " + name + " is not a cairn checkpoint slot");
  else if (h->version != kShmVersion)
    bad = Status::Unsupported("shared memory " + name + " has slot version " +
                              std::to_string(h->version) + "; this cairn uses " +
                              std::to_string(kShmVersion));
  else if (h->capacity != st.st_size - kHeaderBytes)
    bad = Status::Corrupt("shared memory " + name + ": header and segment size disagree");
  if (!bad.ok()) {
    ::munmap(base, size_t(st.st_size));
    return bad;
  }
  return std::unique_ptr<ShmSlot>(
      new ShmSlot(name, base, st.st_size, /*owner=*/false, uint64_t(st.st_ino)));
}

Result<ShmWriteInfo> ShmSlot::write(int64_t step, const std::vector<NamedTensor>& tensors,
                                    const nlohmann::json& state, int threads,
                                    bool request_persist) {
  auto t0 = std::chrono::steady_clock::now();
  Layout l = plan(tensors);
  std::string meta = metadata(tensors, l, state).dump();
  const int64_t meta_offset = align_up(l.data_end);
  if (meta_offset + int64_t(meta.size()) > capacity_)
    return Status::FailedPrecondition("checkpoint of " + std::to_string(meta_offset + meta.size()) +
                                      " bytes does not fit slot " + name_ + " of " +
                                      std::to_string(capacity_) + " bytes");
  std::vector<torch::Tensor> keep;  // contiguous CPU copies where needed
  std::vector<std::tuple<char*, const char*, size_t>> pieces;
  for (size_t i = 0; i < tensors.size(); ++i) {
    torch::Tensor t = tensors[i].tensor.detach();
    // A device tensor (a GPU's) is copied to the host here, on the writer's thread: the copy
    // overlaps training like the rest of the save.
    if (!t.device().is_cpu()) keep.push_back(t = t.to(torch::kCPU));
    if (!t.is_contiguous()) keep.push_back(t = t.contiguous());
    pieces.emplace_back(data(base_) + l.offsets[i], static_cast<const char*>(t.data_ptr()),
                        t.nbytes());
  }
  Header* h = header(base_);
  uint32_t p = h->persist.load(std::memory_order_acquire);
  if (p == kPersistRequested || p == kPersistRunning)
    return Status::FailedPrecondition("slot " + name_ + " is still being persisted");
  h->persist.store(kPersistNone, std::memory_order_release);
  h->state.store(kWriting, std::memory_order_release);
  parallel_copy(std::move(pieces), threads);
  std::memcpy(data(base_) + meta_offset, meta.data(), meta.size());
  h->meta_offset = meta_offset;
  h->meta_bytes = int64_t(meta.size());
  h->meta_xxh3 = XXH3_64bits(meta.data(), meta.size());
  h->step.store(step, std::memory_order_release);
  h->state.store(kReady, std::memory_order_release);
  if (request_persist) h->persist.store(kPersistRequested, std::memory_order_release);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return ShmWriteInfo{l.data_end, s};
}

Result<ShmSnapshot> ShmSlot::read() const { return read_impl(/*copy=*/true); }
Result<ShmSnapshot> ShmSlot::view() const { return read_impl(/*copy=*/false); }

Result<ShmSnapshot> ShmSlot::read_impl(bool copy) const {
  const Header* h = header(base_);
  uint32_t st = h->state.load(std::memory_order_acquire);
  if (st == kEmpty) return Status::NotFound("slot " + name_ + " holds no checkpoint");
  if (st != kReady)
    return Status::Corrupt("slot " + name_ +
                           " holds an unfinished write (the writer stopped or is "
                           "still writing)");
  ShmSnapshot out;
  out.step = h->step.load(std::memory_order_acquire);
  if (h->meta_offset < 0 || h->meta_bytes <= 0 || h->meta_offset + h->meta_bytes > capacity_)
    return Status::Corrupt("slot " + name_ + ": metadata lies outside the slot");
  const char* meta = data(base_) + h->meta_offset;
  if (XXH3_64bits(meta, size_t(h->meta_bytes)) != h->meta_xxh3)
    return Status::Corrupt("slot " + name_ + ": metadata checksum mismatch");
  auto j = nlohmann::json::parse(meta, meta + h->meta_bytes, nullptr, false);
  if (j.is_discarded() || !j.contains("tensors") || !j.contains("state"))
    return Status::Corrupt("slot " + name_ + ": metadata is not valid");
  try {
    for (auto& t : j["tensors"]) {
      torch::ScalarType dtype;
      if (!parse_dtype(t.at("dtype").get<std::string>(), &dtype))
        return Status::Corrupt("slot " + name_ + ": unknown dtype");
      auto shape = t.at("shape").get<std::vector<int64_t>>();
      int64_t offset = t.at("offset").get<int64_t>(), bytes = t.at("bytes").get<int64_t>();
      int64_t numel = 1;
      for (int64_t d : shape) numel = d < 0 ? -1 : numel * d;
      if (numel < 0 || offset < 0 || offset + bytes > h->meta_offset ||
          numel * int64_t(c10::elementSize(dtype)) != bytes)
        return Status::Corrupt("slot " + name_ + ": tensor '" + t.at("name").get<std::string>() +
                               "' lies outside its area");
      torch::Tensor tensor;
      if (copy) {
        tensor = torch::empty(shape, torch::TensorOptions().dtype(dtype));
        std::memcpy(tensor.data_ptr(), data(base_) + offset, size_t(bytes));
      } else {
        tensor = torch::from_blob(data(base_) + offset, shape, torch::TensorOptions().dtype(dtype));
      }
      out.tensors.emplace(t.at("name").get<std::string>(), std::move(tensor));
    }
  } catch (const nlohmann::json::exception& e) {
    return Status::Corrupt("slot " + name_ + ": malformed metadata: " + e.what());
  }
  out.state = j["state"];
  if (h->state.load(std::memory_order_acquire) != kReady ||
      h->step.load(std::memory_order_acquire) != out.step)
    return Status::Corrupt("slot " + name_ + " was rewritten while being read");
  return out;
}

int64_t ShmSlot::ready_step() const {
  const Header* h = header(base_);
  return h->state.load(std::memory_order_acquire) == kReady ? h->step.load() : -1;
}

void ShmSlot::clear() {
  header(base_)->persist.store(kPersistNone, std::memory_order_release);
  header(base_)->state.store(kEmpty, std::memory_order_release);
}

PersistState ShmSlot::persist_state() const {
  return PersistState(header(base_)->persist.load(std::memory_order_acquire));
}

bool ShmSlot::claim_persist() {
  uint32_t expected = kPersistRequested;
  return header(base_)->persist.compare_exchange_strong(expected, kPersistRunning,
                                                        std::memory_order_acq_rel);
}

void ShmSlot::finish_persist(bool ok) {
  header(base_)->persist.store(ok ? kPersistDone : kPersistFailed, std::memory_order_release);
}

bool ShmSlot::request_persist() {
  if (ready_step() < 0) return false;
  for (uint32_t p = header(base_)->persist.load(std::memory_order_acquire);;) {
    if (p == kPersistRequested || p == kPersistRunning || p == kPersistDone) return true;
    if (header(base_)->persist.compare_exchange_weak(p, kPersistRequested,
                                                     std::memory_order_acq_rel))
      return true;
  }
}

void ShmSlot::requeue_persist() {
  uint32_t expected = kPersistRunning;
  header(base_)->persist.compare_exchange_strong(expected, kPersistRequested,
                                                 std::memory_order_acq_rel);
}

void ShmSlot::touch_pages() {
  const long page = ::sysconf(_SC_PAGESIZE);
  volatile char* data = static_cast<char*>(base_) + kHeaderBytes;
  for (int64_t at = 0; at < capacity_; at += page) data[at] = data[at];
}

void ShmSlot::set_owner(int pid) {
  header(base_)->owner_start.store(core::process_start_time(pid), std::memory_order_relaxed);
  header(base_)->owner_pid.store(pid, std::memory_order_release);
}

SlotOwner ShmSlot::owner() const {
  SlotOwner o;
  o.pid = header(base_)->owner_pid.load(std::memory_order_acquire);
  o.start_time = header(base_)->owner_start.load(std::memory_order_relaxed);
  return o;
}

bool ShmSlot::is_current() const {
  struct stat st;
  std::string path = "/dev/shm" + name_;
  return ::stat(path.c_str(), &st) == 0 && st.st_ino == inode_;
}

}  // namespace cairn::ckpt
