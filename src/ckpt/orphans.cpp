// Finding, persisting and removing orphaned in-memory checkpoint slots.
#include "cairn/ckpt/orphans.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <regex>

#include "cairn/ckpt/persist.h"
#include "cairn/ckpt/shm_slot.h"
#include "cairn/core/proc.h"

namespace cairn::ckpt {
namespace {

namespace fs = std::filesystem;

// Persists `slot` (owned by a dead process) unless storage holds its step or a newer one.
// Returns false (and says why) when the slot must be kept.
bool save_orphan(ShmSlot& slot, bool dry_run, std::map<std::string, int64_t>* planned,
                 SlotReport* r) {
  if (r->step < 0) {
    r->detail = "holds no complete checkpoint";
    return true;
  }
  auto snap = slot.view();
  if (!snap.ok()) {
    r->detail = "unreadable (" + snap.status().message() + ")";
    return true;
  }
  auto target = persist_target_from(snap->state);
  if (!target.ok()) {
    r->detail = "names no checkpoint directory (" + target.status().message() + ")";
    return true;
  }
  // A dry run writes nothing: what it would have written counts as stored.
  auto p = planned->find(target->root);
  const int64_t stored =
      std::max(newest_complete_step(target->root), p == planned->end() ? int64_t(-1) : p->second);
  if (stored >= r->step) {
    r->detail = "storage holds step " + std::to_string(stored) + " in " + target->root;
    return true;
  }
  if (slot.persist_state() == kPersistDone) {
    r->detail = "its part of step " + std::to_string(r->step) + " is on storage already";
    return true;
  }
  r->persisted = true;
  if (dry_run) {
    (*planned)[target->root] = std::max(stored, r->step);
    r->detail = "step " + std::to_string(r->step) + " to persist to " + target->root;
    return true;
  }
  // Claimed, so that two processes collecting at once write it once.
  slot.request_persist();
  if (!slot.claim_persist()) {
    r->persisted = false;
    r->detail = "being persisted by another process";
    return false;
  }
  std::vector<NamedTensor> tensors;
  for (auto& [name, t] : snap->tensors) tensors.push_back({name, t});
  auto info = persist_part(*target, r->step, tensors, snap->state);
  slot.finish_persist(info.ok());
  if (!info.ok()) {
    r->persisted = false;
    r->detail =
        "kept: persisting step " + std::to_string(r->step) + " failed: " + info.status().message();
    return false;
  }
  r->detail =
      "persisted step " + std::to_string(r->step) + " of rank " + std::to_string(target->rank) +
      " to " +
      (info->committed ? info->path : target->root + " (waiting for the other ranks' parts)");
  return true;
}

}  // namespace

std::vector<SlotReport> collect_orphan_slots(const OrphanOptions& o) {
  static const std::regex kSlotName("cairn-[0-9a-f]{12}-r[0-9]+-[0-9]+");
  std::error_code ec;
  struct Candidate {
    SlotReport report;
    std::unique_ptr<ShmSlot> slot;
    double idle_s = 0;
  };
  std::vector<Candidate> all;
  const auto now = fs::file_time_type::clock::now();
  for (auto it = fs::directory_iterator(o.shm_dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    std::string n = it->path().filename().string();
    if (!std::regex_match(n, kSlotName) || ("/" + n).rfind(o.only_prefix, 0) != 0) continue;
    Candidate c;
    c.report.name = "/" + n;
    std::error_code e2;
    c.report.bytes = int64_t(fs::file_size(it->path(), e2));
    const auto mtime = fs::last_write_time(it->path(), e2);
    if (!e2) c.idle_s = std::chrono::duration<double>(now - mtime).count();
    all.push_back(std::move(c));
  }
  // Newest content first: once it is on storage, the older slots of its run need no write.
  for (auto& c : all) {
    auto slot = ShmSlot::Open(c.report.name);
    if (slot.ok()) {
      c.slot = std::move(slot).value();
      c.report.step = c.slot->ready_step();
    } else {
      c.report.detail = "left alone: " + slot.status().message();
    }
  }
  std::stable_sort(all.begin(), all.end(), [](const Candidate& a, const Candidate& b) {
    return a.report.step > b.report.step;
  });
  std::vector<SlotReport> out;
  std::map<std::string, int64_t> planned;  // dry run: checkpoint directory -> step it would hold
  for (auto& c : all) {
    SlotReport& r = c.report;
    if (!o.skip_prefix.empty() && r.name.rfind(o.skip_prefix, 0) == 0) {
      r.detail = "this run's own slot";
    } else if (c.slot) {
      const SlotOwner owner = c.slot->owner();
      r.owner_pid = owner.pid;
      if (owner.pid <= 0) {
        r.detail = "left alone: no owner recorded";
      } else if ((r.owner_alive = core::process_alive(owner.pid, owner.start_time))) {
        r.detail = "in use by pid " + std::to_string(owner.pid);
      } else if (c.idle_s < o.min_idle_s) {
        r.detail = "owner pid " + std::to_string(owner.pid) + " is gone; left for its restart " +
                   "(written " + std::to_string(int(c.idle_s)) + " s ago)";
      } else if (save_orphan(*c.slot, o.dry_run, &planned, &r)) {
        r.removed = true;
        if (!o.dry_run) ::shm_unlink(r.name.c_str());
        r.detail = "owner pid " + std::to_string(owner.pid) + " is gone; " + r.detail;
      }
    }
    out.push_back(r);
  }
  std::sort(out.begin(), out.end(),
            [](const SlotReport& a, const SlotReport& b) { return a.name < b.name; });
  return out;
}

}  // namespace cairn::ckpt
