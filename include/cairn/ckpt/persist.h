// Persisting flash checkpoints: shared-memory slots → storage, in the background.
//
// A rank's slot holds that rank's part of a checkpoint plus, in its state object under
// "persist", where the checkpoint goes (PersistTarget). A persister writes the part as
// <root>/.parts-step-N/rank-R.bin (fsynced) and tries to commit the step; the persister that
// finds every rank's part durable merges the manifest, moves `latest` and applies retention.
// Persisters of different nodes need nothing but the shared storage to agree.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "cairn/ckpt/checkpoint.h"
#include "cairn/ckpt/shm_slot.h"
#include "cairn/core/mutex.h"
#include "cairn/core/status.h"

namespace cairn::ckpt {

// Where and how a rank's part of a checkpoint is persisted; stored in the slot's state under
// "persist" so that a persister in another process needs nothing else.
struct PersistTarget {
  std::string root;    // checkpoint directory (absolute)
  int rank = 0;        // whose part the slot holds
  int world = 1;       // parts needed to commit
  int keep_last = 3;   // retention after a commit (0 keeps all)
  int keep_every = 0;  // also keep every step divisible by this (0 = none)
};
nlohmann::json to_json(const PersistTarget& t);
Result<PersistTarget> persist_target_from(const nlohmann::json& slot_state);

struct PartInfo {
  int64_t step = 0;
  int rank = 0;
  int64_t bytes = 0;
  double seconds = 0;      // writing the part, and the commit when this call made it
  bool committed = false;  // this call committed the step (moved `latest`)
  std::string path;        // the step directory once committed, else the parts directory
};

// Writes one rank's part and tries to commit the step; on commit applies retention.
// `state` is the manifest's state object; keys "persist" and "partition" are dropped from it.
// The partition's entries of this rank that carry a "slice" (and "key", "name", global
// "shape") say which of `tensors` are pieces of larger ones (write_rank_part's slices).
Result<PartInfo> persist_part(const PersistTarget& target, int64_t step,
                              const std::vector<NamedTensor>& tensors, const nlohmann::json& state);

// The highest step with a complete (manifest-valid) checkpoint under root, or -1.
int64_t newest_complete_step(const std::string& root);

struct SlotPersisterOptions {
  std::map<int, std::vector<std::string>> slots;  // rank → names of its slots
  double poll_interval_s = 0.02;                  // longest delay before a request is seen
  // The thread runs at SCHED_IDLE and idle I/O priority (training has the cores first); false
  // for tests whose machine may be too busy to give an idle thread any time.
  bool idle_priority = true;
  double testing_write_delay_s = 0;  // tests: storage this much slower for each part written
  // Called (from the persister's thread) with "checkpoint_persisted" or
  // "checkpoint_persist_failed" and the event's fields.
  std::function<void(const std::string& event, const nlohmann::json& fields)> on_event;
};

// A background thread that persists every slot whose writer requested it. Owned by the agent
// (`cairn run`) for its node's ranks, or by a worker that runs without one.
// Thread-safety: all methods may be called from any thread.
class SlotPersister {
 public:
  static Result<std::unique_ptr<SlotPersister>> Start(SlotPersisterOptions options);
  // Finishes the write in progress and every request already made, then stops.
  ~SlotPersister();
  SlotPersister(const SlotPersister&) = delete;
  SlotPersister& operator=(const SlotPersister&) = delete;

  // Persists every requested slot now; returns how many parts were written.
  int poll_once();
  // After the workers stopped (a failure or a signal): writes the newest step that every rank
  // of this persister holds complete in memory, unless storage holds it or a newer one.
  // Returns the fields of a `checkpoint_persisted` event, or null when nothing was written.
  Result<nlohmann::json> persist_unsaved(const std::string& reason);
  // Like persist_unsaved, but hands that step's slots to the background thread (marks them
  // requested, so restarted workers do not overwrite them) and returns at once: {"step": S}, or
  // null when there is nothing to persist.
  Result<nlohmann::json> queue_unsaved();

 private:
  explicit SlotPersister(SlotPersisterOptions options);
  // The open slots of `rank`, reopened when missing or replaced by their writer.
  std::vector<ShmSlot*> slots_of(int rank) CAIRN_REQUIRES(mu_);
  // REQUIRES: the slot's persist claim held (or its writer gone).
  Result<PartInfo> write_slot(ShmSlot* slot) CAIRN_REQUIRES(mu_);
  // The steps every rank here holds complete, newest first; fills `by_rank` with each rank's
  // open slots.
  std::vector<int64_t> common_steps(std::map<int, std::vector<ShmSlot*>>* by_rank)
      CAIRN_REQUIRES(mu_);
  // The slots of `step` per rank, for the newest step every rank here holds complete that
  // storage does not hold (step -1 when there is none).
  std::pair<int64_t, std::vector<ShmSlot*>> newest_unsaved(std::string* root) CAIRN_REQUIRES(mu_);
  void emit(const std::string& event, const nlohmann::json& fields);
  void loop();

  SlotPersisterOptions o_;
  core::Mutex mu_;  // one write at a time
  std::map<std::string, std::unique_ptr<ShmSlot>> open_ CAIRN_GUARDED_BY(mu_);
  core::Mutex stop_mu_;
  core::CondVar stop_cv_;
  bool stop_ CAIRN_GUARDED_BY(stop_mu_) = false;
  std::thread thread_;
};

}  // namespace cairn::ckpt
