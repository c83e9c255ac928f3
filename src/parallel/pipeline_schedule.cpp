// Pipeline schedules (see the header): generators per kind and the unit-cost simulator.
#include "cairn/parallel/pipeline_schedule.h"

#include <algorithm>
#include <map>
#include <tuple>

namespace cairn::parallel {
namespace {

using Program = std::vector<PipeAction>;

PipeAction F(int m, int c = 0) { return {PipeOp::kForward, m, c}; }

// 1f1b and zb-h1 on stage s: pp - s - 1 forwards, one forward and one backward in turn, the
// remaining backwards. `split` (zb-h1) makes each backward its input-gradient pass and runs the
// weight-gradient passes s behind them: a stage waits for the gradients of the stages after it
// while they still have weight passes to run, and runs its own held-back ones at the end, where
// 1f1b's stage waits for nothing but is idle on the stages before it.
Program one_f_one_b(int s, int p, int m, bool split) {
  Program out;
  const int warmup = std::min(p - s - 1, m);
  const PipeOp back = split ? PipeOp::kBackwardInput : PipeOp::kBackward;
  int backs = 0, weights = 0;
  auto backward = [&](int i) {
    out.push_back({back, i, 0});
    ++backs;
    while (split && weights < backs - s) out.push_back({PipeOp::kBackwardWeight, weights++, 0});
  };
  for (int i = 0; i < warmup; ++i) out.push_back(F(i));
  for (int i = 0; i + warmup < m; ++i) {
    out.push_back(F(warmup + i));
    backward(i);
  }
  for (int i = std::max(0, m - warmup); i < m; ++i) backward(i);
  while (split && weights < m) out.push_back({PipeOp::kBackwardWeight, weights++, 0});
  return out;
}

// Megatron's interleaved 1f1b on stage s: forward k of m v runs chunk (k / p) % v of
// micro-batch (k / (p v)) p + k % p; backward k the same micro-batch of chunk v - 1 - (k / p) % v.
Program interleaved(int s, int p, int m, int v) {
  const int total = m * v;
  const int warmup = std::min(total, (p - s - 1) * 2 + (v - 1) * p);
  auto micro = [&](int k) { return (k / (p * v)) * p + k % p; };
  auto fwd = [&](int k) { return F(micro(k), (k / p) % v); };
  auto bwd = [&](int k) { return PipeAction{PipeOp::kBackward, micro(k), v - 1 - (k / p) % v}; };
  Program out;
  for (int k = 0; k < warmup; ++k) out.push_back(fwd(k));
  for (int i = 0; warmup + i < total; ++i) {
    out.push_back(fwd(warmup + i));
    out.push_back(bwd(i));
  }
  for (int k = total - warmup; k < total; ++k) out.push_back(bwd(k));
  return out;
}

}  // namespace

const char* pipe_op_name(PipeOp op) {
  switch (op) {
    case PipeOp::kForward:
      return "F";
    case PipeOp::kBackward:
      return "B";
    case PipeOp::kBackwardInput:
      return "BI";
    case PipeOp::kBackwardWeight:
      return "W";
  }
  return "?";
}

std::string schedule_unfit(const ScheduleShape& sh) {
  if (sh.stages < 1) return "the pipeline needs at least 1 stage, got " + std::to_string(sh.stages);
  if (sh.micro_batches < 1)
    return "a step needs at least 1 micro-batch, got " + std::to_string(sh.micro_batches);
  const bool inter = sh.kind == PipelineSchedule::kInterleaved;
  if (!inter && sh.virtual_stages != 1)
    return std::string("virtual stages are for the interleaved schedule only (") +
           schedule_name(sh.kind) + " got " + std::to_string(sh.virtual_stages) + ")";
  if (inter && sh.virtual_stages < 2)
    return "the interleaved schedule needs at least 2 virtual stages per rank, got " +
           std::to_string(sh.virtual_stages);
  if (inter && sh.micro_batches % sh.stages != 0)
    return "the interleaved schedule runs micro-batches in groups of pp: " +
           std::to_string(sh.micro_batches) + " micro-batches is not a multiple of pp " +
           std::to_string(sh.stages);
  return "";
}

std::vector<std::vector<PipeAction>> pipeline_schedule(const ScheduleShape& sh) {
  const int p = sh.stages, m = sh.micro_batches;
  std::vector<Program> out(static_cast<size_t>(p));
  for (int s = 0; s < p; ++s) {
    Program& prog = out[size_t(s)];
    switch (sh.kind) {
      case PipelineSchedule::kGPipe:
        for (int i = 0; i < m; ++i) prog.push_back(F(i));
        for (int i = 0; i < m; ++i) prog.push_back({PipeOp::kBackward, i, 0});
        break;
      case PipelineSchedule::kOneFOneB:
        prog = one_f_one_b(s, p, m, false);
        break;
      case PipelineSchedule::kZeroBubbleH1:
        prog = one_f_one_b(s, p, m, true);
        break;
      case PipelineSchedule::kInterleaved:
        prog = interleaved(s, p, m, sh.virtual_stages);
        break;
    }
  }
  return out;
}

double ScheduleRun::bubble() const {
  if (busy.empty() || makespan == 0) return 0;
  int64_t idle = 0;
  for (int64_t b : busy) idle += makespan - b;
  return double(idle) / double(int64_t(busy.size()) * makespan);
}

Result<ScheduleRun> simulate_schedule(const ScheduleShape& sh,
                                      const std::vector<std::vector<PipeAction>>& programs,
                                      const ScheduleCosts& costs) {
  if (std::string why = schedule_unfit(sh); !why.empty()) return Status::InvalidArgument(why);
  const int p = sh.stages, m = sh.micro_batches, v = sh.virtual_stages;
  if (int(programs.size()) != p)
    return Status::InvalidArgument("the schedule has " + std::to_string(programs.size()) +
                                   " stage programs for " + std::to_string(p) + " stages");
  auto where = [](int s, const PipeAction& a) {
    return std::string(pipe_op_name(a.op)) + "(micro " + std::to_string(a.micro) + ", chunk " +
           std::to_string(a.chunk) + ") on stage " + std::to_string(s);
  };
  // Which backward kind the programs use, and that every action is there exactly once.
  bool split = false, whole = false;
  std::map<std::tuple<int, int, int, int>, int> seen;  // (stage, op, chunk, micro) -> count
  for (int s = 0; s < p; ++s)
    for (const PipeAction& a : programs[size_t(s)]) {
      if (a.micro < 0 || a.micro >= m || a.chunk < 0 || a.chunk >= v)
        return Status::InvalidArgument("out of range: " + where(s, a));
      split |= a.op == PipeOp::kBackwardInput || a.op == PipeOp::kBackwardWeight;
      whole |= a.op == PipeOp::kBackward;
      if (++seen[{s, int(a.op), a.chunk, a.micro}] > 1)
        return Status::InvalidArgument("twice: " + where(s, a));
    }
  if (split && whole)
    return Status::InvalidArgument("the programs mix whole and split backward passes");
  const std::vector<PipeOp> ops =
      split ? std::vector<PipeOp>{PipeOp::kForward, PipeOp::kBackwardInput, PipeOp::kBackwardWeight}
            : std::vector<PipeOp>{PipeOp::kForward, PipeOp::kBackward};
  for (int s = 0; s < p; ++s)
    for (PipeOp op : ops)
      for (int c = 0; c < v; ++c)
        for (int i = 0; i < m; ++i)
          if (!seen.count({s, int(op), c, i}))
            return Status::InvalidArgument("missing: " + where(s, PipeAction{op, i, c}));

  // End times of the actions that ran, by (virtual stage, op, micro).
  const PipeOp back = split ? PipeOp::kBackwardInput : PipeOp::kBackward;
  std::map<std::tuple<int, int, int>, int64_t> ended;
  auto end_of = [&](int vs, PipeOp op, int i) -> const int64_t* {
    auto it = ended.find({vs, int(op), i});
    return it == ended.end() ? nullptr : &it->second;
  };
  auto cost = [&](PipeOp op) {
    switch (op) {
      case PipeOp::kForward:
        return costs.forward;
      case PipeOp::kBackward:
        return costs.backward_input + costs.backward_weight;
      case PipeOp::kBackwardInput:
        return costs.backward_input;
      case PipeOp::kBackwardWeight:
        return costs.backward_weight;
    }
    return int64_t(0);
  };
  ScheduleRun run;
  run.busy.assign(size_t(p), 0);
  run.peak_in_flight.assign(size_t(p), 0);
  std::vector<size_t> next(size_t(p), 0);
  std::vector<int64_t> free_at(size_t(p), 0);
  std::vector<int> in_flight(size_t(p), 0);
  const int last_vs = p * v - 1;
  for (bool progress = true; progress;) {
    progress = false;
    for (int s = 0; s < p; ++s) {
      const auto& prog = programs[size_t(s)];
      while (next[size_t(s)] < prog.size()) {
        const PipeAction& a = prog[next[size_t(s)]];
        const int vs = a.chunk * p + s;
        std::vector<const int64_t*> deps;
        if (a.op == PipeOp::kForward) {
          if (vs > 0) deps.push_back(end_of(vs - 1, PipeOp::kForward, a.micro));
        } else if (a.op == PipeOp::kBackwardWeight) {
          deps.push_back(end_of(vs, back, a.micro));
        } else {
          const int64_t* own = end_of(vs, PipeOp::kForward, a.micro);
          if (!own) return Status::InvalidArgument("a backward before its forward: " + where(s, a));
          deps.push_back(own);
          if (vs < last_vs) deps.push_back(end_of(vs + 1, back, a.micro));
        }
        if (std::find(deps.begin(), deps.end(), nullptr) != deps.end()) break;  // waits
        int64_t start = free_at[size_t(s)];
        for (const int64_t* d : deps) start = std::max(start, *d);
        const int64_t end = start + cost(a.op);
        ended[{vs, int(a.op), a.micro}] = end;
        free_at[size_t(s)] = end;
        run.busy[size_t(s)] += cost(a.op);
        run.makespan = std::max(run.makespan, end);
        if (a.op == PipeOp::kForward)
          run.peak_in_flight[size_t(s)] =
              std::max(run.peak_in_flight[size_t(s)], ++in_flight[size_t(s)]);
        else if (a.op == back)
          --in_flight[size_t(s)];
        ++next[size_t(s)];
        progress = true;
      }
    }
  }
  std::string stuck;
  for (int s = 0; s < p; ++s)
    if (next[size_t(s)] < programs[size_t(s)].size())
      stuck += (stuck.empty() ? "" : "; ") + where(s, programs[size_t(s)][next[size_t(s)]]);
  if (!stuck.empty()) return Status::InvalidArgument("deadlock: waiting forever: " + stuck);
  return run;
}

double schedule_bubble_formula(const ScheduleShape& sh) {
  const double p = sh.stages, m = sh.micro_batches, v = sh.virtual_stages;
  switch (sh.kind) {
    case PipelineSchedule::kGPipe:
    case PipelineSchedule::kOneFOneB:
      return (p - 1) / (m + p - 1);
    case PipelineSchedule::kInterleaved:
      return (p - 1) / (v * m + p - 1);
    case PipelineSchedule::kZeroBubbleH1:
      return (p - 1) / (3 * m + p - 1);
  }
  return 0;
}

StageCosts stage_costs(const model::ModelConfig& m, int64_t seq_len) {
  const double C = double(m.n_embd), D = double(m.head_dim());
  const double q = double(m.n_head) * D, kv = double(m.kv_heads()) * D;
  const double mlp = double(m.ffn_dim()) * C * (m.is_llama() ? 3 : 2);
  StageCosts c;
  c.embedding = 6 * C;
  c.block = 6 * (C * (q + 2 * kv) + q * C + mlp) + 12 * double(seq_len) * C;
  // The fused loss computes the logits again in backward (8 V C in all), but the blocks' element-
  // wise work (norms, GELU, softmax), which 6 per weight leaves out, weighs about as much: at
  // 6 V C bench/pipeline.py's pp2 cut ([13, 3]) measured the formula's bubble, at 8 V C ([15, 1])
  // the last stage waited twice as long.
  c.head = 6 * double(m.vocab_size) * C;
  return c;
}

std::vector<int64_t> balanced_cuts(int64_t n, int stages, const StageCosts& costs) {
  const int P = stages;
  // cost(s, a, b): stage s holding blocks [a, b).
  auto cost = [&](int s, int64_t a, int64_t b) {
    return double(b - a) * costs.block + (s == 0 ? costs.embedding : 0) +
           (s == P - 1 ? costs.head : 0);
  };
  auto allowed = [&](int s, int64_t a, int64_t b) {
    return b > a || (b == a && (s == 0 || s == P - 1));
  };
  const double inf = 1e300;
  // best[s][a]: the cheapest costliest stage of stages s .. P-1 holding blocks [a, n).
  std::vector<std::vector<double>> best(size_t(P + 1), std::vector<double>(size_t(n + 1), inf));
  best[size_t(P)][size_t(n)] = 0;
  for (int s = P - 1; s >= 0; --s)
    for (int64_t a = 0; a <= n; ++a)
      for (int64_t b = a; b <= n; ++b)
        if (allowed(s, a, b) && best[size_t(s + 1)][size_t(b)] < inf)
          best[size_t(s)][size_t(a)] = std::min(
              best[size_t(s)][size_t(a)], std::max(cost(s, a, b), best[size_t(s + 1)][size_t(b)]));
  const double target = best[0][0] * (1 + 1e-12);
  // Of the cuts within the optimum, the most even: the least sum of squared stage costs.
  std::vector<std::vector<double>> even(size_t(P + 1), std::vector<double>(size_t(n + 1), inf));
  even[size_t(P)][size_t(n)] = 0;
  for (int s = P - 1; s >= 0; --s)
    for (int64_t a = 0; a <= n; ++a)
      for (int64_t b = a; b <= n; ++b)
        if (allowed(s, a, b) && cost(s, a, b) <= target && even[size_t(s + 1)][size_t(b)] < inf)
          even[size_t(s)][size_t(a)] =
              std::min(even[size_t(s)][size_t(a)],
                       cost(s, a, b) * cost(s, a, b) + even[size_t(s + 1)][size_t(b)]);
  // Front to back, each stage as few blocks as keep that sum reachable.
  std::vector<int64_t> cuts;
  int64_t a = 0;
  for (int s = 0; s + 1 < P; ++s) {
    int64_t b = a;
    auto rest = [&](int64_t b) {
      return cost(s, a, b) * cost(s, a, b) + even[size_t(s + 1)][size_t(b)];
    };
    while (!(allowed(s, a, b) && cost(s, a, b) <= target &&
             rest(b) <= even[size_t(s)][size_t(a)] * (1 + 1e-12)))
      ++b;
    cuts.push_back(b);
    a = b;
  }
  return cuts;
}

std::vector<int64_t> blocks_per_stage(const std::vector<int64_t>& cuts, int64_t n_blocks) {
  std::vector<int64_t> out;
  int64_t a = 0;
  for (int64_t c : cuts) {
    out.push_back(c - a);
    a = c;
  }
  out.push_back(n_blocks - a);
  return out;
}

std::vector<int64_t> cuts_from_blocks(const std::vector<int64_t>& blocks) {
  std::vector<int64_t> cuts;
  int64_t a = 0;
  for (size_t i = 0; i + 1 < blocks.size(); ++i) cuts.push_back(a += blocks[i]);
  return cuts;
}

}  // namespace cairn::parallel
