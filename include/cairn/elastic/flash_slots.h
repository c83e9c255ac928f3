// Names of the shared-memory segments that hold a run's in-memory checkpoints (up to three per
// rank: two that saves alternate between, and a third when storage is written from one of them),
// shared by the workers that fill them and the agent that removes them when the job ends.
#pragma once

#include <string>
#include <vector>

namespace cairn::elastic {

inline constexpr int kFlashSlotsPerRank = 3;

// "/cairn-<hash of the absolute run directory>-r<rank>-<index>": unique per run directory on a
// machine, the same in every process of the run.
std::string flash_slot_name(const std::string& run_dir, int global_rank, int index);
// Removes the segments of `ranks` (those that exist); returns how many were removed.
int unlink_flash_slots(const std::string& run_dir, const std::vector<int>& ranks);

}  // namespace cairn::elastic
