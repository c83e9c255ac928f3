// Model profile (profile.h: profile_model).
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <set>
#include <stdexcept>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "cairn/comm/group.h"
#include "cairn/core/blas_threads.h"
#include "cairn/core/block_cache.h"
#include "cairn/core/fs.h"
#include "cairn/core/malloc_tuning.h"
#include "cairn/core/proc.h"
#include "cairn/model/language_model.h"
#include "cairn/parallel/context_parallel.h"
#include "cairn/parallel/data_parallel.h"
#include "cairn/parallel/plan.h"
#include "cairn/parallel/tensor_parallel.h"
#include "cairn/planner/profile.h"
#include "planner/profile_impl.h"

namespace cairn::planner {
namespace {

using json = nlohmann::json;
using profiling::Clock;
using profiling::median;
using profiling::since;

struct Timed {
  double forward_s = 0, backward_s = 0, activation_bytes = 0, no_grad_s = 0;
};

// Whether every rank of `group` (null: this rank alone) says stop: the ranks of a tensor- or
// context-parallel group repeat together, their collectives paired.
bool all_stop(bool stop, comm::Group* group) {
  if (!group) return stop;
  auto t = torch::tensor({stop ? 1.0f : 0.0f});
  group->allreduce_max(t);
  return t.item<float>() > 0;
}

// One part's forward and backward at (batch, seq), repeated for about `seconds` (at least
// twice after one warm-up): the median of each; the head's forward without autograd besides.
// Activation bytes: the heap's growth over the forward (median). Under tensor or context
// parallelism over `group`, `m` holds this rank's slices or its hooks, and `seq` is the rank's
// share of each sequence.
Timed time_part(model::LanguageModel& m, const std::string& part, int64_t batch, int64_t seq,
                double seconds, comm::Group* group) {
  const int64_t C = m.config().n_embd, V = m.config().vocab_size;
  auto idx = torch::randint(V, {batch, seq}, torch::kLong);
  auto x = torch::randn({batch, seq, C});
  std::vector<double> fwd, bwd, act, no_grad;
  const auto start = Clock::now();
  for (int rep = 0; rep < 1000; ++rep) {
    if (all_stop(rep > 2 && since(start) > seconds, group)) break;
    m.zero_grad();
    auto in = x.detach().requires_grad_(part != "embedding");
    const int64_t heap = core::heap_bytes_in_use();
    auto t0 = Clock::now();
    torch::Tensor out;
    if (part == "embedding") {
      out = m.embed(idx).sum();
    } else if (part == "block") {
      out = m.layer(0, in);
    } else {
      out = m.head_loss(m.final_norm(in), idx);
    }
    const double f = since(t0);
    const double kept = double(core::heap_bytes_in_use() - heap);
    t0 = Clock::now();
    if (out.dim() == 0)
      out.backward();
    else
      out.backward(torch::ones_like(out));
    const double b = since(t0);
    double n = 0;
    if (part == "head") {
      torch::NoGradGuard off;
      t0 = Clock::now();
      m.head_loss(m.final_norm(in), idx);
      n = since(t0);
    }
    if (rep == 0) continue;  // warm-up
    fwd.push_back(f);
    bwd.push_back(b);
    act.push_back(kept);
    no_grad.push_back(n);
  }
  // The median of the repetitions: what a step pays. The fastest would be the one whose
  // collectives found every peer ready at once; under tensor or context parallelism that is
  // up to a third below the median on this machine (a block's forward: 7.3 ms fastest, 11.7
  // ms median at tp=2), and a training step pays the typical wait.
  return {median(fwd), median(bwd), median(act), median(no_grad)};
}

// Seconds per parameter of the trainer's optimizer step over `m`'s parameters (one process's
// DataParallel: the gradients' norm and clipping, AdamW, zeroing), the median of repetitions
// for about `seconds` (at least twice after one warm-up). Takes over the model's parameters.
double time_optimizer(model::LanguageModel& m, double seconds) {
  parallel::DataParallel::NamedParams params;
  int64_t n = 0;
  for (const auto& p : m.named_parameters()) {
    // A step's every parameter has a gradient: zeros where no part was timed before.
    if (!p.value().grad().defined()) p.value().mutable_grad() = torch::zeros_like(p.value());
    params.emplace_back(p.key(), p.value());
    n += p.value().numel();
  }
  parallel::DataParallel dp(
      std::move(params), [](const std::string&, const torch::Tensor&) { return true; }, nullptr,
      parallel::DataParallelOptions{});
  std::vector<double> times;
  const auto start = Clock::now();
  for (int rep = 0; rep < 1000; ++rep) {
    if (rep > 2 && since(start) > seconds) break;
    const auto t0 = Clock::now();
    dp.clip_grad_norm(1.0);
    dp.step(1e-4);
    dp.zero_grad();
    if (rep > 0) times.push_back(since(t0));
  }
  return median(times) / double(std::max<int64_t>(n, 1));
}

double num(const json& j, const std::string& where, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number())
    throw std::runtime_error(where + "." + key + ": missing or not a number");
  return it->get<double>();
}

// fit.<key>: bytes a profile measures, refused when missing (a profile from before `what` was
// measured) or negative.
double measured_bytes(const json& fit, const char* key, const std::string& what) {
  if (!fit.contains(key))
    throw std::runtime_error(std::string("fit.") + key + ": missing (a profile from before " +
                             what + " was measured: run cairn plan profile-model again)");
  const double bytes = num(fit, "fit", key);
  if (!(bytes >= 0)) throw std::runtime_error(std::string("fit.") + key + ": negative");
  return bytes;
}

}  // namespace

