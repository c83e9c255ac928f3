// Flash-checkpoint segment names and their removal.
#include "cairn/elastic/flash_slots.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>

namespace cairn::elastic {

std::string flash_slot_name(const std::string& run_dir, int global_rank, int index) {
  std::error_code ec;
  std::string path = std::filesystem::absolute(run_dir, ec).lexically_normal().string();
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  uint64_t h = 1469598103934665603ull;  // FNV-1a: stable across builds and processes
  for (unsigned char c : path) h = (h ^ c) * 1099511628211ull;
  char buf[64];
  std::snprintf(buf, sizeof(buf), "/cairn-%012llx-r%d-%d",
                static_cast<unsigned long long>(h & 0xffffffffffffull), global_rank, index);
  return buf;
}

int unlink_flash_slots(const std::string& run_dir, const std::vector<int>& ranks) {
  int removed = 0;
  for (int r : ranks)
    for (int i = 0; i < kFlashSlotsPerRank; ++i)
      removed += ::shm_unlink(flash_slot_name(run_dir, r, i).c_str()) == 0;
  return removed;
}

}  // namespace cairn::elastic
