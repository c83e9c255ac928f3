// A rank's two in-memory checkpoint slots (flash checkpoints). Saves alternate between them,
// so the previous complete checkpoint survives a crash in the middle of a save. The segments
// outlive the worker process, so a restarted worker restores from them; the agent removes them
// when the job ends.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cairn/ckpt/checkpoint.h"
#include "cairn/ckpt/shm_slot.h"
#include "cairn/core/status.h"

namespace cairn::train {

class FlashSlots {
 public:
  FlashSlots(std::string run_dir, int rank) : run_dir_(std::move(run_dir)), rank_(rank) {}

  // Copies the state into the slot that does not hold the newest checkpoint.
  Result<ckpt::ShmWriteInfo> save(int64_t step, const std::vector<ckpt::NamedTensor>& tensors,
                                  const nlohmann::json& state);
  // The steps of the complete checkpoints in this rank's slots (opening them), -1 for none.
  std::array<int64_t, 2> ready_steps();
  // The checkpoint of `step` from this rank's slots.
  Result<ckpt::ShmSnapshot> read(int64_t step);

 private:
  Result<ckpt::ShmSlot*> slot(int index, int64_t bytes_needed);
  std::string run_dir_;
  int rank_;
  std::array<std::unique_ptr<ckpt::ShmSlot>, 2> slots_;
};

}  // namespace cairn::train