std::vector<ModelProfile::Point> median_of_rounds(
    const std::vector<std::vector<ModelProfile::Point>>& by_round) {
  std::vector<ModelProfile::Point> out = by_round.at(0);
  for (size_t i = 0; i < out.size(); ++i) {
    std::vector<double> fwd, bwd, act, no_grad;
    for (const auto& points : by_round) {
      no_grad.push_back(points.at(i).no_grad_s);
      fwd.push_back(points.at(i).forward_s);
      bwd.push_back(points.at(i).backward_s);
      act.push_back(points.at(i).activation_bytes);
    }
    out[i].forward_s = median(fwd);
    out[i].backward_s = median(bwd);
    out[i].activation_bytes = median(act);
    out[i].no_grad_s = median(no_grad);
  }
  return out;
}

PartTime ModelProfile::fit_part(const std::vector<std::array<double, 3>>& points) {
  // Non-negative least squares on the columns [1, tokens, tokens x T] (the last only when T
  // varies): every subset of the columns solved by the normal equations, the best fit whose
  // coefficients are all >= 0 kept (a negative time per token is noise, not a machine).
  bool t_varies = false;
  for (const auto& p : points) t_varies |= p[1] != points.front()[1];
  const int columns = t_varies ? 3 : 2;
  auto value = [](const std::array<double, 3>& p, int c) {
    return c == 0 ? 1.0 : c == 1 ? p[0] : p[0] * p[1];
  };
  PartTime best;
  double best_residual = -1;
  for (int mask = 1; mask < (1 << columns); ++mask) {
    std::vector<int> cols;
    for (int c = 0; c < columns; ++c)
      if (mask >> c & 1) cols.push_back(c);
    const int n = int(cols.size());
    double A[3][4] = {};
    for (const auto& p : points)
      for (int i = 0; i < n; ++i) {
        for (int j = 0; j < n; ++j)
          A[i][j] += value(p, cols[size_t(i)]) * value(p, cols[size_t(j)]);
        A[i][n] += value(p, cols[size_t(i)]) * p[2];
      }
    bool singular = false;
    for (int c = 0; c < n && !singular; ++c) {
      int pivot = c;
      for (int r = c + 1; r < n; ++r)
        if (std::abs(A[r][c]) > std::abs(A[pivot][c])) pivot = r;
      std::swap(A[c], A[pivot]);
      if (std::abs(A[c][c]) < 1e-300) {
        singular = true;
        break;
      }
      for (int r = 0; r < n; ++r) {
        if (r == c) continue;
        const double f = A[r][c] / A[c][c];
        for (int k = c; k <= n; ++k) A[r][k] -= f * A[c][k];
      }
    }
    if (singular) continue;
    double coef[3] = {0, 0, 0};
    bool negative = false;
    for (int i = 0; i < n; ++i) {
      coef[cols[size_t(i)]] = A[i][n] / A[i][i];
      negative |= coef[cols[size_t(i)]] < 0;
    }
    if (negative) continue;
    double residual = 0;
    for (const auto& p : points) {
      double e = p[2];
      for (int c = 0; c < columns; ++c) e -= coef[c] * value(p, c);
      residual += e * e;
    }
    if (best_residual < 0 || residual < best_residual * (1 - 1e-12)) {
      best_residual = residual;
      best = PartTime{coef[0], coef[1], coef[2]};
    }
  }
  return best;
}

