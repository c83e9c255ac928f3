// The search over layouts (planner.h).
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "cairn/parallel/pipeline_schedule.h"
#include "cairn/planner/planner.h"
#include "planner/cost_model_impl.h"

namespace cairn::planner {
namespace {

using parallel::ContextParallelKind;
using parallel::PipelineSchedule;

std::vector<int> divisors(int64_t n) {
  std::vector<int> out;
  for (int64_t d = 1; d <= n; ++d)
    if (n % d == 0) out.push_back(int(d));
  return out;
}

// The Plan of a layout with `ckpt[s]` checkpointed blocks on pp rank s (its first ones).
parallel::Plan to_plan(ModelShape& shape, const Layout& l, const std::vector<int>& ckpt) {
  const int64_t L = shape.workload().model.n_layer;
  parallel::Plan p = parallel::Plan::data_parallel(l.dp, L, l.zero);
  p.mesh = comm::MeshShape{l.pp, l.dp, l.cp, l.tp};
  for (parallel::LayerPlan& b : p.layers) {
    b.tp = l.tp;
    b.sequence_parallel = l.sp;
    b.cp_kind = l.cp > 1 ? l.cp_kind : ContextParallelKind::kNone;
  }
  if (l.pp > 1) {
    p.pipeline.cuts = shape.cuts(l.pp * l.v);
    p.pipeline.schedule = l.schedule;
    p.pipeline.virtual_stages = l.v;
  }
  const std::vector<int64_t>& cuts = p.pipeline.cuts;
  std::vector<int> left = ckpt;
  for (int64_t b = 0; b < L; ++b) {
    const int vs = int(std::upper_bound(cuts.begin(), cuts.end(), b) - cuts.begin());
    int& n = left[size_t(vs % l.pp)];
    if (n > 0) {
      p.layers[size_t(b)].checkpoint = true;
      --n;
    }
  }
  return p;
}

// The least predicted step time of [begin, end).
double best_step(const std::vector<Planned>& v, std::vector<Planned>::const_iterator end) {
  double t = v.front().cost.step_s();
  for (auto it = v.begin(); it != end; ++it) t = std::min(t, it->cost.step_s());
  return t;
}

}  // namespace

Result<SearchResult> search(const Workload& w, const Cluster& cluster,
                            const SearchOptions& options) {
  const int world = options.world > 0 ? options.world : cluster.devices();
  const double budget = options.memory_bytes > 0 ? options.memory_bytes : cluster.memory_bytes;
  const model::ModelConfig& mc = w.model;
  if (world > cluster.devices())
    return Status::InvalidArgument("planner: " + std::to_string(world) + " devices asked of " +
                                   cluster.name + ", which has " +
                                   std::to_string(cluster.devices()));
  if (w.seq_len < 1 || w.global_batch < 1)
    return Status::InvalidArgument("planner: the sequence length and global batch must be >= 1");
  ModelShape shape(w);
  SearchResult result;
  double least_memory = -1;
  std::vector<Planned> best;
  // With a preference for simpler layouts, more candidates are kept to choose among.
  const size_t top = size_t(std::max(options.prefer_simpler > 0 ? 256 : 1, options.top));

  auto consider = [&](const Layout& l) {
    std::vector<int> ckpt;
    Cost k = estimate_layout(shape, cluster, l, &ckpt, budget);
    ++result.evaluated;
    if (k.memory_bytes() > budget) {
      ++result.over_memory;
      if (least_memory < 0 || k.memory_bytes() < least_memory) least_memory = k.memory_bytes();
      return;
    }
    if (best.size() == top && k.step_s() > best.back().cost.step_s() * (1 + 1e-9)) return;
    Candidate c{to_plan(shape, l, ckpt), l.micro_batch};
    if (!c.plan.validate(mc, world).ok()) return;  // a combination the search let through
    best.push_back({std::move(c), k});
    // Of layouts as fast (to 1e-9), the larger micro-batch (fewer, larger kernels), then the
    // one that needs less memory.
    std::stable_sort(best.begin(), best.end(), [](const Planned& a, const Planned& b) {
      const double ta = a.cost.step_s(), tb = b.cost.step_s();
      if (std::abs(ta - tb) > 1e-9 * std::max(ta, tb)) return ta < tb;
      if (a.candidate.micro_batch != b.candidate.micro_batch)
        return a.candidate.micro_batch > b.candidate.micro_batch;
      return a.cost.memory_bytes() < b.cost.memory_bytes();
    });
    if (best.size() > top) best.pop_back();
  };

  for (int tp : parallel::tp_that_fit(mc, world)) {
    // A tensor-parallel group stays within a node (its collectives are on every block's path).
    if (world % tp || cluster.devices_per_node % tp) continue;
    for (int cp : divisors(world / tp)) {
      std::vector<ContextParallelKind> kinds;
      if (cp == 1) {
        kinds = {ContextParallelKind::kNone};
      } else {
        if (w.seq_len % (2 * cp) == 0) kinds.push_back(ContextParallelKind::kRing);
        if (w.seq_len % cp == 0 && parallel::ulysses_unfit(mc, tp, cp).empty())
          kinds.push_back(ContextParallelKind::kUlysses);
      }
      for (int pp : divisors(world / (int64_t(tp) * cp))) {
        if (pp > mc.n_layer + 2) continue;
        const int dp = world / (tp * cp * pp);
        if (w.global_batch % dp) continue;
        for (int mb : divisors(w.global_batch / dp)) {
          if (mb > options.max_micro_batch) break;
          if (options.micro_batch > 0 && mb != options.micro_batch) continue;
          const int m = int(w.global_batch / dp / mb);
          std::vector<std::pair<PipelineSchedule, int>> schedules = {
              {PipelineSchedule::kOneFOneB, 1}};
          if (pp > 1) {
            schedules.push_back({PipelineSchedule::kGPipe, 1});
            schedules.push_back({PipelineSchedule::kZeroBubbleH1, 1});
            if (2 * pp <= mc.n_layer + 2) schedules.push_back({PipelineSchedule::kInterleaved, 2});
          }
          for (auto [schedule, v] : schedules) {
            if (pp > 1 && !parallel::schedule_unfit({schedule, pp, m, v}).empty()) continue;
            for (int zero = 0; zero <= 3; ++zero) {
              // ZeRO-1/2 over one rank are plain data parallelism; ZeRO-3 over one still runs
              // every stage again in backward and needs no buckets: less memory, more time.
              if (zero > 0 && zero < 3 && dp * cp == 1) continue;
              if (zero == 3 && pp > 1) break;
              for (int sp = 0; sp <= (tp > 1 ? 1 : 0); ++sp)
                for (ContextParallelKind kind : kinds) {
                  Layout l;
                  l.pp = pp;
                  l.dp = dp;
                  l.cp = cp;
                  l.tp = tp;
                  l.v = v;
                  l.zero = zero;
                  l.sp = sp == 1;
                  l.cp_kind = kind;
                  l.schedule = schedule;
                  l.micro_batch = mb;
                  l.micro_batches = m;
                  consider(l);
                }
            }
          }
        }
      }
    }
  }
  if (best.empty()) {
    char need[64];
    std::snprintf(need, sizeof(need), "%.2f GiB", least_memory / double(1ull << 30));
    return Status::NotFound(
        "planner: no layout of " + std::to_string(world) + " devices fits " +
        std::to_string(budget / double(1ull << 30)).substr(0, 6) + " GiB per device" +
        (least_memory > 0 ? std::string(" (the least any needs: ") + need + ")" : std::string()));
  }
  if (options.prefer_simpler > 0) {
    // Of the layouts predicted within the margin of the fastest, the one with the fewest
    // model-parallel ranks (then the lower ZeRO stage) first: the cost model counts their
    // collectives but not their engines' other overheads, which measure as a few to a few
    // tens of percent (bench/planner.py). The rest keep their order.
    const double limit = best.front().cost.step_s() * (1 + options.prefer_simpler);
    auto simpler = [](const Planned& a, const Planned& b) {
      const comm::MeshShape& x = a.candidate.plan.mesh;
      const comm::MeshShape& y = b.candidate.plan.mesh;
      const int64_t mx = int64_t(x.pp) * x.cp * x.tp, my = int64_t(y.pp) * y.cp * y.tp;
      if (mx != my) return mx < my;
      if (a.candidate.plan.zero_stage != b.candidate.plan.zero_stage)
        return a.candidate.plan.zero_stage < b.candidate.plan.zero_stage;
      return a.cost.step_s() < b.cost.step_s();
    };
    auto end = std::stable_partition(best.begin(), best.end(),
                                     [&](const Planned& p) { return p.cost.step_s() <= limit; });
    std::stable_sort(best.begin(), end, simpler);
    result.preferred_simpler = best.front().cost.step_s() > best_step(best, end) * (1 + 1e-9);
  }
  if (best.size() > size_t(std::max(1, options.top))) best.resize(size_t(std::max(1, options.top)));
  result.best = std::move(best);
  return result;
}

}  // namespace cairn::planner
