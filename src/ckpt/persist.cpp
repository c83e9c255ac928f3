// Shared-memory slot → storage.
#include "cairn/ckpt/persist.h"

#include "cairn/ckpt/shm_slot.h"
#include "cairn/core/fs.h"
#include "ckpt/format_impl.h"

namespace cairn::ckpt {

Result<std::optional<PersistInfo>> persist_newest_slot(const std::vector<std::string>& slot_names,
                                                       const std::string& root) {
  std::unique_ptr<ShmSlot> best;
  for (auto& name : slot_names) {
    auto slot = ShmSlot::Open(name);
    if (!slot.ok()) continue;
    if ((*slot)->ready_step() >= 0 && (!best || (*slot)->ready_step() > best->ready_step()))
      best = std::move(slot).value();
  }
  if (!best) return std::optional<PersistInfo>();
  // Only a complete checkpoint on storage counts as newer.
  auto steps = list_steps(root);
  for (auto it = steps.rbegin(); it != steps.rend() && *it >= best->ready_step(); ++it)
    if (read_manifest(root + "/" + step_dir_name(*it)).ok()) return std::optional<PersistInfo>();
  CAIRN_ASSIGN_OR_RETURN(ShmSnapshot snap, best->read());
  std::vector<NamedTensor> tensors;
  for (auto& [name, t] : snap.tensors) tensors.push_back({name, t});
  nlohmann::json state = snap.state;
  state["persisted_from"] = best->name();
  CAIRN_ASSIGN_OR_RETURN(SaveInfo info, save_checkpoint(root, snap.step, tensors, state));
  return std::optional<PersistInfo>(PersistInfo{snap.step, info});
}

}  // namespace cairn::ckpt