namespace {

// How the parts of one profile pass are split: alone (tp = cp = 1), tensor-parallel over tp
// ranks, or context-parallel over cp ranks of one kind (ring or ulysses).
struct Split {
  int tp = 1, cp = 1;
  parallel::ContextParallelKind kind = parallel::ContextParallelKind::kNone;
  int degree() const { return tp * cp; }
};

// Every one of `parts` at every (B, T) on `ranks` threads at once, in groups of
// split.degree() ranks that run the parts tensor- or context-parallel (each rank alone when
// 1): the points of the slowest rank. With `optimizer`, each rank also times the optimizer
// step; the slowest is returned.
Result<std::vector<ModelProfile::Point>> time_ranks(const model::ModelConfig& one, int ranks,
                                                    const Split& split,
                                                    const std::vector<std::string>& parts,
                                                    const std::vector<int64_t>& batches,
                                                    const std::vector<int64_t>& seqs,
                                                    double seconds, double* optimizer) {
  const int g = split.degree();
  std::vector<std::vector<ModelProfile::Point>> per_rank(static_cast<size_t>(ranks));
  std::vector<double> opt(static_cast<size_t>(ranks), 0.0);
  std::vector<std::string> errors(static_cast<size_t>(ranks));
  std::vector<c10::intrusive_ptr<c10d::Store>> stores;
  for (int k = 0; k < ranks / g; ++k) stores.push_back(c10::make_intrusive<c10d::HashStore>());
  {
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r)
      threads.emplace_back([&, r] {
        try {
          torch::set_num_threads(1);
          auto m = model::build_model(one, 1234);
          std::unique_ptr<comm::Group> group;
          std::shared_ptr<model::ContextParallelHooks> hooks;
          if (g > 1)
            group = comm::Group::Create(stores[size_t(r / g)], r % g, g, comm::GroupOptions{});
          if (split.tp > 1)
            parallel::shard_for_tensor_parallel(*m, group.get(), /*sequence_parallel=*/false);
          if (split.cp > 1) {
            const bool ring = split.kind == parallel::ContextParallelKind::kRing;
            hooks = parallel::make_context_parallel_hooks(ring ? nullptr : group.get(),
                                                          ring ? group.get() : nullptr);
            m->set_context_parallel(hooks);
          }
          for (const std::string& part : parts)
            for (int64_t T : seqs)
              for (int64_t B : batches) {
                const Timed t = time_part(*m, part, B, T / split.cp, seconds, group.get());
                ModelProfile::Point pt{part,
                                       B,
                                       T,
                                       t.forward_s,
                                       t.backward_s,
                                       t.activation_bytes,
                                       t.no_grad_s,
                                       split.tp,
                                       split.cp,
                                       split.cp > 1 ? parallel::cp_kind_name(split.kind) : ""};
                per_rank[size_t(r)].push_back(pt);
              }
          if (optimizer) opt[size_t(r)] = time_optimizer(*m, seconds);
        } catch (const std::exception& e) {
          errors[size_t(r)] = e.what();
        }
      });
    for (auto& t : threads) t.join();
  }
  for (const std::string& e : errors)
    if (!e.empty()) return Status::Internal("profile-model: " + e);
  // The slowest rank's time at each point (a step waits for the slowest); rank 0's memory
  // (the heap is the process's: the ranks' allocations overlap, so the least is the closest).
  std::vector<ModelProfile::Point> points;
  for (size_t i = 0; i < per_rank[0].size(); ++i) {
    ModelProfile::Point pt = per_rank[0][i];
    for (const auto& rank : per_rank) {  // every rank measured the same points in order
      pt.forward_s = std::max(pt.forward_s, rank[i].forward_s);
      pt.backward_s = std::max(pt.backward_s, rank[i].backward_s);
      pt.no_grad_s = std::max(pt.no_grad_s, rank[i].no_grad_s);
      pt.activation_bytes = std::min(pt.activation_bytes, rank[i].activation_bytes);
    }
    points.push_back(pt);
  }
  if (optimizer) *optimizer = *std::max_element(opt.begin(), opt.end());
  return points;
}

