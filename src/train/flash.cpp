// Flash-checkpoint slots of one rank.
#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "cairn/ckpt/shm_slot.h"
#include "cairn/elastic/flash_slots.h"
#include "train/flash_impl.h"

namespace cairn::train {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A quarter of headroom so that small growth of the state (e.g. metadata) still fits.
int64_t headroom(int64_t bytes_needed) { return bytes_needed + bytes_needed / 4 + (1 << 20); }

}  // namespace

std::vector<std::string> FlashSlots::names() const {
  std::vector<std::string> out;
  for (int i = 0; i < elastic::kFlashSlotsPerRank; ++i)
    out.push_back(elastic::flash_slot_name(run_dir_, rank_, i));
  return out;
}

Result<ckpt::ShmSlot*> FlashSlots::slot(int index, int64_t bytes_needed) {
  auto& s = slots_[size_t(index)];
  if (s && s->capacity() >= bytes_needed) return s.get();
  std::string name = elastic::flash_slot_name(run_dir_, rank_, index);
  if (!s) {
    auto opened = ckpt::ShmSlot::Open(name, /*populate=*/true);  // left before a restart
    if (opened.ok() && (*opened)->capacity() >= bytes_needed) {
      s = std::move(opened).value();
      if (owner_pid_ > 0) s->set_owner(owner_pid_);
      return s.get();
    }
  }
  s.reset();
  auto created = ckpt::ShmSlot::Create(name, headroom(bytes_needed), /*unlink_on_close=*/false);
  if (!created.ok()) return created.status();
  s = std::move(created).value();
  if (owner_pid_ > 0) s->set_owner(owner_pid_);
  spdlog::info("in-memory checkpoint slot /dev/shm{} ({} MB)", name, s->capacity() >> 20);
  return s.get();
}

FlashSlots::~FlashSlots() {
  if (copier_.joinable()) copier_.join();
  if (preparer_.joinable()) preparer_.join();
}

void FlashSlots::prepare(int64_t bytes_needed) {
  if (preparer_.joinable()) return;
  ready_steps();  // slots an earlier process of this rank left are kept (they may be restored)
  std::vector<std::pair<int, std::string>> todo;
  std::vector<ckpt::ShmSlot*> existing;  // left by an earlier process: their pages are touched
  for (int i = 0; i < in_use_; ++i)
    if (!slots_[size_t(i)]) {
      in_preparation_[size_t(i)] = true;
      todo.emplace_back(i, elastic::flash_slot_name(run_dir_, rank_, i));
    } else {
      existing.push_back(slots_[size_t(i)].get());  // not destroyed before adopt_prepared
    }
  prepared_.store(false);
  preparer_ = std::thread([this, todo, existing, bytes_needed] {
    // At training's priority: a nice thread got so little of the cores that saves were
    // skipped for 12 steps instead of 3.
    for (ckpt::ShmSlot* slot : existing) {
      if (stop_preparing_.load()) break;
      slot->touch_pages();
    }
    for (const auto& [index, name] : todo) {
      if (stop_preparing_.load()) break;
      auto created = ckpt::ShmSlot::Create(name, headroom(bytes_needed), /*unlink_on_close=*/false);
      if (!created.ok()) break;  // a save meets the same error, with its context, and says it
      if (owner_pid_ > 0) (*created)->set_owner(owner_pid_);
      (*created)->touch_pages();
      made_[size_t(index)] = std::move(created).value();
    }
    prepared_.store(true, std::memory_order_release);
  });
}

void FlashSlots::adopt_prepared(bool wait) {
  if (!preparer_.joinable() || (!wait && !prepared_.load(std::memory_order_acquire))) return;
  preparer_.join();
  for (int i = 0; i < elastic::kFlashSlotsPerRank; ++i) {
    in_preparation_[size_t(i)] = false;
    if (!made_[size_t(i)]) continue;
    spdlog::info("in-memory checkpoint slot /dev/shm{} ({} MB)", made_[size_t(i)]->name(),
                 made_[size_t(i)]->capacity() >> 20);
    slots_[size_t(i)] = std::move(made_[size_t(i)]);
  }
}

void FlashSlots::stop_preparing() {
  if (!preparer_.joinable()) return;
  stop_preparing_.store(true);
  preparer_.join();
  for (auto& m : made_) m.reset();
  in_preparation_.fill(false);
}

bool FlashSlots::preparing() {
  adopt_prepared(/*wait=*/false);
  return preparer_.joinable();
}

bool FlashSlots::persist_in_flight() {  // the slots were opened by the restore and prepare()
  for (auto& s : slots_)
    if (s && s->persist_pending()) return true;
  return false;
}

