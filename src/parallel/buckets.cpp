// Bucket planning.
#include "cairn/parallel/buckets.h"

#include <algorithm>

namespace cairn::parallel {

std::vector<Bucket> plan_buckets(const std::vector<int64_t>& numels, int64_t bucket_elems,
                                 int shards) {
  std::vector<Bucket> out;
  Bucket cur;
  auto close = [&] {
    if (cur.slots.empty()) return;
    cur.numel = (cur.numel + shards - 1) / shards * shards;
    out.push_back(std::move(cur));
    cur = Bucket();
  };
  for (int i = int(numels.size()) - 1; i >= 0; --i) {
    if (!cur.slots.empty() && cur.numel + numels[size_t(i)] > bucket_elems) close();
    cur.slots.push_back({i, cur.numel, numels[size_t(i)]});
    cur.numel += numels[size_t(i)];
  }
  close();
  return out;
}

SlotPart slot_part(const BucketSlot& s, int64_t lo, int64_t hi) {
  int64_t b = std::max(lo, s.offset), e = std::min(hi, s.offset + s.numel);
  if (e <= b) return {0, 0};
  return {b - s.offset, e - s.offset};
}

}  // namespace cairn::parallel
