// ZeRO-3 flat-buffer layout planning.
#include <algorithm>

#include "parallel/zero3_impl.h"

namespace cairn::parallel {

Zero3Layout plan_zero3_layout(const std::vector<std::vector<int>>& stage_uses,
                              const std::vector<int64_t>& numels, int shards) {
  const int n = int(numels.size());
  std::vector<int> owner(size_t(n), -1), users(size_t(n), 0);
  for (size_t s = 0; s < stage_uses.size(); ++s)
    for (int p : stage_uses[s]) {
      if (owner[size_t(p)] < 0) owner[size_t(p)] = int(s);
      ++users[size_t(p)];
    }
  Zero3Layout out;
  out.param_flat.assign(size_t(n), -1);
  out.param_slot.resize(size_t(n));
  auto add_flat = [&](const std::vector<int>& members) {
    if (members.empty()) return;
    Bucket b;
    for (int p : members) {
      BucketSlot slot{p, b.numel, numels[size_t(p)]};
      b.slots.push_back(slot);
      b.numel += slot.numel;
      out.param_flat[size_t(p)] = int(out.flats.size());
      out.param_slot[size_t(p)] = slot;
    }
    b.numel = (b.numel + shards - 1) / shards * shards;
    out.flats.push_back(std::move(b));
  };
  for (size_t s = 0; s < stage_uses.size(); ++s) {
    std::vector<int> own, shared;
    for (int p = 0; p < n; ++p)
      if (owner[size_t(p)] == int(s)) (users[size_t(p)] > 1 ? shared : own).push_back(p);
    add_flat(own);
    for (int p : shared) add_flat({p});
  }
  out.stage_flats.resize(stage_uses.size());
  for (size_t s = 0; s < stage_uses.size(); ++s) {
    auto& fl = out.stage_flats[s];
    for (int p : stage_uses[s]) fl.push_back(out.param_flat[size_t(p)]);
    std::sort(fl.begin(), fl.end());
    fl.erase(std::unique(fl.begin(), fl.end()), fl.end());
  }
  return out;
}

}  // namespace cairn::parallel
