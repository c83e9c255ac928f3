// Flash-checkpoint slots of one rank.
#include <spdlog/spdlog.h>

#include "cairn/ckpt/shm_slot.h"

#include "cairn/elastic/flash_slots.h"
#include "train/flash_impl.h"

namespace cairn::train {

Result<ckpt::ShmSlot*> FlashSlots::slot(int index, int64_t bytes_needed) {
  auto& s = slots_[size_t(index)];
  if (s && s->capacity() >= bytes_needed) return s.get();
  std::string name = elastic::flash_slot_name(run_dir_, rank_, index);
  if (!s) {
    auto opened = ckpt::ShmSlot::Open(name);  // left by this rank before a restart
    if (opened.ok() && (*opened)->capacity() >= bytes_needed) {
      s = std::move(opened).value();
      return s.get();
    }
  }
  s.reset();
  // A quarter of headroom so that small growth of the state (e.g. metadata) still fits.
  auto created = ckpt::ShmSlot::Create(name, bytes_needed + bytes_needed / 4 + (1 << 20),
                                       /*unlink_on_close=*/false);
  if (!created.ok()) return created.status();
  s = std::move(created).value();
  spdlog::info("in-memory checkpoint slot /dev/shm{} ({} MB)", name, s->capacity() >> 20);
  return s.get();
}

Result<ckpt::ShmWriteInfo> FlashSlots::save(int64_t step,
                                            const std::vector<ckpt::NamedTensor>& tensors,
                                            const nlohmann::json& state) {
  const int64_t need = ckpt::ShmSlot::bytes_needed(tensors, state);
  // Write over the older of the two (or an empty one).
  int64_t s0 = slots_[0] ? slots_[0]->ready_step() : -1, s1 = slots_[1] ? slots_[1]->ready_step() : -1;
  int index = s0 <= s1 ? 0 : 1;
  CAIRN_ASSIGN_OR_RETURN(ckpt::ShmSlot * target, slot(index, need));
  return target->write(step, tensors, state, 4);
}

std::array<int64_t, 2> FlashSlots::ready_steps() {
  std::array<int64_t, 2> steps{-1, -1};
  for (int i = 0; i < elastic::kFlashSlotsPerRank; ++i) {
    auto& slot = slots_[size_t(i)];
    if (!slot) {
      auto opened = ckpt::ShmSlot::Open(elastic::flash_slot_name(run_dir_, rank_, i));
      if (!opened.ok()) continue;
      slot = std::move(opened).value();
    }
    steps[size_t(i)] = slot->ready_step();
  }
  return steps;
}

Result<ckpt::ShmSnapshot> FlashSlots::read(int64_t step) {
  for (auto& slot : slots_)
    if (slot && slot->ready_step() == step) return slot->read();
  return Status::NotFound("no in-memory checkpoint of step " + std::to_string(step));
}

}  // namespace cairn::train