// The seven fits of one split's points, in the tokens a rank holds (B T / cp) and the whole
// sequence's length T.
MeasuredParts fit_parts(const std::vector<ModelProfile::Point>& points, int tp, int cp,
                        const std::string& cp_kind) {
  enum Phases { kBoth, kForward, kNoGrad };
  auto fit = [&](const std::string& part, Phases phases) {
    // Only a block attends: the embedding's and the head's times do not grow with the
    // sequence beyond its tokens (fitted with one T, no position term).
    std::vector<std::array<double, 3>> pts;
    for (const auto& pt : points)
      if (pt.part == part && pt.tp == tp && pt.cp == cp && pt.cp_kind == cp_kind)
        pts.push_back({double(pt.batch * pt.seq / pt.cp), part == "block" ? double(pt.seq) : 0.0,
                       phases == kNoGrad
                           ? pt.no_grad_s
                           : pt.forward_s + (phases == kForward ? 0 : pt.backward_s)});
    return ModelProfile::fit_part(pts);
  };
  MeasuredParts f;
  f.embedding = fit("embedding", kBoth);
  f.block = fit("block", kBoth);
  f.block_forward = fit("block", kForward);
  f.head = fit("head", kBoth);
  f.embedding_forward = fit("embedding", kForward);
  f.head_forward = fit("head", kForward);
  f.head_no_grad = fit("head", kNoGrad);
  return f;
}

// The fits of every split `p`'s points hold: alone, each tp degree, each cp kind and degree.
void fit_every_split(ModelProfile* p) {
  std::set<int> tps;
  std::set<std::pair<std::string, int>> cps;
  for (const auto& pt : p->points) {
    if (pt.tp > 1) tps.insert(pt.tp);
    if (pt.cp > 1) cps.insert({pt.cp_kind, pt.cp});
  }
  static_cast<MeasuredParts&>(p->fit) = fit_parts(p->points, 1, 1, "");
  for (int t : tps) p->fit.tensor_parallel[t] = fit_parts(p->points, t, 1, "");
  for (const auto& [kind, c] : cps)
    p->fit.context_parallel[kind + std::to_string(c)] = fit_parts(p->points, 1, c, kind);
}

}  // namespace

