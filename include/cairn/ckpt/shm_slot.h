// ShmSlot: one POSIX shared-memory segment holding one rank's checkpoint in memory, the
// building block of flash checkpoints. The agent creates (and finally unlinks) the slots;
// a worker opens them and copies its state in; the agent persists a ready slot to storage or
// a restarted worker restores from it.
//
// Layout: a 4 KiB header (magic "CAIRNSHM", version, state, step, sizes, xxh3 of the
// metadata), the tensors at 64-byte aligned offsets, then the metadata JSON (tensor names,
// dtypes, shapes, offsets, and the caller's state object). A write first marks the slot
// `writing`; only a finished write marks it `ready`, so a writer that dies half way leaves a
// slot that readers reject, never a half-written checkpoint that looks whole.
//
// Thread-safety: one writer at a time per slot (the caller's protocol); readers check the state
// before and after copying.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cairn/ckpt/checkpoint.h"
#include "cairn/core/status.h"

namespace cairn::ckpt {

struct ShmWriteInfo {
  int64_t bytes = 0;   // tensor bytes copied
  double seconds = 0;  // time the caller was blocked
};

// The hand-off between a slot's writer and the persister that copies it to storage. A writer
// never overwrites a slot in state kPersistRequested or kPersistRunning.
enum PersistState : uint32_t {
  kPersistNone = 0,       // nothing asked (a memory-only checkpoint, or empty)
  kPersistRequested = 1,  // the writer asks for this content to be persisted
  kPersistRunning = 2,    // a persister claimed it and is writing it
  kPersistDone = 3,       // on storage (this rank's part durable)
  kPersistFailed = 4,     // the persister gave up (its error is in its log)
};

// The process responsible for removing a slot (the agent, or a trainer running alone).
struct SlotOwner {
  int pid = 0;              // 0: not recorded
  uint64_t start_time = 0;  // core::process_start_time of pid when recorded
};

struct ShmSnapshot {
  int64_t step = 0;
  std::map<std::string, torch::Tensor> tensors;  // copies, owned by the caller
  nlohmann::json state;
};

class ShmSlot {
 public:
  // Creates segment `name` ("/cairn-<job>-r0-0") able to hold `capacity` bytes of tensors and
  // metadata. With `unlink_on_close` the creator unlinks it on destruction; without, the
  // segment outlives the process (a worker's slots must survive its crash; the agent removes
  // them when the job ends). Fails with a message naming the needed and available bytes when
  // /dev/shm cannot hold it.
  static Result<std::unique_ptr<ShmSlot>> Create(const std::string& name, int64_t capacity,
                                                 bool unlink_on_close = true);
  // Opens an existing segment (never unlinks it). `populate` maps all its pages at once (for a
  // caller that is about to read or write all of it, e.g. a restore).
  static Result<std::unique_ptr<ShmSlot>> Open(const std::string& name, bool populate = false);
  ~ShmSlot();
  ShmSlot(const ShmSlot&) = delete;
  ShmSlot& operator=(const ShmSlot&) = delete;

  // Copies `tensors` (CPU) and `state` into the slot with `threads` copy threads and marks it
  // ready at `step`; with `request_persist` it then marks it kPersistRequested.
  // FailedPrecondition when they do not fit or the slot's content is still being persisted.
  Result<ShmWriteInfo> write(int64_t step, const std::vector<NamedTensor>& tensors,
                             const nlohmann::json& state, int threads = 4,
                             bool request_persist = false);
  // A copy of the slot's content. NotFound when the slot was never completed; Corrupt when
  // its metadata fails its checksum or a write is in progress.
  Result<ShmSnapshot> read() const;
  // Like read() but the tensors point into the shared memory: valid while this object lives
  // and nobody rewrites the slot (REQUIRES: the caller holds the persist claim).
  Result<ShmSnapshot> view() const;
  // The step of the completed content, or -1.
  int64_t ready_step() const;
  // Marks the slot empty (e.g. after its content is known to be stale).
  void clear();

  // Persist hand-off (see PersistState); safe between processes.
  PersistState persist_state() const;
  bool persist_pending() const {
    auto p = persist_state();
    return p == kPersistRequested || p == kPersistRunning;
  }
  // Asks for the completed content to be persisted (kPersistNone or kPersistFailed →
  // kPersistRequested); true when it is requested, being persisted or done, false when the
  // slot holds nothing complete.
  bool request_persist();
  // kPersistRequested → kPersistRunning; false when there was no request (or another claimed it).
  bool claim_persist();
  // kPersistRunning → kPersistDone or kPersistFailed.
  void finish_persist(bool ok);
  // kPersistRunning → kPersistRequested: a persister that died mid-write left the claim.
  void requeue_persist();
  // Records `pid` (and its start time) as the process that removes this segment; a slot whose
  // owner is dead is an orphan that the next cairn process persists and removes.
  void set_owner(int pid);
  // Writes one byte of every page of the data area with the value it holds (the content does
  // not change; readers are not disturbed), so that the next save into the slot costs what
  // later ones do: on a virtual machine the first write to a page after it was mapped, or
  // after a while, traps to the host (here 1 s for 765 MB, against 40 ms for a copy).
  void touch_pages();
  SlotOwner owner() const;
  // false once the name refers to another segment (the writer replaced it to grow).
  bool is_current() const;

  const std::string& name() const { return name_; }
  int64_t capacity() const { return capacity_; }
  // Bytes that `tensors` and `state` need in a slot (for sizing).
  static int64_t bytes_needed(const std::vector<NamedTensor>& tensors, const nlohmann::json& state);

 private:
  ShmSlot(std::string name, void* base, int64_t mapped, bool owner, uint64_t inode);
  Result<ShmSnapshot> read_impl(bool copy) const;
  std::string name_;
  void* base_;
  int64_t mapped_;  // header + capacity
  int64_t capacity_;
  bool owner_;
  uint64_t inode_;
};

// Free bytes in the file system that holds POSIX shared memory (/dev/shm).
Result<int64_t> shm_free_bytes();

}  // namespace cairn::ckpt
