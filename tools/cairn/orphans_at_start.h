// What every `cairn train` and `cairn run` does first: persist and remove the in-memory
// checkpoints that dead cairn processes left on this machine.
#pragma once

#include <string>

namespace cairn::cli {

// Slots idle for orphan_grace_s() whose owner is dead: persisted (what storage lacks) and
// removed, each logged. The slots of `run_dir` itself are left for its --resume.
void collect_orphans_at_start(const std::string& run_dir);

}  // namespace cairn::cli