Result<ckpt::ShmSlot*> FlashSlots::free_slot(int64_t bytes_needed, double timeout_s,
                                             double* waited_s) {
  auto t0 = Clock::now();
  adopt_prepared(/*wait=*/true);
  ready_steps();  // opens slots left by an earlier process of this rank
  int index = -1;
  for (int64_t polls = 0;; ++polls) {
    // The oldest of the slots that are free (empty counts as oldest).
    int64_t best = INT64_MAX;
    for (int i = 0; i < in_use_; ++i) {
      auto& s = slots_[size_t(i)];
      if (s && s->persist_pending()) continue;
      int64_t st = s ? s->ready_step() : -1;
      if (st < best) best = st, index = i;
    }
    if (index >= 0) break;
    if (seconds_since(t0) > timeout_s)
      return Status::Timeout("every in-memory checkpoint slot is still being persisted after " +
                             std::to_string(int(timeout_s)) +
                             " s (ckpt.persist_timeout); is storage writable and the persister "
                             "(cairn run) alive?");
    std::this_thread::sleep_for(std::chrono::microseconds(polls < 100 ? 200 : 2000));
  }
  *waited_s = seconds_since(t0);
  return slot(index, bytes_needed);
}

Result<FlashSaveInfo> FlashSlots::save(int64_t step, const std::vector<ckpt::NamedTensor>& tensors,
                                       const nlohmann::json& state, bool persist,
                                       double timeout_s) {
  FlashSaveInfo info;
  CAIRN_ASSIGN_OR_RETURN(
      ckpt::ShmSlot * target,
      free_slot(ckpt::ShmSlot::bytes_needed(tensors, state), timeout_s, &info.waited_s));
  CAIRN_ASSIGN_OR_RETURN(ckpt::ShmWriteInfo w, target->write(step, tensors, state, 4, persist));
  info.bytes = w.bytes;
  info.copy_s = w.seconds;
  return info;
}

Result<FlashSaveInfo> FlashSlots::start_save(int64_t step, std::vector<ckpt::NamedTensor> tensors,
                                             nlohmann::json state, bool persist, double timeout_s) {
  TORCH_INTERNAL_ASSERT(!copier_.joinable(), "start_save with a copy pending");
  FlashSaveInfo info;
  CAIRN_ASSIGN_OR_RETURN(
      ckpt::ShmSlot * target,
      free_slot(ckpt::ShmSlot::bytes_needed(tensors, state), timeout_s, &info.waited_s));
  copying_ = std::move(tensors);
  // One thread: the copy shares the cores with the forward and backward it overlaps, and a
  // second copy thread only contends with them (bench/ckpt.py).
  copier_ = std::thread([this, target, step, state = std::move(state), persist] {
    copied_ = target->write(step, copying_, state, 1, persist);
  });
  return info;
}

Result<ckpt::ShmWriteInfo> FlashSlots::finish() {
  TORCH_INTERNAL_ASSERT(copier_.joinable(), "finish without a copy");
  copier_.join();
  copying_.clear();
  return copied_;
}

bool FlashSlots::has_free_slot() {
  if (preparing()) return false;
  ready_steps();
  for (int i = 0; i < in_use_; ++i)
    if (!slots_[size_t(i)] || !slots_[size_t(i)]->persist_pending()) return true;
  return false;
}

bool FlashSlots::request_persist(int64_t step) {
  for (auto& s : slots_)
    if (s && s->ready_step() == step) return s->request_persist();
  return false;
}

Status FlashSlots::wait_persisted(int64_t step, double timeout_s) {
  auto t0 = Clock::now();
  for (;;) {
    ckpt::ShmSlot* found = nullptr;
    for (auto& s : slots_)
      if (s && s->ready_step() == step && (!found || s->persist_state() != ckpt::kPersistNone))
        found = s.get();
    if (!found) return Status::NotFound("no in-memory checkpoint of step " + std::to_string(step));
    switch (found->persist_state()) {
      case ckpt::kPersistDone:
        return Status::Ok();
      case ckpt::kPersistFailed:
        return Status::Internal("persisting step " + std::to_string(step) +
                                " failed (see checkpoint_persist_failed in events.jsonl)");
      case ckpt::kPersistNone:
        return Status::FailedPrecondition("step " + std::to_string(step) +
                                          " was not sent to be persisted");
      default:
        break;
    }
    if (seconds_since(t0) > timeout_s)
      return Status::Timeout("step " + std::to_string(step) + " not persisted after " +
                             std::to_string(int(timeout_s)) + " s (ckpt.persist_timeout)");
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

std::array<int64_t, elastic::kFlashSlotsPerRank> FlashSlots::ready_steps() {
  std::array<int64_t, elastic::kFlashSlotsPerRank> steps;
  steps.fill(-1);
  adopt_prepared(/*wait=*/false);
  for (int i = 0; i < elastic::kFlashSlotsPerRank; ++i) {
    auto& slot = slots_[size_t(i)];
    if (!slot && !in_preparation_[size_t(i)]) {
      auto opened =
          ckpt::ShmSlot::Open(elastic::flash_slot_name(run_dir_, rank_, i), /*populate=*/true);
      if (!opened.ok()) continue;
      slot = std::move(opened).value();
      if (owner_pid_ > 0) slot->set_owner(owner_pid_);
    }
    if (slot) steps[size_t(i)] = slot->ready_step();
  }
  return steps;
}

Result<ckpt::ShmSnapshot> FlashSlots::view(int64_t step) {
  for (auto& slot : slots_)
    if (slot && slot->ready_step() == step) return slot->view();
  return Status::NotFound("no in-memory checkpoint of step " + std::to_string(step));
}

}  // namespace cairn::train
