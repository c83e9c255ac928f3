// A rank's in-memory checkpoint slots (flash checkpoints). Saves go to the oldest slot that is
// not being persisted, so the newest complete checkpoint survives a crash in the middle of a
// save, and never overwrite a slot whose persist to storage is still pending. With persists,
// three slots are used: while storage is written from one, saves still alternate between the
// other two (with two, every save would overwrite the only other complete checkpoint, and a
// crash during that copy would go back to the persisted step).
// The segments outlive the worker process, so a restarted worker restores from them; the
// agent removes them when the job ends.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cairn/ckpt/checkpoint.h"
#include "cairn/ckpt/shm_slot.h"
#include "cairn/core/status.h"
#include "cairn/elastic/flash_slots.h"

namespace cairn::train {

struct FlashSaveInfo {
  int64_t bytes = 0;
  double copy_s = 0;    // copying into the slot
  double waited_s = 0;  // waiting for a slot whose persist was pending
};

class FlashSlots {
 public:
  // `owner_pid` (when > 0) is recorded in the slots this object opens or creates as the process
  // that removes them (the agent, or the trainer itself when it runs alone).
  // `in_use` slots (2, or 3 when a persist may hold one) are written; all are read.
  FlashSlots(std::string run_dir, int rank, int owner_pid = 0, int in_use = 2)
      : run_dir_(std::move(run_dir)), rank_(rank), owner_pid_(owner_pid), in_use_(in_use) {}
  ~FlashSlots();  // joins a copy in progress
  FlashSlots(const FlashSlots&) = delete;
  FlashSlots& operator=(const FlashSlots&) = delete;

  // Copies the state into the slot that does not hold the newest checkpoint and is not being
  // persisted, waiting up to `timeout_s` when both are; with `persist` asks for the copy to be
  // persisted. FailedPrecondition when /dev/shm is too small; Timeout when no slot came free.
  Result<FlashSaveInfo> save(int64_t step, const std::vector<ckpt::NamedTensor>& tensors,
                             const nlohmann::json& state, bool persist, double timeout_s);
  // Like save(), but the copy runs on a background thread: returns once a slot is chosen (and
  // created if needed), with waited_s set. REQUIRES: the tensors keep their values until
  // finish() returns (the trainer calls it before the next optimizer step); no copy pending.
  Result<FlashSaveInfo> start_save(int64_t step, std::vector<ckpt::NamedTensor> tensors,
                                   nlohmann::json state, bool persist, double timeout_s);
  // Waits for the copy start_save began; its bytes and copy time. REQUIRES: pending().
  Result<ckpt::ShmWriteInfo> finish();
  bool pending() const { return copier_.joinable(); }
  // True when a save could start now without waiting: a slot in use is missing, empty or not
  // being persisted (opens this rank's slots); false while prepare()'s slots are not ready.
  bool has_free_slot();
  // Asks for the slot holding `step` to be persisted (no new copy); false when none holds it.
  bool request_persist(int64_t step);
  // Waits until the persist of `step` finished: Ok when it is on storage, Internal when the
  // persister failed (its error is in events.jsonl), Timeout after `timeout_s`.
  Status wait_persisted(int64_t step, double timeout_s);
  // The steps of the complete checkpoints in this rank's slots (opening them), -1 for none.
  std::array<int64_t, elastic::kFlashSlotsPerRank> ready_steps();
  // The checkpoint of `step` from this rank's slots, its tensors pointing into the slot: valid
  // until the next save or the destruction of this object.
  Result<ckpt::ShmSnapshot> view(int64_t step);
  std::vector<std::string> names() const;
  // Creates in the background the slots this rank has not got yet, sized for `bytes_needed`,
  // and writes their pages once (ckpt::ShmSlot::touch_pages): the first saves then neither
  // create a slot nor pay for fresh memory while training waits for their copy. Saves adopt
  // the slots when ready; until then has_free_slot() is false (the trainer skips memory
  // saves) and a save that goes ahead anyway (a persist) waits for them. Once, after a restore.
  void prepare(int64_t bytes_needed);
  // Stops the preparer (between slots) and waits for it; what it made is dropped, not unlinked.
  void stop_preparing();
  // True while prepare()'s slots are not ready yet.
  bool preparing();
  // True when one of this rank's slots is asked to be, or is being, persisted.
  bool persist_in_flight();

 private:
  // Takes the prepared slots when the preparer is done (or, with `wait`, once it is).
  void adopt_prepared(bool wait);
  Result<ckpt::ShmSlot*> slot(int index, int64_t bytes_needed);
  // Chooses (waiting while both are being persisted) and sizes the slot for the next save.
  Result<ckpt::ShmSlot*> free_slot(int64_t bytes_needed, double timeout_s, double* waited_s);
  std::string run_dir_;
  int rank_;
  int owner_pid_;
  int in_use_;
  std::array<std::unique_ptr<ckpt::ShmSlot>, elastic::kFlashSlotsPerRank> slots_;
  std::thread preparer_;
  std::atomic<bool> prepared_{false};        // the preparer is done
  std::atomic<bool> stop_preparing_{false};  // asks the preparer to stop between slots
  std::array<std::unique_ptr<ckpt::ShmSlot>, elastic::kFlashSlotsPerRank>
      made_;                                                        // its slots, until adopted
  std::array<bool, elastic::kFlashSlotsPerRank> in_preparation_{};  // indices it creates
  std::thread copier_;
  Result<ckpt::ShmWriteInfo> copied_ = Status::Internal("no copy");
  std::vector<ckpt::NamedTensor> copying_;  // kept alive for the copier
};

}  // namespace cairn::train
