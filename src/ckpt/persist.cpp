// Shared-memory slots → storage: one rank's part at a time, committed by whoever completes it.
#include "cairn/ckpt/persist.h"

#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "cairn/core/fs.h"
#include "ckpt/format_impl.h"

namespace cairn::ckpt {
namespace {

constexpr int kPersisterNice = 10;

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

nlohmann::json to_json(const PersistTarget& t) {
  return {{"root", t.root},
          {"rank", t.rank},
          {"world", t.world},
          {"keep_last", t.keep_last},
          {"keep_every", t.keep_every}};
}

Result<PersistTarget> persist_target_from(const nlohmann::json& slot_state) {
  if (!slot_state.is_object() || !slot_state.contains("persist") ||
      !slot_state["persist"].is_object())
    return Status::InvalidArgument("the slot's state names no persist target");
  const auto& j = slot_state["persist"];
  PersistTarget t;
  try {
    t.root = j.at("root").get<std::string>();
    t.rank = j.at("rank").get<int>();
    t.world = j.at("world").get<int>();
    t.keep_last = j.value("keep_last", 3);
    t.keep_every = j.value("keep_every", 0);
  } catch (const nlohmann::json::exception& e) {
    return Status::Corrupt(std::string("malformed persist target: ") + e.what());
  }
  if (t.root.empty() || t.root[0] != '/' || t.world < 1 || t.rank < 0 || t.rank >= t.world)
    return Status::Corrupt("persist target is not usable: " + j.dump());
  return t;
}

int64_t newest_complete_step(const std::string& root) {
  auto steps = list_steps(root);
  for (auto it = steps.rbegin(); it != steps.rend(); ++it)
    if (read_manifest(root + "/" + step_dir_name(*it)).ok()) return *it;
  return -1;
}

Result<PartInfo> persist_part(const PersistTarget& target, int64_t step,
                              const std::vector<NamedTensor>& tensors,
                              const nlohmann::json& state) {
  auto t0 = std::chrono::steady_clock::now();
  PartInfo info;
  info.step = step;
  info.rank = target.rank;
  // The pieces of larger tensors this rank holds, as the partition table describes them.
  nlohmann::json slices = nlohmann::json::object();
  if (state.is_object() && state.contains("partition") && state["partition"].is_array())
    for (const nlohmann::json& e : state["partition"])
      if (e.is_object() && e.value("rank", -1) == target.rank && e.contains("slice"))
        slices[e.value("key", e.value("name", std::string()))] = {
            {"name", e.value("name", std::string())}, {"shape", e["shape"]}, {"slice", e["slice"]}};
  CAIRN_ASSIGN_OR_RETURN(SaveInfo part,
                         write_rank_part(target.root, step, target.rank, tensors, slices));
  info.bytes = part.bytes;
  info.path = part.path;
  nlohmann::json manifest_state = state;
  if (manifest_state.is_object()) {
    manifest_state.erase("persist");
    manifest_state.erase("partition");
  }
  CAIRN_ASSIGN_OR_RETURN(info.committed,
                         try_commit(target.root, step, target.world, manifest_state));
  if (info.committed) {
    info.path = target.root + "/" + step_dir_name(step);
    CAIRN_RETURN_IF_ERROR(prune_checkpoints(target.root, target.keep_last, target.keep_every));
  }
  info.seconds = seconds_since(t0);
  return info;
}

SlotPersister::SlotPersister(SlotPersisterOptions options) : o_(std::move(options)) {}

Result<std::unique_ptr<SlotPersister>> SlotPersister::Start(SlotPersisterOptions options) {
  if (options.poll_interval_s <= 0)
    return Status::InvalidArgument("poll interval must be positive");
  std::unique_ptr<SlotPersister> p(new SlotPersister(std::move(options)));
  // A claim left by a persister that died mid-write is this persister's to redo.
  {
    core::MutexLock lock(p->mu_);
    for (auto& [rank, names] : p->o_.slots)
      for (ShmSlot* s : p->slots_of(rank))
        if (s->persist_state() == kPersistRunning) s->requeue_persist();
  }
  p->thread_ = std::thread([raw = p.get()] { raw->loop(); });
  return p;
}

SlotPersister::~SlotPersister() {
  {
    core::MutexLock lock(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  poll_once();  // what was asked before the stop still goes to storage
}

void SlotPersister::loop() {
  // Background work: training has the cores first. SCHED_IDLE runs this thread only on a core
  // nobody else wants (nice 10 still took a tenth of a busy core, and more while training
  // waited in the kernel); its I/O is of the idle class too.
  if (o_.idle_priority) {
    sched_param idle{};
    if (::sched_setscheduler(0, SCHED_IDLE, &idle) != 0)
      ::setpriority(PRIO_PROCESS, pid_t(::syscall(SYS_gettid)), kPersisterNice);
    ::syscall(SYS_ioprio_set, 1 /*IOPRIO_WHO_PROCESS*/, 0, (3 << 13) /*IOPRIO_CLASS_IDLE*/);
  }
  const auto interval = std::chrono::duration<double>(o_.poll_interval_s);
  for (;;) {
    poll_once();
    core::MutexLock lock(stop_mu_);
    if (stop_cv_.wait_for(stop_mu_, interval, [this]() CAIRN_REQUIRES(stop_mu_) { return stop_; }))
      return;
  }
}

void SlotPersister::emit(const std::string& event, const nlohmann::json& fields) {
  if (o_.on_event) o_.on_event(event, fields);
}

std::vector<ShmSlot*> SlotPersister::slots_of(int rank) {
  std::vector<ShmSlot*> out;
  for (const std::string& name : o_.slots[rank]) {
    auto& slot = open_[name];
    if (slot && !slot->is_current()) slot.reset();
    if (!slot) {
      auto opened = ShmSlot::Open(name);
      if (!opened.ok()) continue;  // not created yet (or being replaced)
      slot = std::move(opened).value();
    }
    out.push_back(slot.get());
  }
  return out;
}

Result<PartInfo> SlotPersister::write_slot(ShmSlot* slot) {
  CAIRN_ASSIGN_OR_RETURN(ShmSnapshot snap, slot->view());
  CAIRN_ASSIGN_OR_RETURN(PersistTarget target, persist_target_from(snap.state));
  std::vector<NamedTensor> tensors;
  for (auto& [name, t] : snap.tensors) tensors.push_back({name, t});
  return persist_part(target, snap.step, tensors, snap.state);
}

int SlotPersister::poll_once() {
  core::MutexLock lock(mu_);
  int written = 0;
  for (auto& [rank, names] : o_.slots) {
    // Oldest first, so that `latest` moves forward: chosen again before each write, since the
    // trainer fills slots with newer steps meanwhile. (An order sorted before a slow write went
    // stale: a step persisted after a newer one that another rank had already committed found
    // its other parts pruned with that commit, and was never committed.) At most as many
    // writes as the rank has slots, so that a rank whose requests keep coming starves no other.
    for (size_t left = names.size(); left > 0; --left) {
      ShmSlot* slot = nullptr;
      for (ShmSlot* s : slots_of(rank))
        if (s->persist_state() == kPersistRequested &&
            (slot == nullptr || s->ready_step() < slot->ready_step()))
          slot = s;
      if (slot == nullptr || !slot->claim_persist()) break;
      const int64_t step = slot->ready_step();
      if (o_.testing_write_delay_s > 0)
        std::this_thread::sleep_for(std::chrono::duration<double>(o_.testing_write_delay_s));
      auto info = write_slot(slot);
      slot->finish_persist(info.ok());
      if (!info.ok()) {
        spdlog::error("persisting step {} of rank {} failed: {}", step, rank,
                      info.status().ToString());
        emit("checkpoint_persist_failed",
             {{"step", step}, {"rank", rank}, {"error", info.status().ToString()}});
        continue;
      }
      ++written;
      emit("checkpoint_persisted", {{"step", info->step},
                                    {"rank", info->rank},
                                    {"bytes", info->bytes},
                                    {"duration_ms", info->seconds * 1e3},
                                    {"committed", info->committed},
                                    {"path", info->path},
                                    {"reason", "requested"}});
    }
  }
  return written;
}

Result<nlohmann::json> SlotPersister::queue_unsaved() {
  core::MutexLock lock(mu_);
  std::string root;
  auto [step, slots] = newest_unsaved(&root);
  if (step < 0) return nlohmann::json();
  for (ShmSlot* s : slots) s->request_persist();
  stop_cv_.notify_all();  // wake the thread (it polls anyway)
  return nlohmann::json{{"step", step}, {"queued", true}};
}

std::vector<int64_t> SlotPersister::common_steps(std::map<int, std::vector<ShmSlot*>>* by_rank) {
  std::vector<int64_t> common;
  bool first = true;
  for (auto& [rank, names] : o_.slots) {
    (*by_rank)[rank] = slots_of(rank);
    std::vector<int64_t> mine;
    for (ShmSlot* s : (*by_rank)[rank])
      if (s->ready_step() >= 0) mine.push_back(s->ready_step());
    std::vector<int64_t> keep;
    for (int64_t st : first ? mine : common)
      if (first || std::find(mine.begin(), mine.end(), st) != mine.end()) keep.push_back(st);
    common = keep;
    first = false;
  }
  std::sort(common.rbegin(), common.rend());
  return common;
}

std::pair<int64_t, std::vector<ShmSlot*>> SlotPersister::newest_unsaved(std::string* root) {
  std::map<int, std::vector<ShmSlot*>> by_rank;
  std::vector<int64_t> common = common_steps(&by_rank);
  if (common.empty()) return {-1, {}};
  const int64_t step = common.front();
  std::vector<ShmSlot*> out;
  for (auto& [rank, slots] : by_rank)
    for (ShmSlot* s : slots)
      if (s->ready_step() == step) {
        out.push_back(s);
        break;
      }
  auto snap = out.front()->view();
  if (!snap.ok()) return {-1, {}};
  auto target = persist_target_from(snap->state);
  if (!target.ok()) return {-1, {}};
  *root = target->root;
  if (newest_complete_step(*root) >= step) return {-1, {}};
  return {step, out};
}

Result<nlohmann::json> SlotPersister::persist_unsaved(const std::string& reason) {
  core::MutexLock lock(mu_);
  std::map<int, std::vector<ShmSlot*>> by_rank;
  for (int64_t step : common_steps(&by_rank)) {
    int64_t bytes = 0;
    double seconds = 0;
    bool committed = false;
    std::string root, path;
    for (auto& [rank, slots] : by_rank) {
      ShmSlot* slot = nullptr;
      for (ShmSlot* s : slots)
        if (s->ready_step() == step) slot = s;
      if (!slot) return Status::Internal("slot of step " + std::to_string(step) + " vanished");
      if (root.empty()) {
        CAIRN_ASSIGN_OR_RETURN(ShmSnapshot snap, slot->view());
        CAIRN_ASSIGN_OR_RETURN(PersistTarget target, persist_target_from(snap.state));
        root = target.root;
        // Storage already holds this step or a newer one: nothing in memory is worth writing.
        if (newest_complete_step(root) >= step) return nlohmann::json();
      }
      if (slot->persist_state() == kPersistDone) continue;  // this part is on storage already
      auto info = write_slot(slot);
      if (!info.ok()) return info.status().WithContext("rank " + std::to_string(rank));
      if (slot->persist_state() == kPersistRequested) slot->claim_persist();
      slot->finish_persist(true);
      bytes += info->bytes;
      seconds += info->seconds;
      committed = committed || info->committed;
      path = info->path;
    }
    if (!committed) committed = newest_complete_step(root) >= step;  // another node committed
    if (committed)
      return nlohmann::json{{"step", step},
                            {"bytes", bytes},
                            {"duration_ms", seconds * 1e3},
                            {"committed", true},
                            {"path", root + "/" + step_dir_name(step)},
                            {"reason", reason}};
    spdlog::warn("step {}: this node's parts are on storage but other ranks' are missing", step);
  }
  return nlohmann::json();
}

}  // namespace cairn::ckpt
