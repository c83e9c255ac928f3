// The trainer's checkpoints: partitioned in-memory saves (copied while training goes on),
// persisting through the slot persister, waiting for the final persist, and restoring from
// shared memory or storage.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>

#include "cairn/comm/group.h"
#include "cairn/core/fs.h"
#include "train/trainer_impl.h"

namespace cairn::train {

namespace {

// Every rank's `mine` (collective; in rank order).
std::vector<nlohmann::json> allgather_json(const nlohmann::json& mine, comm::Group* group) {
  if (!group || group->size() == 1) return {mine};
  const std::string text = mine.dump();
  const int world = group->size();
  auto sizes = torch::empty({world}, torch::kLong);
  group->allgather(sizes, torch::tensor({int64_t(text.size())}, torch::kLong));
  const int64_t longest = sizes.max().item<int64_t>();
  auto padded = torch::zeros({longest}, torch::kByte);
  std::memcpy(padded.data_ptr(), text.data(), text.size());
  auto all = torch::empty({longest * world}, torch::kByte);
  group->allgather(all, padded);
  std::vector<nlohmann::json> out;
  for (int r = 0; r < world; ++r) {
    const char* p = static_cast<const char*>(all.data_ptr()) + r * longest;
    out.push_back(nlohmann::json::parse(std::string(p, size_t(sizes[r].item<int64_t>()))));
  }
  return out;
}

std::string piece_key(const parallel::StatePiece& p) {
  std::string key = p.name + "@";
  for (size_t d = 0; d < p.slice.size(); ++d)
    key +=
        (d ? "," : "") + std::to_string(p.slice[d].first) + ":" + std::to_string(p.slice[d].second);
  return key;
}

}  // namespace

parallel::Engine::CheckpointShare Trainer::Impl::state_share() {
  parallel::Engine::CheckpointShare share = engine->checkpoint_share(kModelPrefix, kOptimPrefix);
  share.replicated.emplace_back(kRngName, at::detail::getDefaultCPUGenerator().get_state());
  return share;
}

nlohmann::json Trainer::Impl::state_json(const char* reason) {
  return {{"step", step},
          {"samples_consumed", step * opt.global_batch_size},
          {"optimizer_step", engine->step_count()},
          {"world_size", world},
          {"mesh", plan.to_json()["mesh"]},
          {"config_yaml", config.to_yaml()},
          {"reason", reason},
          {"shards", shards_state}};
}

ckpt::PersistTarget Trainer::Impl::persist_target() const {
  ckpt::PersistTarget t;
  t.root = ckpt_dir;
  t.rank = rank;
  t.world = world;
  t.keep_last = int(opt.keep_last);
  t.keep_every = int(opt.keep_every);
  return t;
}

std::pair<std::vector<ckpt::NamedTensor>, nlohmann::json> Trainer::Impl::partition(
    parallel::Engine::CheckpointShare share) {
  std::vector<ckpt::NamedTensor> mine;
  nlohmann::json pieces = nlohmann::json::array();
  for (parallel::StatePiece& p : share.owned) {
    nlohmann::json slice = nlohmann::json::array();
    for (auto [begin, end] : p.slice) slice.push_back({begin, end});
    const std::string key = piece_key(p);
    pieces.push_back({{"key", key},
                      {"name", p.name},
                      {"dtype", std::string(c10::toString(p.tensor.scalar_type()))},
                      {"shape", p.shape},
                      {"slice", slice},
                      {"bytes", int64_t(p.tensor.nbytes())}});
    mine.push_back({key, std::move(p.tensor)});
  }
  nlohmann::json table = nlohmann::json::array();
  std::vector<int64_t> load(size_t(world), 0);
  // Every rank's pieces (two all-gathers), only for a layout that has them.
  TORCH_CHECK(engine->shares_pieces() || pieces.empty(),
              "the engine gave checkpoint pieces it said it would not");
  const std::vector<nlohmann::json> every =
      engine->shares_pieces() ? allgather_json(pieces, group) : std::vector<nlohmann::json>{};
  for (int r = 0; r < int(every.size()); ++r)
    for (nlohmann::json e : every[size_t(r)]) {
      load[size_t(r)] += e["bytes"].get<int64_t>();
      e["rank"] = r;
      table.push_back(std::move(e));
    }
  auto& all = share.replicated;
  std::vector<size_t> order(all.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return all[a].second.nbytes() > all[b].second.nbytes();
  });
  std::vector<int> owner(all.size());
  for (size_t i : order) {
    int r = int(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = r;
    load[size_t(r)] += int64_t(all[i].second.nbytes());
  }
  for (size_t i = 0; i < all.size(); ++i) {
    table.push_back({{"key", all[i].first},
                     {"name", all[i].first},
                     {"dtype", std::string(c10::toString(all[i].second.scalar_type()))},
                     {"shape", all[i].second.sizes().vec()},
                     {"rank", owner[i]}});
    if (owner[i] == rank) mine.push_back({all[i].first, std::move(all[i].second)});
  }
  return {std::move(mine), std::move(table)};
}

Status Trainer::Impl::open_run_files() {
  const TrainOptions& o = opt;
  CAIRN_ASSIGN_OR_RETURN(log, RunLog::Open(run.run_dir, /*writer=*/rank == 0));
  if (rank == 0)
    CAIRN_RETURN_IF_ERROR(core::write_file_atomic(run.run_dir + "/config.yaml", config.to_yaml()));

  {
    std::string dir = o.ckpt_dir.empty() ? run.run_dir + "/ckpt" : o.ckpt_dir;
    ckpt_dir = std::filesystem::absolute(dir).lexically_normal().string();
    while (ckpt_dir.size() > 1 && ckpt_dir.back() == '/') ckpt_dir.pop_back();
  }
  // The slots' owner removes them: the agent (our parent) when it persists for us, else we do.
  // A third slot whenever one may be held by a persist: interval persists, and under an agent
  // the persist of the newest step it queues after a failure. With two, every save went into
  // the one free slot, overwriting the newest complete checkpoint: a kill during that copy
  // went back to the held step (bench/recovery.py lost 6 steps so, the agent's persist of the
  // step restored from being starved by the restarted workers at idle priority).
  flash = std::make_unique<FlashSlots>(
      run.run_dir, rank, run.agent_persists ? int(::getppid()) : int(::getpid()),
      /*in_use=*/o.persist_interval > 0 || run.agent_persists ? 3 : 2);
  if (run.report_progress) {
    auto p = elastic::ProgressWriter::Open(run.run_dir, rank);
    if (!p.ok()) return p.status().WithContext("progress report for the hang detector");
    progress = std::move(p).value();
  }
  if (!run.agent_persists) {
    ckpt::SlotPersisterOptions po;
    po.slots[rank] = flash->names();
    po.testing_write_delay_s = run.testing.slow_storage_s;
    po.idle_priority = run.testing.slow_storage_s <= 0;
    // Every rank's persister reports (the RunLog writes rank 0's lines only).
    po.on_event = [events = std::make_shared<core::EventLog>(run.run_dir + "/events.jsonl")](
                      const std::string& event, const nlohmann::json& fields) {
      events->write(event, fields);
    };
    CAIRN_ASSIGN_OR_RETURN(persister, ckpt::SlotPersister::Start(std::move(po)));
  }
  return Status::Ok();
}

void Trainer::Impl::prepare_slots() {
  if (opt.memory_interval <= 0 && opt.persist_interval <= 0) return;
  auto [mine, table] = partition(state_share());
  nlohmann::json state = state_json("memory");
  state["partition"] = table;
  state["persist"] = ckpt::to_json(persist_target());
  flash->prepare(ckpt::ShmSlot::bytes_needed(mine, state));
}

bool Trainer::Impl::pace_save(bool* persist, const char** reason, double now) {
  // Storage sets the pace of interval persists: one due while the previous persist is still
  // being written, within ckpt.persist_duty of it, or while the slots are being prepared is
  // deferred to the first save after that (writing storage slows training even from an idle
  // thread; a persist still in flight after ckpt.persist_timeout is not waited around: the
  // save then waits for a slot and fails at that timeout). A memory-only save when no slot is
  // free is skipped. Decided on every rank alike, by one all-reduce (ranks that write storage
  // directly take part with nothing in flight).
  // Never deferred: the steps ckpt.keep_every keeps, and every one with ckpt.persist_duty=1.
  const bool interval_persist = *persist && std::strcmp(*reason, "interval") == 0 &&
                                opt.persist_duty < 1 &&
                                !(opt.keep_every > 0 && step % opt.keep_every == 0);
  if (!interval_persist && *persist) return true;
  const bool preparing = !direct_persist && flash->preparing();
  const bool hold = !direct_persist && storage_holds(now, preparing);
  const std::vector<double> sums =
      sum_over_ranks({direct_persist || flash->has_free_slot() ? 1.0 : 0.0, hold ? 1.0 : 0.0,
                      preparing ? 1.0 : 0.0});
  const bool all_free = sums[0] == double(world), storage_busy = sums[1] > 0;
  if (interval_persist && storage_busy) {
    *persist = false;
    persist_owed = true;
    owed_step = step;
    ++deferred_persists;
    *reason = "memory";
    const char* why = sums[2] > 0                  ? "the in-memory slots are still being prepared"
                      : flash->persist_in_flight() ? "the previous persist is still being written"
                                                   : "ckpt.persist_duty";
    if (sums[2] == 0 && (deferred_persists == 1 || deferred_persists % 100 == 0))
      spdlog::info(
          "the persist of step {} is deferred ({}; the last took {:.1f} s, {} deferred so "
          "far): the first save after it may start is persisted",
          step, why, pacer->last_busy_s(), deferred_persists);
    log->event("checkpoint_persist_deferred", {{"step", step}, {"reason", why}});
  } else if (!*persist && persist_owed && !storage_busy) {
    *persist = true;  // the deferred persist
    *reason = "interval";
  }
  if (!*persist && !all_free) {
    ++skipped_saves;
    const char* why = sums[2] > 0 ? "the in-memory slots are still being prepared"
                                  : "every slot in use is still being persisted";
    if (sums[2] == 0 && (skipped_saves == 1 || skipped_saves % 100 == 0))
      spdlog::warn(
          "in-memory checkpoint of step {} skipped: {} (storage is slower than "
          "ckpt.persist_interval; {} skipped so far)",
          step, why, skipped_saves);
    log->event("checkpoint_skipped", {{"step", step}, {"storage", "memory"}, {"reason", why}});
    return false;
  }
  return true;
}

bool Trainer::Impl::storage_holds(double now, bool preparing) const {
  const bool stuck = pacer->in_flight_for(now) > opt.persist_timeout_s;
  return !stuck && (preparing || !pacer->may_start(now));
}

Status Trainer::Impl::between_saves() {
  if (!pacer || direct_persist) return Status::Ok();
  const double now = std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
  // Seen at every step, not only at saves: a persist's busy time is not stretched to the next
  // save (which with sparse saves made every other persist look too long and be deferred).
  pacer->observe(flash->persist_in_flight(), now);
  // With ckpt.memory_interval=0 a deferred persist would wait for the next persist interval:
  // it is paid from the slot that holds its step (no new copy) as soon as storage may start
  // one. Every rank decides alike, by one all-reduce per step while it is owed.
  if (!persist_owed || opt.memory_interval > 0) return Status::Ok();
  CAIRN_RETURN_IF_ERROR(finish_checkpoint());
  const bool hold = storage_holds(now, flash->preparing());
  const std::array<int64_t, elastic::kFlashSlotsPerRank> held = flash->ready_steps();
  const bool holds = std::find(held.begin(), held.end(), owed_step) != held.end();
  const std::vector<double> sums = sum_over_ranks({hold ? 1.0 : 0.0, holds ? 1.0 : 0.0});
  if (sums[0] > 0) return Status::Ok();
  persist_owed = false;
  if (sums[1] < double(world)) return Status::Ok();  // overwritten: the next interval persists
  auto t0 = Clock::now();
  if (!flash->request_persist(owed_step))
    return Status::Internal("the slot of step " + std::to_string(owed_step) + " went away");
  pacer->requested(now);
  log->event("checkpoint_saved", {{"step", owed_step},
                                  {"bytes", 0},
                                  {"duration_ms", seconds_since(t0) * 1e3},
                                  {"storage", "memory"},
                                  {"persist", true},
                                  {"reason", "deferred"}});
  return Status::Ok();
}

Status Trainer::Impl::checkpoint(bool persist, const char* reason, bool overlap) {
  const bool again = pending_save && pending_save->step == step;
  CAIRN_RETURN_IF_ERROR(finish_checkpoint());
  auto t0 = Clock::now();
  // This step is in memory already (a memory save just before a stop): persist that copy.
  if (again && persist && flash->request_persist(step)) {
    log->event("checkpoint_saved", {{"step", step},
                                    {"bytes", 0},
                                    {"duration_ms", seconds_since(t0) * 1e3},
                                    {"storage", "memory"},
                                    {"persist", true},
                                    {"reason", reason}});
    return Status::Ok();
  }
  const double now = std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
  if (!pacer) pacer.emplace(opt.persist_duty);
  if (!direct_persist) pacer->observe(flash->persist_in_flight(), now);
  if (!pace_save(&persist, &reason, now)) return Status::Ok();
  if (persist) persist_owed = false;
  if (dynamic) {
    CAIRN_ASSIGN_OR_RETURN(shards_state, dynamic->snapshot(step, group));
  }
  auto [mine, table] = partition(state_share());
  nlohmann::json state = state_json(reason);
  state["partition"] = table;
  state["persist"] = ckpt::to_json(persist_target());
  if (!direct_persist) {
    auto started = flash->start_save(step, mine, std::move(state), persist, opt.persist_timeout_s);
    if (started.ok()) {
      if (started->waited_s > 0.1 && (++slow_storage_waits == 1 || slow_storage_waits % 100 == 0))
        spdlog::warn(
            "the checkpoint of step {} waited {:.2f} s for an in-memory slot: both were "
            "still being persisted, storage is slower than ckpt.persist_interval "
            "({} so far); raise it or use faster storage",
            step, started->waited_s, slow_storage_waits);
      pending_save = PendingSave{step, seconds_since(t0), started->waited_s, persist, reason};
      if (persist) pacer->requested(now);
      return overlap ? Status::Ok() : finish_checkpoint();
    }
    // /dev/shm too small: storage checkpoints are still possible, written directly.
    if (started.status().code() != StatusCode::kFailedPrecondition || opt.memory_interval > 0)
      return started.status();
    spdlog::warn("{}; writing checkpoints to storage directly instead (training waits for them)",
                 started.status().message());
    direct_persist = true;
    state = state_json(reason);
    state["partition"] = table;
  }
  if (!persist) return Status::Ok();
  auto p = ckpt::persist_part(persist_target(), step, mine, state);
  if (!p.ok()) return p.status();
  sum_over_ranks(0);  // every part (and so the commit) is done when this returns
  log->event("checkpoint_saved", {{"step", step},
                                  {"bytes", p->bytes},
                                  {"duration_ms", seconds_since(t0) * 1e3},
                                  {"storage", "disk"},
                                  {"persist", true},
                                  {"reason", reason}});
  return Status::Ok();
}

Status Trainer::Impl::finish_checkpoint() {
  if (!pending_save) return Status::Ok();
  PendingSave p = *pending_save;
  pending_save.reset();
  auto t0 = Clock::now();
  auto info = flash->finish();
  if (!info.ok())
    return info.status().WithContext("in-memory checkpoint of step " + std::to_string(p.step));
  log->event("checkpoint_saved", {{"step", p.step},
                                  {"bytes", info->bytes},
                                  {"duration_ms", (p.blocked_s + seconds_since(t0)) * 1e3},
                                  {"copy_ms", info->seconds * 1e3},
                                  {"waited_ms", p.waited_s * 1e3},
                                  {"storage", "memory"},
                                  {"persist", p.persist},
                                  {"reason", p.reason}});
  return Status::Ok();
}

Status Trainer::Impl::wait_persisted() {
  CAIRN_RETURN_IF_ERROR(finish_checkpoint());
  if (!direct_persist) CAIRN_RETURN_IF_ERROR(flash->wait_persisted(step, opt.persist_timeout_s));
  sum_over_ranks(0);  // every rank's part is durable, so the last of them has committed
  return Status::Ok();
}

std::vector<bool> Trainer::Impl::map_peer_slots(int64_t step,
                                                std::map<int, ckpt::ShmSnapshot>* local) {
  // Ranks on this machine: their slots can be mapped here, no broadcast needed. An owner is
  // skipped only when every rank can read it itself (agreed by one all-reduce).
  std::vector<bool> skip(size_t(world), false);
  if (world == 1) return skip;
  auto can = torch::zeros({world}, torch::kDouble);
  for (int o = 0; o < world; ++o) {
    if (o == rank) {
      can[o] = 1.0;
      continue;
    }
    if (!run.testing.read_peer_slots) continue;
    peer_slots.push_back(std::make_unique<FlashSlots>(run.run_dir, o));
    peer_slots.back()->ready_steps();
    auto snap = peer_slots.back()->view(step);
    if (snap.ok() && snap->state.value("world_size", -1) == world) {
      (*local)[o] = std::move(snap).value();
      can[o] = 1.0;
    }
  }
  group->allreduce(can);
  for (int o = 0; o < world; ++o) {
    skip[size_t(o)] = can[o].item<double>() == double(world);
    if (!skip[size_t(o)]) local->erase(o);
  }
  return skip;
}

namespace {

// A partition entry's tensor as held by its owner: a piece's extents, or the whole shape.
Result<std::pair<c10::ScalarType, std::vector<int64_t>>> held_shape(const nlohmann::json& e) {
  auto dtype = c10::ScalarType::Undefined;
  for (auto c : {torch::kFloat, torch::kDouble, torch::kBFloat16, torch::kHalf, torch::kLong,
                 torch::kInt, torch::kByte, torch::kChar, torch::kBool})
    if (e.at("dtype").get<std::string>() == c10::toString(c)) dtype = c;
  if (dtype == c10::ScalarType::Undefined)
    return Status::Corrupt("in-memory checkpoint: unknown dtype of '" +
                           e.at("name").get<std::string>() + "'");
  std::vector<int64_t> shape = e.at("shape").get<std::vector<int64_t>>();
  if (e.contains("slice")) {
    auto slice = e["slice"].get<std::vector<std::pair<int64_t, int64_t>>>();
    if (slice.size() != shape.size())
      return Status::Corrupt("in-memory checkpoint: the slice of '" +
                             e.at("key").get<std::string>() + "' does not match its shape");
    for (size_t d = 0; d < shape.size(); ++d) {
      if (slice[d].first < 0 || slice[d].second > shape[d] || slice[d].first > slice[d].second)
        return Status::Corrupt("in-memory checkpoint: the slice of '" +
                               e.at("key").get<std::string>() + "' is outside its shape");
      shape[d] = slice[d].second - slice[d].first;
    }
  }
  return std::make_pair(dtype, shape);
}

// Puts entry e's tensor `t` in `out`: whole, or into its slice of the whole tensor (created on
// first use); `covered` counts each whole tensor's elements written.
Status place(const nlohmann::json& e, const torch::Tensor& t,
             std::map<std::string, torch::Tensor>* out, std::map<std::string, int64_t>* covered) {
  const std::string name = e.at("name").get<std::string>();
  if (!e.contains("slice")) {
    (*out)[name] = t;
    (*covered)[name] += t.numel();
    return Status::Ok();
  }
  torch::Tensor& whole = (*out)[name];
  if (!whole.defined())
    whole = torch::empty(e.at("shape").get<std::vector<int64_t>>(), torch::dtype(t.scalar_type()));
  torch::Tensor dst = whole;
  auto slice = e["slice"].get<std::vector<std::pair<int64_t, int64_t>>>();
  for (size_t d = 0; d < slice.size(); ++d)
    dst = dst.slice(int64_t(d), slice[d].first, slice[d].second);
  if (!dst.sizes().equals(t.sizes()))
    return Status::Corrupt("in-memory checkpoint: the piece '" + e.at("key").get<std::string>() +
                           "' does not have its slice's shape");
  dst.copy_(t);
  (*covered)[name] += t.numel();
  return Status::Ok();
}

}  // namespace

Result<std::map<std::string, torch::Tensor>> Trainer::Impl::assemble(
    std::map<std::string, torch::Tensor> mine, const nlohmann::json& table, int64_t step) {
  std::map<std::string, torch::Tensor> out;
  std::map<std::string, int64_t> covered;
  std::map<int, ckpt::ShmSnapshot> local;
  const std::vector<bool> skip = map_peer_slots(step, &local);  // no broadcast for these owners
  auto key_of = [](const nlohmann::json& e) {
    return e.value("key", e.at("name").get<std::string>());
  };
  try {
    for (int owner = 0; owner < world; ++owner) {
      if (owner != rank && local.count(owner)) {
        auto& snap = local[owner];
        for (auto& e : table) {
          if (e.at("rank").get<int>() != owner) continue;
          auto it = snap.tensors.find(key_of(e));
          if (it == snap.tensors.end())
            return Status::Corrupt("in-memory checkpoint of rank " + std::to_string(owner) +
                                   " lacks '" + key_of(e) + "'");
          CAIRN_RETURN_IF_ERROR(place(e, it->second, &out, &covered));
        }
        continue;
      }
      std::vector<std::pair<const nlohmann::json*, torch::Tensor>> parts;
      int64_t bytes = 0;
      for (auto& e : table) {
        if (e.at("rank").get<int>() != owner) continue;
        CAIRN_ASSIGN_OR_RETURN(auto held, held_shape(e));
        torch::Tensor t;
        if (owner == rank) {
          auto it = mine.find(key_of(e));
          if (it == mine.end())
            return Status::Corrupt("in-memory checkpoint of rank " + std::to_string(rank) +
                                   " lacks '" + key_of(e) + "'");
          t = std::move(it->second);
          if (t.scalar_type() != held.first || !t.sizes().equals(held.second))
            return Status::Corrupt("in-memory checkpoint of rank " + std::to_string(rank) + ": '" +
                                   key_of(e) + "' is not what its table says");
        } else {
          t = torch::empty(held.second, torch::dtype(held.first));
        }
        bytes += int64_t(t.nbytes());
        parts.emplace_back(&e, t);
      }
      if (world > 1 && bytes > 0 && !skip[size_t(owner)]) {
        auto flat = torch::empty({bytes}, torch::kByte);
        char* p = static_cast<char*>(flat.data_ptr());
        if (owner == rank)
          for (auto& [e, t] : parts) {
            std::memcpy(p, t.data_ptr(), t.nbytes());
            p += t.nbytes();
          }
        group->broadcast(flat, owner);
        p = static_cast<char*>(flat.data_ptr());
        for (auto& [e, t] : parts) {
          if (owner != rank) std::memcpy(t.data_ptr(), p, t.nbytes());
          p += t.nbytes();
        }
      }
      for (auto& [e, t] : parts) CAIRN_RETURN_IF_ERROR(place(*e, t, &out, &covered));
    }
  } catch (const nlohmann::json::exception& e) {
    return Status::Corrupt(std::string("in-memory checkpoint: malformed partition: ") + e.what());
  }
  for (auto& [name, t] : out)
    if (covered[name] != t.numel())
      return Status::Corrupt("in-memory checkpoint: the pieces of '" + name + "' cover " +
                             std::to_string(covered[name]) + " of its " +
                             std::to_string(t.numel()) + " elements");
  return out;
}

Status Trainer::Impl::restore(const ckpt::LoadedCheckpoint& c) {
  auto yaml = c.state.value("config_yaml", std::string());
  auto saved = core::load_config_text(yaml, job_spec(), {}, c.path + " config");
  if (!saved.ok()) return saved.status();
  for (auto& [key, value] : config.values())
    if (key.rfind("model.", 0) == 0 && saved->values().at(key) != value)
      return Status::InvalidArgument("cannot resume from " + c.path + ": " + key + " is " +
                                     saved->values().at(key) + " there but " + value +
                                     " in this config");
  for (const char* key : {"train.global_batch_size", "train.seq_len", "train.seed"})
    if (saved->values().at(key) != config.values().at(key))
      return Status::InvalidArgument(std::string("cannot resume from ") + c.path + ": " + key +
                                     " differs (" + saved->values().at(key) + " vs " +
                                     config.values().at(key) + "); the sample order would change");
  if (!c.tensors.count(kRngName)) return Status::InvalidArgument(c.path + ": RNG state is missing");
  CAIRN_RETURN_IF_ERROR(
      engine
          ->load(c.tensors, kModelPrefix, kOptimPrefix, c.state.value("optimizer_step", int64_t(0)))
          .WithContext(c.path));
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  gen.set_state(c.tensors.at(kRngName));
  step = c.step;
  restored_shards = c.state.value("shards", nlohmann::json());
  restored = true;
  return Status::Ok();
}

void Trainer::Impl::release_slots(const char* reason) {
  if (flash) flash->stop_preparing();  // nothing is created after the slots are removed
  if (persister && flash && !run.keep_slots) {
    auto saved = persister->persist_unsaved(reason);
    if (!saved.ok()) {
      persister.reset();
      spdlog::error(
          "the in-memory checkpoint could not be persisted ({}); its slots stay in "
          "/dev/shm: continue with --resume, or `cairn ckpt gc` persists them",
          saved.status().ToString());
      return;
    }
    if (!saved->is_null()) {
      spdlog::info("persisted the in-memory checkpoint of step {} before removing it",
                   saved->value("step", int64_t(-1)));
      nlohmann::json fields = *saved;
      fields["reason"] = reason;
      if (log) log->event("checkpoint_persisted", fields);
    }
  }
  persister.reset();
  if (flash && !run.keep_slots) elastic::unlink_flash_slots(run.run_dir, {rank});
}

Result<bool> Trainer::Impl::restore_from_memory() {
  auto t0 = std::chrono::steady_clock::now();
  constexpr int kSlots = elastic::kFlashSlotsPerRank;
  const auto mine = flash->ready_steps();
  auto all = torch::empty({kSlots}, torch::kDouble);
  for (int i = 0; i < kSlots; ++i) all[i] = double(mine[size_t(i)]);
  if (group) {
    auto gathered = torch::empty({kSlots * world}, torch::kDouble);
    group->allgather(gathered, all);
    all = gathered;
  }
  const double* v = all.data_ptr<double>();
  int64_t common = -1;  // the newest step every rank holds complete
  for (int64_t i = 0; i < all.numel(); ++i) {
    if (v[i] < 0 || int64_t(v[i]) <= common) continue;
    bool everywhere = true;
    for (int r = 0; r < world && everywhere; ++r)
      everywhere = std::find(v + kSlots * r, v + kSlots * (r + 1), v[i]) != v + kSlots * (r + 1);
    if (everywhere) common = int64_t(v[i]);
  }
  const int64_t on_storage = ckpt::newest_complete_step(ckpt_dir);
  if (common < 0 || common < on_storage) {
    if (common >= 0)
      spdlog::info("in-memory checkpoint (step {}) not used: storage holds step {}", common,
                   on_storage);
    return false;
  }
  auto snap = flash->view(common);  // no copy: restore() copies straight into the model
  if (!snap.ok()) return snap.status().WithContext("in-memory checkpoint");
  if (snap->state.value("world_size", -1) != world || !snap->state.contains("partition")) {
    spdlog::info("in-memory checkpoint (step {}) not used: saved at another world size", common);
    return false;
  }
  ckpt::LoadedCheckpoint c;
  c.path = "shared memory";
  c.step = snap->step;
  CAIRN_ASSIGN_OR_RETURN(c.tensors,
                         assemble(std::move(snap->tensors), snap->state["partition"], common));
  c.state = std::move(snap->state);
  for (auto& [name, t] : c.tensors) c.bytes += int64_t(t.nbytes());
  const double located_ms =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e3;
  Status restored = restore(c);
  restored_from_memory = restored.ok();
  c.tensors.clear();
  peer_slots.clear();  // the views into other ranks' slots are copied by now
  CAIRN_RETURN_IF_ERROR(restored);
  double ms = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e3;
  log->event("checkpoint_loaded",
             {{"step", c.step}, {"bytes", c.bytes}, {"duration_ms", ms}, {"source", "memory"}});
  spdlog::info(
      "resumed from shared memory (step {}) in {:.0f} ms ({:.0f} ms to find, map and "
      "assemble it)",
      c.step, ms, located_ms);
  return true;
}

}  // namespace cairn::train
