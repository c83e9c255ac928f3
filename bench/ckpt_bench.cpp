// The copy floor for a checkpoint: loads a cairn checkpoint (the state the trainer saved) and
// times a raw single-threaded memcpy of exactly those bytes into memory already faulted in,
// then a shared-memory slot write and read of the same tensors, and a load from storage.
// Prints one JSON object. Used by bench/ckpt.py; usage: ckpt_bench STEP_DIR [REPEATS]
#include <sys/mman.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "cairn/ckpt/checkpoint.h"
#include "cairn/ckpt/shm_slot.h"

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  using namespace cairn;
  if (argc < 2) {
    std::fprintf(stderr, "usage: ckpt_bench STEP_DIR [REPEATS]\n");
    return 2;
  }
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 5;
  auto t0 = Clock::now();
  auto loaded = ckpt::load_checkpoint(argv[1]);
  double load_s = since(t0);
  if (!loaded.ok()) {
    std::fprintf(stderr, "ckpt_bench: %s\n", loaded.status().ToString().c_str());
    return 1;
  }
  std::vector<ckpt::NamedTensor> tensors;
  int64_t bytes = 0;
  for (auto& [name, t] : loaded->tensors) {
    tensors.push_back({name, t});
    bytes += int64_t(t.nbytes());
  }
  // Raw memcpy floor: one copy per tensor, one thread, destination already faulted in.
  std::vector<char> dst(static_cast<size_t>(bytes));
  std::memset(dst.data(), 1, dst.size());
  double memcpy_s = 1e30;
  for (int r = 0; r < repeats; ++r) {
    auto t = Clock::now();
    size_t off = 0;
    for (auto& nt : tensors) {
      std::memcpy(dst.data() + off, nt.tensor.data_ptr(), nt.tensor.nbytes());
      off += nt.tensor.nbytes();
    }
    memcpy_s = std::min(memcpy_s, since(t));
  }
  // The same tensors through a slot (as a memory save does, minus gathering) and back.
  std::string name = "/cairn-ckpt-bench-" + std::to_string(getpid());
  auto slot = ckpt::ShmSlot::Create(name, ckpt::ShmSlot::bytes_needed(tensors, {}) + (1 << 20));
  if (!slot.ok()) {
    std::fprintf(stderr, "ckpt_bench: %s\n", slot.status().ToString().c_str());
    return 1;
  }
  auto first = Clock::now();
  if (!(*slot)->write(1, tensors, {}, 4).ok()) return 1;
  double first_write_s = since(first);
  double write_s = 1e30, read_s = 1e30;
  for (int r = 0; r < repeats; ++r) {
    auto t = Clock::now();
    if (!(*slot)->write(2 + r, tensors, {}, 4).ok()) return 1;
    write_s = std::min(write_s, since(t));
    t = Clock::now();
    auto snap = (*slot)->read();
    if (!snap.ok()) return 1;
    read_s = std::min(read_s, since(t));
  }
  nlohmann::json out = {{"bytes", bytes},          {"tensors", tensors.size()},
                        {"memcpy_s", memcpy_s},    {"slot_first_write_s", first_write_s},
                        {"slot_write_s", write_s}, {"slot_read_s", read_s},
                        {"storage_load_s", load_s}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