std::vector<int> profiled_tp_degrees(const model::ModelConfig& config, int ranks) {
  std::vector<int> out;
  for (int t = 2; t <= ranks; ++t)
    if (ranks % t == 0 && parallel::tp_unfit(config, t).empty()) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, int>> profiled_cp_splits(const model::ModelConfig& config,
                                                            int ranks,
                                                            const std::vector<int64_t>& seqs) {
  std::vector<std::pair<std::string, int>> out;
  for (int c = 2; c <= ranks; ++c) {
    if (ranks % c != 0) continue;
    bool ring = true, ulysses = parallel::ulysses_unfit(config, 1, c).empty();
    for (int64_t T : seqs) {
      parallel::ContextSplit r, u;
      r.ring = c;
      u.ulysses = c;
      ring &= parallel::context_unfit(T, r).empty();
      ulysses &= parallel::context_unfit(T, u).empty();
    }
    if (ring) out.emplace_back("ring", c);
    if (ulysses) out.emplace_back("ulysses", c);
  }
  return out;
}

Result<ModelProfile> profile_model(const model::ModelConfig& config, int ranks,
                                   const std::vector<int64_t>& batches,
                                   const std::vector<int64_t>& seqs, double seconds, int rounds) {
  if (ranks < 1) return Status::InvalidArgument("profile-model: --ranks must be at least 1");
  if (rounds < 1) return Status::InvalidArgument("profile-model: --rounds must be at least 1");
  if (batches.empty() || seqs.empty())
    return Status::InvalidArgument("profile-model: no micro-batch sizes or sequence lengths");
  for (int64_t T : seqs)
    if (T < 1 || T > config.block_size)
      return Status::InvalidArgument("profile-model: sequence length " + std::to_string(T) +
                                     " is outside [1, model.block_size " +
                                     std::to_string(config.block_size) + "]");
  std::set<int64_t> token_counts;
  for (int64_t B : batches)
    for (int64_t T : seqs) token_counts.insert(B * T);
  if (token_counts.size() < 2)
    return Status::InvalidArgument("profile-model: needs at least two micro-batch token counts");
  // One block stands for all: the embedding, block 0, the final norm and the head.
  model::ModelConfig one = config;
  one.n_layer = 1;
  CAIRN_RETURN_IF_ERROR(model::validate(one));
  ModelProfile p;
  p.ranks = ranks;
  p.rounds = rounds;
  const int64_t code_before = core::file_resident_bytes();
  const int64_t heap_before = core::heap_size_bytes();
  const int blas_before = core::blas_num_threads();
  core::set_blas_num_threads(1);  // one core per rank, as the workers run
  // Each part alone sets a peak far below a step's: kept blocks up to twice it, as a step
  // keeps the part's blocks (core::BlockCache::set_hold_to_peak).
  core::process_block_cache().set_hold_to_peak(false);
  double optimizer = 0;
  std::vector<Split> splits = {Split{}};
  const std::vector<int> tps = profiled_tp_degrees(config, ranks);
  for (int t : tps) splits.push_back(Split{t, 1, parallel::ContextParallelKind::kNone});
  const auto cps = profiled_cp_splits(config, ranks, seqs);
  for (const auto& [kind, c] : cps) splits.push_back(Split{1, c, *parallel::parse_cp_kind(kind)});
  // Every part in turn, `rounds` times, and each part under every split, its points about
  // seconds / rounds each; a point's times are the median of its rounds'. A shared machine
  // slows down for minutes at a time: taken split after split, such a while moved one split's
  // times alone (a tp=2 block measured 39 and 56 ms in two profiles of one hour, the block
  // alone 41 and 46; in one merged LLaMA profile the block alone took 56 us a token where
  // others measured 34, context parallelism as usual, and the planner chose cp=2 over dp=2,
  // 6.3% slower). Each part under every split in turn, the splits the planner compares are
  // measured seconds apart, and a slow while slows them alike; across rounds the median drops
  // it. (Every point under every split in turn cost a third more time: each split's models
  // are built again for each call.)
  Status status = Status::Ok();
  std::vector<std::vector<ModelProfile::Point>> by_round(static_cast<size_t>(rounds));
  std::vector<double> optimizers;
  for (int round = 0; round < rounds && status.ok(); ++round) {
    auto& points = by_round[static_cast<size_t>(round)];
    for (const char* part : {"embedding", "block", "head"})
      for (const Split& split : splits) {
        if (!status.ok()) break;
        auto pts = time_ranks(one, ranks, split, {part}, batches, seqs, seconds / rounds, nullptr);
        status = pts.status();
        if (status.ok()) points.insert(points.end(), pts->begin(), pts->end());
      }
    if (!status.ok()) break;
    double opt = 0;  // the optimizer step: each rank alone, no point
    status = time_ranks(one, ranks, Split{}, {}, {}, {}, seconds / rounds, &opt).status();
    optimizers.push_back(opt);
  }
  core::set_blas_num_threads(blas_before);
  core::process_block_cache().set_hold_to_peak(true);
  CAIRN_RETURN_IF_ERROR(status);
  p.points = median_of_rounds(by_round);
  optimizer = median(optimizers);
  p.fit.code_bytes = double(std::max<int64_t>(0, core::file_resident_bytes() - code_before));
  p.fit.heap_bytes = double(std::max<int64_t>(0, core::heap_size_bytes() - heap_before));
  fit_every_split(&p);  // the splits timed: each has its points
  p.fit.optimizer_per_param = optimizer;
  return p;
}

namespace {

json part_json(const PartTime& t) {
  return {{"fixed_s", t.fixed}, {"per_token_s", t.per_token}, {"per_token_pos_s", t.per_token_pos}};
}

json model_json(const model::ModelConfig& m) {
  return {{"arch", m.arch},
          {"n_layer", m.n_layer},
          {"n_head", m.n_head},
          {"n_kv_head", m.n_kv_head},
          {"n_embd", m.n_embd},
          {"vocab_size", m.vocab_size},
          {"block_size", m.block_size}};
}

}  // namespace

json model_profile_to_json(const ModelProfile& p, const model::ModelConfig& m) {
  const std::string measured =
      std::to_string(p.ranks) + " ranks as threads of one process, one thread each, all at once";
  json points = json::array();
  for (const auto& pt : p.points)
    points.push_back({{"part", pt.part},
                      {"batch", pt.batch},
                      {"seq", pt.seq},
                      {"forward_us", pt.forward_s * 1e6},
                      {"backward_us", pt.backward_s * 1e6},
                      {"activation_bytes", pt.activation_bytes},
                      {"no_grad_us", pt.no_grad_s * 1e6},
                      {"tp", pt.tp},
                      {"cp", pt.cp},
                      {"cp_kind", pt.cp_kind}});
  auto parts = [](const MeasuredParts& f) -> json {
    return {{"embedding", part_json(f.embedding)},
            {"block", part_json(f.block)},
            {"block_forward", part_json(f.block_forward)},
            {"head", part_json(f.head)},
            {"embedding_forward", part_json(f.embedding_forward)},
            {"head_forward", part_json(f.head_forward)},
            {"head_no_grad", part_json(f.head_no_grad)}};
  };
  json tensor_parallel = json::object(), context_parallel = json::object();
  for (const auto& [t, f] : p.fit.tensor_parallel) tensor_parallel[std::to_string(t)] = parts(f);
  for (const auto& [k, f] : p.fit.context_parallel) context_parallel[k] = parts(f);
  return {{"model", model_json(m)},
          {"ranks", p.ranks},
          {"statistic", "median"},  // of the repetitions, per point (of its rounds' medians)
          {"rounds", p.rounds},
          {"source", p.merged > 1
                         ? "merged by cairn plan profile-model --merge from " +
                               std::to_string(p.merged) +
                               " profiles (each point the median of theirs), each of " + measured
                         : "measured by cairn plan profile-model: " + measured},
          {"merged", p.merged},
          {"fit",
           {{"embedding", part_json(p.fit.embedding)},
            {"block", part_json(p.fit.block)},
            {"block_forward", part_json(p.fit.block_forward)},
            {"head", part_json(p.fit.head)},
            {"embedding_forward", part_json(p.fit.embedding_forward)},
            {"head_forward", part_json(p.fit.head_forward)},
            {"head_no_grad", part_json(p.fit.head_no_grad)},
            {"optimizer", {{"per_param_s", p.fit.optimizer_per_param}}},
            {"code_bytes", p.fit.code_bytes},
            {"heap_bytes", p.fit.heap_bytes},
            {"tensor_parallel", tensor_parallel},
            {"context_parallel", context_parallel}}},
          {"points", points}};
}

Result<MeasuredModel> load_model_profile(const std::string& path, const model::ModelConfig& m) {
  CAIRN_ASSIGN_OR_RETURN(std::string text, core::read_file(path));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return Status::InvalidArgument(path + ": not a JSON object");
  try {
    const json want = model_json(m);
    const json& got = j.at("model");
    for (auto it = want.begin(); it != want.end(); ++it) {
      if (it.key() == "n_layer") continue;  // the parts are per block: any depth
      if (!got.contains(it.key()) || got.at(it.key()) != it.value())
        return Status::InvalidArgument(
            path + ": a profile of another model (model." + it.key() + " " +
            (got.contains(it.key()) ? got.at(it.key()).dump() : std::string("missing")) +
            ", the job's " + it.value().dump() + ")");
    }
    MeasuredModel mm;
    const json& fit = j.at("fit");
    auto parts = [&](const json& f, const std::string& where, MeasuredParts* out) {
      auto part = [&](const char* name, PartTime* t) {
        const std::string at = where + "." + name;
        if (!f.contains(name))
          throw std::runtime_error(at + ": missing (a profile from before " +
                                   (std::string(name) == "head_no_grad"
                                        ? "the head's forward without autograd was timed"
                                        : "this part was timed") +
                                   ": run cairn plan profile-model again)");
        const json& x = f.at(name);
        t->fixed = num(x, at, "fixed_s");
        t->per_token = num(x, at, "per_token_s");
        t->per_token_pos = num(x, at, "per_token_pos_s");
        if (!(t->fixed >= 0 && t->per_token >= 0 && t->per_token_pos >= 0))
          throw std::runtime_error(at + ": negative time");
      };
      part("embedding", &out->embedding);
      part("block", &out->block);
      part("block_forward", &out->block_forward);
      part("head", &out->head);
      part("embedding_forward", &out->embedding_forward);
      part("head_forward", &out->head_forward);
      part("head_no_grad", &out->head_no_grad);
    };
    parts(fit, "fit", &mm);
    if (fit.contains("tensor_parallel")) {
      const json& tps = fit.at("tensor_parallel");
      if (!tps.is_object()) throw std::runtime_error("fit.tensor_parallel: not an object");
      for (auto it = tps.begin(); it != tps.end(); ++it) {
        int t = 0;
        const std::string& key = it.key();
        if (key.empty() || key.size() > 4 ||
            key.find_first_not_of("0123456789") != std::string::npos || (t = std::stoi(key)) < 2)
          throw std::runtime_error("fit.tensor_parallel: key \"" + key +
                                   "\" is not a tp degree of at least 2");
        if (!it->is_object())
          throw std::runtime_error("fit.tensor_parallel." + key + ": not an object");
        parts(*it, "fit.tensor_parallel." + key, &mm.tensor_parallel[t]);
      }
    }
    if (fit.contains("context_parallel")) {
      const json& cps = fit.at("context_parallel");
      if (!cps.is_object()) throw std::runtime_error("fit.context_parallel: not an object");
      for (auto it = cps.begin(); it != cps.end(); ++it) {
        const std::string& key = it.key();
        const size_t digits = key.find_first_of("0123456789");
        const std::string kind = key.substr(0, digits);
        if ((kind != "ring" && kind != "ulysses") || digits == std::string::npos ||
            key.size() - digits > 4 ||
            key.find_first_not_of("0123456789", digits) != std::string::npos ||
            std::stoi(key.substr(digits)) < 2)
          throw std::runtime_error("fit.context_parallel: key \"" + key +
                                   "\" is not ring or ulysses and a degree of at least 2");
        if (!it->is_object())
          throw std::runtime_error("fit.context_parallel." + key + ": not an object");
        parts(*it, "fit.context_parallel." + key, &mm.context_parallel[key]);
      }
    }
    if (j.value("statistic", std::string()) != "median")
      throw std::runtime_error(
          "statistic: not \"median\" (a profile of the fastest repetitions, which "
          "under-predicts a step: run cairn plan profile-model again)");
    if (!fit.contains("optimizer"))
      throw std::runtime_error(
          "fit.optimizer: missing (a profile from before optimizer steps were timed: run cairn "
          "plan profile-model again)");
    mm.optimizer_per_param = num(fit.at("optimizer"), "fit.optimizer", "per_param_s");
    if (!(mm.optimizer_per_param >= 0)) throw std::runtime_error("fit.optimizer: negative time");
    mm.code_bytes = measured_bytes(fit, "code_bytes", "the code its kernels page in");
    mm.heap_bytes = measured_bytes(fit, "heap_bytes", "the heap its small allocations grow");
    return mm;
  } catch (const std::exception& e) {
    return Status::InvalidArgument(path + ": " + e.what());
  }
}

namespace {

// A point's part, shape and split: what two profiles' points must agree on to be merged.
std::string point_name(const ModelProfile::Point& p) {
  return p.part + " at micro-batch " + std::to_string(p.batch) + " x seq " + std::to_string(p.seq) +
         ", tp " + std::to_string(p.tp) + ", cp " + (p.cp > 1 ? p.cp_kind : "") +
         std::to_string(p.cp);
}

ModelProfile::Point point_from_json(const json& x, const std::string& where) {
  if (!x.is_object()) throw std::runtime_error(where + ": not an object");
  auto text = [&](const char* key) {
    auto it = x.find(key);
    if (it == x.end() || !it->is_string())
      throw std::runtime_error(where + "." + key + ": missing or not a string");
    return it->get<std::string>();
  };
  auto count = [&](const char* key) {
    const double v = num(x, where, key);
    if (!(v >= 1 && v <= 1e9 && v == std::floor(v)))
      throw std::runtime_error(where + "." + key + ": not a whole number of at least 1");
    return int64_t(v);
  };
  auto seconds = [&](const char* key) {
    const double us = num(x, where, key);
    if (!(us >= 0 && std::isfinite(us)))
      throw std::runtime_error(where + "." + key + ": negative or not finite");
    return us / 1e6;
  };
  ModelProfile::Point p;
  p.part = text("part");
  if (p.part != "embedding" && p.part != "block" && p.part != "head")
    throw std::runtime_error(where + ".part: \"" + p.part + "\" is not embedding, block or head");
  p.batch = count("batch");
  p.seq = count("seq");
  p.tp = int(count("tp"));
  p.cp = int(count("cp"));
  p.cp_kind = text("cp_kind");
  const bool kind = p.cp_kind == "ring" || p.cp_kind == "ulysses";
  if (p.cp > 1 ? !kind : !p.cp_kind.empty())
    throw std::runtime_error(where + ".cp_kind: \"" + p.cp_kind + "\" at cp " +
                             std::to_string(p.cp) + " (ring or ulysses above 1, else empty)");
  p.forward_s = seconds("forward_us");
  p.backward_s = seconds("backward_us");
  p.no_grad_s = seconds("no_grad_us");
  p.activation_bytes = num(x, where, "activation_bytes");  // the heap's growth: may be < 0
  if (!std::isfinite(p.activation_bytes))
    throw std::runtime_error(where + ".activation_bytes: not finite");
  return p;
}

}  // namespace

Result<ModelProfile> merge_model_profiles(const std::vector<std::string>& paths,
                                          const model::ModelConfig& m) {
  if (paths.size() < 2)
    return Status::InvalidArgument("profile-model --merge: needs at least two profiles, got " +
                                   std::to_string(paths.size()));
  ModelProfile out;
  out.rounds = 0;
  out.merged = int(paths.size());
  std::vector<std::vector<ModelProfile::Point>> by_profile;
  std::vector<double> optimizers;
  for (const std::string& path : paths) {
    // The whole file checked as the planner loads it: the model, the fits, their format.
    CAIRN_ASSIGN_OR_RETURN(MeasuredModel fit, load_model_profile(path, m));
    CAIRN_ASSIGN_OR_RETURN(std::string text, core::read_file(path));
    const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    try {
      const double ranks = num(j, "profile", "ranks"), rounds = num(j, "profile", "rounds");
      if (!(ranks >= 1 && ranks <= 1024 && ranks == std::floor(ranks)))
        throw std::runtime_error("ranks: not a whole number in [1, 1024]");
      if (!(rounds >= 1 && rounds <= 1e6 && rounds == std::floor(rounds)))
        throw std::runtime_error("rounds: not a whole number of at least 1");
      const auto pts = j.find("points");
      if (pts == j.end() || !pts->is_array() || pts->empty())
        throw std::runtime_error("points: missing or empty (the measurements a merge takes)");
      std::vector<ModelProfile::Point> points;
      for (size_t i = 0; i < pts->size(); ++i)
        points.push_back(point_from_json((*pts)[i], "points[" + std::to_string(i) + "]"));
      std::sort(points.begin(), points.end(),
                [](const auto& a, const auto& b) { return point_name(a) < point_name(b); });
      for (size_t i = 1; i < points.size(); ++i)
        if (point_name(points[i]) == point_name(points[i - 1]))
          throw std::runtime_error("points: " + point_name(points[i]) + " twice");
      if (by_profile.empty()) {
        out.ranks = int(ranks);
      } else {
        if (int(ranks) != out.ranks)
          throw std::runtime_error("a profile of " + std::to_string(int(ranks)) + " ranks, " +
                                   paths[0] + "'s of " + std::to_string(out.ranks) +
                                   ": merge profiles of one world");
        const auto& first = by_profile[0];
        for (size_t i = 0; i < std::max(first.size(), points.size()); ++i) {
          if (i < first.size() && i < points.size() &&
              point_name(first[i]) == point_name(points[i]))
            continue;
          const bool missing = i < first.size() &&
                               (i >= points.size() || point_name(first[i]) < point_name(points[i]));
          throw std::runtime_error(
              (missing ? "no point " + point_name(first[i]) + ", which " + paths[0] + " has"
                       : "a point " + point_name(points[i]) + ", which " + paths[0] + " has not") +
              " (merge profiles taken with the same --ranks, --batch and --seq)");
        }
      }
      by_profile.push_back(std::move(points));
      out.rounds += int(rounds);
    } catch (const std::exception& e) {
      return Status::InvalidArgument(path + ": " + e.what());
    }
    optimizers.push_back(fit.optimizer_per_param);
    // A worker holds the most any profile saw.
    out.fit.code_bytes = std::max(out.fit.code_bytes, fit.code_bytes);
    out.fit.heap_bytes = std::max(out.fit.heap_bytes, fit.heap_bytes);
  }
  out.points = median_of_rounds(by_profile);
  fit_every_split(&out);
  out.fit.optimizer_per_param = median(optimizers);
  return out;
}

}  // namespace cairn::planner
