// Persisting in-memory checkpoints: the newest complete shared-memory slot to storage.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cairn/ckpt/checkpoint.h"
#include "cairn/core/status.h"

namespace cairn::ckpt {

struct PersistInfo {
  int64_t step = 0;
  SaveInfo save;
};

// Writes the newest complete checkpoint among the slots named `slot_names` to `root` (the
// manifest format, fsynced, `latest` moved last), unless `root` already holds that step or a
// newer one. Returns nothing when there was nothing newer to write. Slots that do not exist or
// hold an unfinished write are passed over.
Result<std::optional<PersistInfo>> persist_newest_slot(const std::vector<std::string>& slot_names,
                                                       const std::string& root);

}  // namespace cairn::ckpt
