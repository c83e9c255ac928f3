// Orphaned in-memory checkpoints, collected when a command starts.
#include "orphans_at_start.h"

#include <spdlog/spdlog.h>

#include "cairn/ckpt/orphans.h"
#include "cairn/elastic/flash_slots.h"
#include "commands.h"

namespace cairn::cli {

void collect_orphans_at_start(const std::string& run_dir) {
  ckpt::OrphanOptions o;
  o.skip_prefix = elastic::flash_slot_name(run_dir, 0, 0).substr(0, 20);  // "/cairn-<hash>-"
  o.min_idle_s = orphan_grace_s();
  for (const auto& r : ckpt::collect_orphan_slots(o))
    if (r.removed || r.persisted)
      spdlog::info("orphaned in-memory checkpoint /dev/shm{}: {}", r.name, r.detail);
}

}  // namespace cairn::cli
