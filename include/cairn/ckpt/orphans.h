// Orphaned in-memory checkpoints: shared-memory slots whose owner (the agent, or a trainer
// running alone) died without removing them, e.g. after `kill -9`. The next cairn process on
// the machine persists what they hold that storage lacks, then removes them; `cairn ckpt gc`
// does the same on demand and lists every slot.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cairn::ckpt {

struct SlotReport {
  std::string name;   // "/cairn-<hash>-r<rank>-<index>"
  int64_t bytes = 0;  // size of the segment
  int64_t step = -1;  // step of its complete content, -1 when none
  int owner_pid = 0;  // 0: not recorded
  bool owner_alive = false;
  bool removed = false;    // (with dry_run: would be)
  bool persisted = false;  // its content was written to storage first (with dry_run: would be)
  std::string detail;      // what was done and why, one phrase
};

struct OrphanOptions {
  bool dry_run = false;  // report only
  // Slots whose name starts with this prefix are left alone (the caller's own run, which it
  // restores or removes itself); empty = none.
  std::string skip_prefix;
  // Only slots whose name starts with this prefix are looked at (tests); empty = all.
  std::string only_prefix;
  // A dead owner's slot written less than this long ago is left alone (its job's restart,
  // e.g. a `--resume` just after a kill, restores from it).
  double min_idle_s = 0;
  std::string shm_dir = "/dev/shm";  // where POSIX shared memory is visible as files
};

// Every cairn checkpoint slot in shm_dir, with what was done to it: slots of a dead owner are
// persisted when storage holds nothing as new (only a slot this call could claim for
// persisting; a failed persist keeps the slot), then removed; slots of a live owner, or of an
// unrecorded one, are left. Never throws.
std::vector<SlotReport> collect_orphan_slots(const OrphanOptions& options);

}  // namespace cairn::ckpt
