// Bucket layout for data parallelism: parameters packed, in reverse order (the order their
// gradients become ready in backward), into flat buckets of about `bucket_elems` elements,
// each padded to a multiple of the data-parallel size so that it splits into equal shards.
// Pure arithmetic, no torch.
#pragma once

#include <cstdint>
#include <vector>

namespace cairn::parallel {

struct BucketSlot {
  int param = 0;       // index into the parameter list
  int64_t offset = 0;  // element offset inside the bucket
  int64_t numel = 0;
};

struct Bucket {
  std::vector<BucketSlot> slots;
  int64_t numel = 0;  // padded size: a multiple of the shard count
};

// REQUIRES: bucket_elems >= 1, shards >= 1. Every parameter lands in exactly one bucket; a
// parameter larger than bucket_elems gets a bucket of its own.
std::vector<Bucket> plan_buckets(const std::vector<int64_t>& numels, int64_t bucket_elems,
                                 int shards);

// The part [begin, end) of slot `s` that falls inside [lo, hi) of its bucket, as offsets
// relative to the slot's start; empty (begin == end) when they do not meet.
struct SlotPart {
  int64_t begin = 0, end = 0;
};
SlotPart slot_part(const BucketSlot& s, int64_t lo, int64_t hi);

}  // namespace cairn::parallel
