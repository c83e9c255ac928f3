// A checkpoint's manifest.json as the loader reads it (read_manifest: JSON, validate_manifest;
// then parse_entries), without the data files. What the loader does with accepted entries must
// be safe: it allocates each tensor from its shape and preads each shard's `bytes` at `offset`
// into the shard's slice of it, so every accepted number must be in range without overflow, the
// bytes must be exactly the slice's, and the shards must cover the tensor exactly once.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "ckpt/format_impl.h"
#include "fuzz_check.h"

namespace {

using cairn::ckpt::ShardEntry;
using cairn::ckpt::TensorEntry;

void check_entry(const TensorEntry& e) {
  const __int128 item = e.itemsize;
  FUZZ_CHECK(cairn::ckpt::dtype_itemsize(e.dtype) == e.itemsize && e.itemsize > 0,
             e.name + ": dtype '" + e.dtype + "' without its size");
  __int128 numel = 1;
  for (int64_t d : e.shape) {
    FUZZ_CHECK(d >= 0, e.name + ": negative dimension");
    numel *= d;
    FUZZ_CHECK(numel * item <= INT64_MAX, e.name + ": the tensor's bytes overflow int64");
  }
  __int128 covered = 0;
  for (const ShardEntry& s : e.shards) {
    FUZZ_CHECK(s.slice.size() == e.shape.size(), e.name + ": slice rank");
    __int128 n = 1;
    for (size_t d = 0; d < s.slice.size(); ++d) {
      FUZZ_CHECK(0 <= s.slice[d].first && s.slice[d].first <= s.slice[d].second &&
                     s.slice[d].second <= e.shape[d],
                 e.name + ": slice outside the shape");
      n *= s.slice[d].second - s.slice[d].first;
    }
    FUZZ_CHECK(n * item == s.bytes, e.name + ": shard bytes differ from its slice's");
    FUZZ_CHECK(s.offset >= cairn::ckpt::kDataHeaderBytes, e.name + ": shard inside the header");
    FUZZ_CHECK(__int128(s.offset) + s.bytes <= INT64_MAX, e.name + ": shard end overflows");
    FUZZ_CHECK(!s.file.empty() && s.file.find('/') == std::string::npos && s.file[0] != '.',
               e.name + ": file name '" + s.file + "'");
    covered += n;
  }
  FUZZ_CHECK(covered == numel, e.name + ": shards do not add up to the tensor");
  // ... and share no element (so every element is read once: no gap is left unread).
  for (size_t a = 0; a < e.shards.size(); ++a)
    for (size_t b = a + 1; b < e.shards.size(); ++b) {
      bool shared = true;
      for (size_t d = 0; d < e.shape.size() && shared; ++d)
        shared = std::max(e.shards[a].slice[d].first, e.shards[b].slice[d].first) <
                 std::min(e.shards[a].slice[d].second, e.shards[b].slice[d].second);
      FUZZ_CHECK(!shared || e.shape.empty(), e.name + ": shards overlap");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  if (!cairn::ckpt::validate_manifest(j, "ckpt/step-00000001").ok()) return 0;
  auto entries = cairn::ckpt::parse_entries(j, "ckpt/step-00000001");
  if (!entries.ok()) {
    FUZZ_CHECK(entries.status().code() == cairn::StatusCode::kCorrupt, entries.status().ToString());
    return 0;
  }
  FUZZ_CHECK(j["step"].get<int64_t>() >= 0, "negative step accepted");
  for (const TensorEntry& e : *entries) check_entry(e);
  return 0;
}
