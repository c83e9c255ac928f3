// The cost model: step time and memory per device of a layout (planner.h).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>
#include <tuple>

#include "cairn/core/block_cache.h"
#include "cairn/model/head_chunk.h"
#include "cairn/model/param_specs.h"
#include "cairn/parallel/pipeline_schedule.h"
#include "cairn/planner/planner.h"
#include "planner/cost_model_impl.h"

namespace cairn::planner {

double allreduce_s(double bytes, int n, const Link& link) {
  if (n <= 1) return 0;
  return 2.0 * (n - 1) / n * bytes / link.bandwidth + 2.0 * (n - 1) * link.latency;
}

double allgather_s(double bytes, int n, const Link& link) {
  if (n <= 1) return 0;
  return double(n - 1) / n * bytes / link.bandwidth + double(n - 1) * link.latency;
}

double alltoall_s(double bytes, int n, const Link& link) { return allgather_s(bytes, n, link); }

const Link& link_for(const Cluster& c, int64_t span) {
  return span <= c.devices_per_node ? c.intra : c.inter;
}

double state_bytes_per_param(int zero_stage, int d) {
  const double D = d > 0 ? d : 1;
  switch (zero_stage) {
    case 0:
      return 16;
    case 1:
      return 8 + 8 / D;
    case 2:
      return 4 + 12 / D;
    default:
      return 16 / D;
  }
}

std::string Cost::bottleneck() const {
  const auto all = terms();
  const char* best = "compute";
  double most = 0.1 * compute_s;
  for (size_t i = 1; i < all.size(); ++i)  // besides compute
    if (const auto& [name, s] = all[i]; s > most) {
      best = name;
      most = s;
    }
  return best;
}

// --- the model's shape, once per workload ----------------------------------------------------

ModelShape::ModelShape(const Workload& w) : w_(w), specs_(model::param_specs(w.model)) {
  costs_ = parallel::stage_costs(w.model, w.seq_len);
}

// Parameters one tp rank holds of `s`: 1/tp of a split one (key/value heads fewer than tp:
// 1/K of them), a vocabulary table's padded rows / tp, a whole one entirely.
double ModelShape::held(const model::ParamSpec& s, int tp) const {
  double n = 1;
  for (int64_t d : s.shape) n *= double(d);
  if (tp == 1 || s.tp == model::TpSplit::kReplicated) return n;
  if (s.vocab_rows()) return std::ceil(double(s.shape[0]) / tp) * double(s.shape[1]);
  const int64_t K = w_.model.kv_heads();
  const bool kv = s.role == model::ParamRole::kKey || s.role == model::ParamRole::kValue;
  if (kv && K < tp) return n / double(K);
  return n / tp;
}

const ModelShape::Held& ModelShape::params(int tp) {
  auto it = held_.find(tp);
  if (it != held_.end()) return it->second;
  Held h;
  for (const model::ParamSpec& s : specs_) {
    const double n = held(s, tp);
    if (s.layer == 0) h.block += n;
    if (s.layer >= 0) continue;
    if (s.role == model::ParamRole::kTokenEmbedding) {
      h.first += n;
      if (!w_.model.is_llama()) {  // GPT-2's tied head: a copy on the last stage
        h.last += n;
        h.tied += n;
      }
    } else if (s.role == model::ParamRole::kPositionEmbedding) {
      h.first += n;
    } else {
      h.last += n;  // the final norm, LLaMA's head
    }
  }
  return held_.emplace(tp, h).first->second;
}

const std::vector<int64_t>& ModelShape::cuts(int chunks) {
  auto it = cuts_.find(chunks);
  if (it != cuts_.end()) return it->second;
  return cuts_.emplace(chunks, parallel::balanced_cuts(w_.model.n_layer, chunks, costs_))
      .first->second;
}

const ModelShape::Pipe& ModelShape::pipe(parallel::PipelineSchedule kind, int pp, int m, int v) {
  const auto key = std::make_tuple(int(kind), pp, m, v);
  auto it = pipes_.find(key);
  if (it != pipes_.end()) return it->second;
  Pipe p;
  if (pp == 1) {
    p.in_flight = {1};
    p.idle_per_busy = 0;
  } else {
    // Past 2 pp micro-batches a schedule only lengthens its steady state: the fill and drain
    // (the idle time) and the most in flight stay what they are at 2 pp (GPipe's in flight:
    // m), so a long step is simulated at 2 pp (once for every longer one) and scaled.
    const int sim_m = std::min(m, 2 * pp);
    const auto sim_key = std::make_tuple(int(kind), pp, sim_m, v);
    auto sim = simulated_.find(sim_key);
    if (sim == simulated_.end())
      sim = simulated_.emplace(sim_key, simulate_pipe(kind, pp, sim_m, v)).first;
    const Simulated& r = sim->second;
    p.in_flight = r.in_flight;
    if (kind == parallel::PipelineSchedule::kGPipe) p.in_flight.assign(size_t(pp), m * v);
    // A forward costs 1, a backward 2 (input and weight gradients): 3 v per micro-batch.
    p.idle_per_busy = r.idle / (3.0 * v * m);
  }
  return pipes_.emplace(key, p).first->second;
}

ModelShape::Simulated simulate_pipe(parallel::PipelineSchedule kind, int pp, int m, int v) {
  const parallel::ScheduleShape shape{kind, pp, m, v};
  auto run = parallel::simulate_schedule(shape, parallel::pipeline_schedule(shape));
  return {double(run->makespan - run->busy.front()), run->peak_in_flight};
}

// --- one layout --------------------------------------------------------------------------------

namespace {

double bytes_of(double n) { return 4 * n; }  // fp32

}  // namespace

Cost estimate_layout(ModelShape& shape, const Cluster& cluster, const Layout& l,
                     std::vector<int>* checkpointed, double budget, std::vector<Cost>* stages) {
  const Workload& w = shape.workload();
  const model::ModelConfig& mc = w.model;
  const double T = double(w.seq_len), C = double(mc.n_embd), V = double(mc.vocab_size);
  const double H = double(mc.n_head);
  const double KVd = double(mc.kv_heads() * mc.head_dim());
  const int pp = l.pp, v = l.v, tp = l.tp, cp = l.cp;
  const int64_t m = l.micro_batches;
  const double mb = double(l.micro_batch);
  const double tokens = mb * T / cp;  // this rank's tokens of a micro-batch
  const double flops = cluster.peak_flops * cluster.efficiency;
  const parallel::StageCosts& sc = shape.costs();
  const ModelShape::Held& held = shape.params(tp);
  const bool tied = held.tied > 0;  // GPT-2's table: the embedding's and the head's
  const std::vector<int64_t>& cuts = shape.cuts(pp * v);
  const ModelShape::Pipe& pipe = shape.pipe(l.schedule, pp, int(m), v);

  // Links: tp innermost, then cp, dp, pp (the default order).
  const Link& tp_link = link_for(cluster, tp);
  const Link& cp_link = link_for(cluster, int64_t(cp) * tp);
  const Link& dp_link = link_for(cluster, int64_t(l.dp) * cp * tp);
  const Link& pp_link = link_for(cluster, 2 * int64_t(l.dp) * cp * tp);

  // A model profile's part times: those measured at this tp degree (a rank's time with its
  // slices and collectives) or at this cp kind and degree without tp (a rank's time on its
  // share of each sequence, its exchanges included), else the whole parts' split evenly over
  // tp (cp is in `tokens`) with the collectives modelled.
  const MeasuredParts* parts = w.measured ? &*w.measured : nullptr;
  double split = tp;
  bool measured_cp = false;
  if (w.measured && tp > 1) {
    auto it = w.measured->tensor_parallel.find(tp);
    if (it != w.measured->tensor_parallel.end()) {
      parts = &it->second;
      split = 1;
    }
  }
  if (w.measured && cp > 1 && tp == 1 &&
      (l.cp_kind == parallel::ContextParallelKind::kRing ||
       l.cp_kind == parallel::ContextParallelKind::kUlysses)) {
    auto it =
        w.measured->context_parallel.find(parallel::cp_kind_name(l.cp_kind) + std::to_string(cp));
    if (it != w.measured->context_parallel.end()) {
      parts = &it->second;
      measured_cp = true;
    }
  }

  // One block's activations kept for backward per micro-batch, and a checkpointed block's
  // (its input); the same count as the trainer's start-up memory check.
  const bool ring = l.cp_kind == parallel::ContextParallelKind::kRing && cp > 1;
  const double ulysses = l.cp_kind == parallel::ContextParallelKind::kUlysses ? cp : 1;
  const model::BlockSaved per = model::block_saved_values(mc);
  const double whole_per = tp > 1 && !l.sp ? per.whole : per.whole / tp;
  const double heads = H / tp / ulysses;
  const double scores = ring ? 0 : 2 * mb * heads * T * T;
  const double block_act =
      4 * tokens * C * (whole_per + (per.split + (ring ? 4 : 0)) / double(tp)) + scores;
  const double boundary = 4 * tokens * C / (l.sp ? tp : 1);
  // Of those, the bytes in tensors under the block cache's huge-page size: freed in backward,
  // such blocks stay kept until the next step's forward takes them again (the cache hands them
  // back only while the kept ones alone exceed the peak), so they are resident beside what
  // backward ends with. `each` is one tensor's bytes, `all` the values' together.
  const double huge = double(core::BlockCache::kHugePageBytes);
  auto small = [&](double each, double all) { return each < huge ? all : 0.0; };
  const double F = double(mc.ffn_dim());
  const double narrow = per.split - per.wide * F / C;  // the split values not F wide
  const double block_small =
      small(4 * tokens * C * whole_per / per.whole, 4 * tokens * C * whole_per) +
      small(4 * tokens * F / tp, 4 * tokens * F * per.wide / tp) +
      small(4 * tokens * C * per.widest / tp, 4 * tokens * C * narrow / tp) +
      (ring ? small(4 * tokens * C / tp, 4 * tokens * C * 4 / tp) : 0) + small(scores / 2, scores);

  const int D = l.dp * cp;  // ranks holding the same parameters
  const double per_param = state_bytes_per_param(l.zero, D);

  Cost worst_time, worst_mem;
  double worst_step = -1, worst_bytes = -1;
  std::vector<Cost> all;  // per pp rank, before the bubble
  all.reserve(size_t(pp));
  // Per pp rank: its compute's forward passes (a zero-bubble schedule's bound needs them).
  const bool zero_bubble = pp > 1 && l.schedule == parallel::PipelineSchedule::kZeroBubbleH1;
  std::vector<double> forward_s;
  if (zero_bubble) forward_s.reserve(size_t(pp));
  if (checkpointed) checkpointed->assign(size_t(pp), 0);
  for (int s = 0; s < pp; ++s) {
    // This rank's chunks: virtual stages s, s + pp, ...
    int64_t blocks = 0;
    double cost = 0;  // training FLOPs per token
    bool first = false, last = false;
    for (int c = 0; c < v; ++c) {
      const int vs = c * pp + s;
      const int64_t b0 = vs == 0 ? 0 : cuts[size_t(vs - 1)];
      const int64_t b1 = vs == pp * v - 1 ? mc.n_layer : cuts[size_t(vs)];
      blocks += b1 - b0;
      cost += double(b1 - b0) * sc.block;
      first |= vs == 0;
      last |= vs == pp * v - 1;
    }
    if (first) cost += sc.embedding;
    if (last) cost += sc.head;
    Cost k;
    if (parts) {  // this machine's times of the parts
      const MeasuredParts& mm = *parts;
      k.compute_s =
          double(m) *
          (double(blocks) * mm.block.at(tokens, T) + (first ? mm.embedding.at(tokens, T) : 0) +
           (last ? mm.head.at(tokens, T) : 0)) /
          split;
    } else {
      k.compute_s = double(m) * tokens * cost / tp / flops;
    }
    // Its forward passes alone (a backward costs twice a forward in FLOPs).
    if (zero_bubble)
      forward_s.push_back(parts ? double(m) *
                                      (double(blocks) * parts->block_forward.at(tokens, T) +
                                       (first ? parts->embedding_forward.at(tokens, T) : 0) +
                                       (last ? parts->head_forward.at(tokens, T) : 0)) /
                                      split
                                : k.compute_s / 3);
    // Memory without checkpointing.
    const double params = double(blocks) * held.block + (first ? held.first : 0) +
                          (last ? held.last - (first ? held.tied : 0) : 0);
    const double state = params * per_param;
    k.param_bytes = bytes_of(params) * (l.zero >= 3 ? 1.0 / D : 1.0);
    k.grad_bytes = bytes_of(params) * (l.zero >= 2 ? 1.0 / D : 1.0);
    k.optimizer_bytes = state - k.param_bytes - k.grad_bytes;
    const double in_flight = double(pipe.in_flight[size_t(s)]) / v;  // micro-batches of all
    // Kept per micro-batch in flight besides the blocks' activations: the head's gradients of
    // its table and of its input, which the fused loss computes in forward for backward.
    const double table = bytes_of(V * C / tp);
    const double head_kept = last ? table + 4 * tokens * C : 0;
    // Transients: a checkpointed block recomputed; the head's chunk of logits in forward, or in
    // backward the scaled copies of its kept gradients (the chunk is gone by then: the larger of
    // the two); the embedding's dense table gradient; received activations. Data parallelism
    // adds no buffer: the gradients are views into its buckets (counted as gradients), which
    // it all-reduces in place.
    const double head_rows = double(model::head_chunk_rows(int64_t(V / tp)));
    const double logits_chunk = last ? 4 * std::min(tokens, head_rows) * V / tp : 0;
    const double head = last ? std::max(logits_chunk, head_kept) : 0;
    const double embedding_grad = first ? table : 0;
    // ZeRO-3 gathers one stage of the model at a time (parameters and their whole gradient,
    // the all-gather's own output besides): the largest it runs, a block or the embedding /
    // head with its vocabulary table.
    const double largest_part =
        bytes_of(std::max({held.block, first ? held.first : 0.0, last ? held.last : 0.0}));
    const double gathered = l.zero >= 3 ? 3 * largest_part : 0;
    // ZeRO-2 stages each bucket's whole gradient for its reduction until backward ends: they
    // grow as the activations are freed, so the larger of the two counts.
    const double staged = l.zero == 2 && D > 1 ? bytes_of(params) : 0;
    // No block sits idle beside these: the block cache (core/block_cache.h) holds no more than
    // the most bytes live at once, so the table-sized gradients backward ends with, the
    // buckets ZeRO-2 staged and the copy of this rank's shard ZeRO-1/2 all-gather after the
    // step are handed back when forward's requests need the room.
    // ZeRO-3 reduces each stage's gradients in buffers of its own (`gathered`); its forward
    // (and backward's recompute) holds a gathered stage and, on the head's, a chunk of logits
    // beside the gradients the fused loss accumulates meanwhile (under ZeRO-3 not kept from
    // forward to backward, so not in flight; measured: one table more than the chunk alone),
    // its backward the gathered stage, its gradient and the reduction's buffer: the larger
    // phase counts.
    const double head_zero3 = last ? logits_chunk + head_kept : 0;
    const double working = l.zero >= 3 ? std::max(largest_part + head_zero3, gathered)
                                       : std::max(head, embedding_grad);
    // The process before any tensor: the runtime the hardware profile measured; the code the
    // model's kernels page in and the heap their small allocations grow (the model profile's).
    const double runtime =
        cluster.runtime_bytes + (w.measured ? w.measured->code_bytes + w.measured->heap_bytes : 0);
    const double base_buffers = working + (pp > 1 ? 2 * boundary : 0) + runtime;
    // ZeRO-3 keeps no graph from forward to backward: each stage keeps its input and runs
    // again in backward (the head's kept gradients included), as checkpointed blocks do.
    const bool recomputes_all = l.zero >= 3;
    auto activations = [&](int64_t ckpt) {
      if (recomputes_all) return std::max(staged, in_flight * double(blocks) * boundary);
      return std::max(staged, in_flight * (double(blocks - ckpt) * block_act +
                                           double(ckpt) * boundary + head_kept));
    };
    // Backward's end on the embedding's stage, its activations freed: the embedding's dense
    // table gradient and, for a tied table, the head's gradient of it (waiting in autograd's
    // buffer for the embedding's, or received from a pipeline's other end); on a stage with
    // the head too, their sum, the last table asked for, which the kept block of the head's
    // chunk of logits (freed in its backward) serves when no larger than twice a table (the
    // cache's best fit); ZeRO-2's staged gradients, whole until then; and, still resident,
    // the kept blocks of forward's activations under the huge-page size. It outgrows
    // forward's peak where the activations are in small tensors. Measured above the
    // parameters, gradients and optimizer state at backward's end, live and kept together,
    // against what this counts: cp=4 146 MB (2 tables 77, the chunk 52, 17 of activations),
    // pp=2 x cp=2's first stage 143 (2 tables 77 + 66), pp=2 x dp=2's first stage 108 (77 +
    // 23). ZeRO-3's working set covers its backward. What it adds to forward's peak:
    const bool chunk_serves = logits_chunk >= table && logits_chunk <= 2 * table;
    const double end_tables = !tied   ? table
                              : !last ? 2 * table
                                      : 2 * table + (chunk_serves ? logits_chunk : table);
    auto backward_end = [&](int64_t ckpt) {
      if (!first || recomputes_all) return 0.0;
      const double kept = in_flight * (double(blocks - ckpt) * block_small +
                                       double(ckpt) * small(boundary, boundary)) +
                          (last ? small(4 * tokens * C, 4 * tokens * C) : 0);
      return std::max(0.0, staged + end_tables + kept - (activations(ckpt) + working));
    };
    // Beyond the parameters, their state and the fixed buffers, with `ckpt` checkpointed
    // blocks (one recomputed at a time).
    auto beyond = [&](int64_t ckpt) {
      return activations(ckpt) + backward_end(ckpt) +
             (ckpt > 0 || (recomputes_all && blocks > 0) ? block_act : 0);
    };
    int64_t ckpt = 0;
    const double fixed = k.param_bytes + k.grad_bytes + k.optimizer_bytes + base_buffers;
    if (!recomputes_all && budget > 0 && fixed + beyond(0) > budget && blocks > 0) {
      // The fewest checkpointed blocks that fit, or all: each saves the same and costs the
      // same, and the bytes beyond fall as more are checkpointed.
      int64_t lo = 1, hi = blocks;
      while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (fixed + beyond(mid) <= budget)
          hi = mid;
        else
          lo = mid + 1;
      }
      ckpt = lo;
    }
    if (checkpointed) (*checkpointed)[size_t(s)] = int(ckpt);
    if (!checkpointed && l.checkpointed) ckpt = (*l.checkpointed)[size_t(s)];
    k.activation_bytes = activations(ckpt);
    k.buffer_bytes = base_buffers + beyond(ckpt) - k.activation_bytes;
    // Checkpointed blocks run their forward again; under ZeRO-3 every stage does (each
    // gathers its parameters again in backward and recomputes without a kept graph): its
    // first forward runs without autograd, the head's then computing no gradients in its
    // fused loss (measured: head_no_grad, where its forward with autograd is nearly all of it).
    const int64_t again = recomputes_all ? blocks : ckpt;
    if (parts) {
      const MeasuredParts& mm = *parts;
      k.recompute_s = double(m) * double(again) * mm.block_forward.at(tokens, T) / split;
      if (l.zero >= 3)
        k.recompute_s += double(m) *
                         ((first ? mm.embedding_forward.at(tokens, T) : 0) +
                          (last ? mm.head_no_grad.at(tokens, T) : 0)) /
                         split;
    } else {
      const double extras = l.zero >= 3 ? (first ? sc.embedding : 0) + (last ? sc.head : 0) : 0;
      k.recompute_s = double(m) * tokens * (double(again) * sc.block + extras) / 3 / tp / flops;
    }

    // Tensor parallelism: per block 2 all-reduces of the block's activations forward and 2
    // backward (or as many all-gathers + reduce-scatters under sequence parallelism, the same
    // bytes), 2 more in a checkpointed block's recompute; the embedding's 2.
    const double act_bytes = 4 * tokens * C;
    // Measured at this degree: already in the parts' times.
    const double ar = tp > 1 && split > 1 ? allreduce_s(act_bytes, tp, tp_link) : 0;
    k.tp_s = double(m) * ar * (4.0 * blocks + 2.0 * ckpt + (first ? 2 : 0));

    // Context parallelism per block: the ring passes key/value blocks (cp - 1 hops forward; in
    // backward cp - 1 hops of them and cp of their gradients), hidden behind the attention's
    // compute as far as it lasts; Ulysses' all-to-alls (q, k, v and the output, forward and
    // backward) are exposed.
    if (cp > 1) {
      const double attn_s =  // one block's, fwd + bwd
          parts ? tokens * T * parts->block.per_token_pos / split
                : tokens * 12 * T * C / tp / flops;
      double comm = 0;
      if (ring) {
        const double kv = 2 * 4 * tokens * KVd / tp;
        comm = (3.0 * cp - 2) * (kv / cp_link.bandwidth + cp_link.latency);
        comm = std::max(0.0, comm - attn_s);
      } else {
        const double qkvo = 4 * tokens * (2 * C + 2 * KVd) / tp;
        comm = 2 * alltoall_s(qkvo, cp, cp_link);
      }
      k.cp_s = measured_cp ? 0 : double(m) * comm * double(blocks + ckpt);
    }

    // Data parallelism over dp x cp: the gradients reduced by an all-reduce (ZeRO's
    // reduce-scatter too: comm::Group reduce-scatters by an all-reduce, Gloo having none),
    // hidden behind backward by the cluster's overlap; ZeRO-1/2 gather the updated parameters
    // after the step (exposed), ZeRO-3 gathers them forward and backward.
    if (D > 1) {
      const double g = bytes_of(params);
      const double ar = allreduce_s(g, D, dp_link);
      const double ag = allgather_s(g, D, dp_link);
      const double hidden = 1 - cluster.dp_overlap;
      if (l.zero == 0)
        k.dp_s = hidden * ar;
      else if (l.zero <= 2)
        k.dp_s = hidden * ar + ag;
      else
        k.dp_s = hidden * (ar + 2 * double(m) * ag);
    }

    // The optimizer step over the parameters this rank updates (its 1/D of them under ZeRO),
    // memory-bound: the measured time per parameter (none without a model profile).
    if (w.measured)
      k.optimizer_s = w.measured->optimizer_per_param * params / (l.zero >= 1 ? double(D) : 1.0);

    // Pipeline: each micro-batch's activation in and its gradient out per chunk boundary.
    if (pp > 1) k.pp_s = double(m) * v * 2 * (boundary / pp_link.bandwidth + pp_link.latency);
    // A tied table (GPT-2's) on a pipeline's first and last stage: after backward each sends
    // the other its gradient of it, both ways at once, and adds the one it receives.
    if (pp > 1 && tied && (first || last))
      k.pp_s += bytes_of(held.tied) / pp_link.bandwidth + pp_link.latency;
    all.push_back(k);
  }
  // The bubble: a stage idles while the others fill and drain the pipeline, i.e. for the
  // schedule's idle fraction of the *other* stages' work (the balanced pipeline's
  // idle_per_busy x their mean busy time): a slow stage waits little for fast ones, which is
  // what a pipeline whose last stage holds a large head alone does.
  auto busy = [](const Cost& k) { return k.compute_s + k.recompute_s + k.tp_s + k.cp_s; };
  double busy_sum = 0;
  for (const Cost& k : all) busy_sum += busy(k);
  // Devices sharing fewer cores (a profile of more ranks than this machine has cores): the
  // parts were timed with every rank running, each on share = cores / devices of a core. A rank
  // that waits gives its core to the others, so a stage takes the longer of its own path at a
  // core's full speed (its busy time and bubble x share) and the node's work over its cores
  // (every stage holds the same number of ranks: the mean stage's busy time at the shared
  // speed, scaled by the part of the node the job fills); core_wait_s is the difference.
  const int per_node = cluster.devices_per_node;
  const bool shared = cluster.cores_per_node > 0 && cluster.cores_per_node < per_node;
  const double share = shared ? double(cluster.cores_per_node) / per_node : 1;
  const double world = double(pp) * l.dp * cp * tp;
  const double node_floor = busy_sum / pp * std::min(world, double(per_node)) / per_node;
  // A zero-bubble schedule fills the balanced pipeline's fill and drain with weight passes,
  // but a stage still waits for one micro-batch's forward through the stages before it and, at
  // the end, for their backward of the last micro-batch, less its own last weight pass (which
  // runs meanwhile): behind fast stages a slow one (a head alone on the last) waits as long as
  // under 1F1B. The other schedules' idle time already covers this (their idle fraction of
  // the others' work is at least the stages before this one's share of one micro-batch).
  double before = 0;  // one micro-batch's forward and backward on the stages before this one
  for (size_t s = 0; s < all.size(); ++s) {
    Cost& k = all[s];
    k.bubble_s = pp > 1 ? pipe.idle_per_busy * (busy_sum - busy(k)) / (pp - 1) : 0;
    if (zero_bubble) {
      const double own_weight_pass = (busy(k) - forward_s[s]) / 2 / double(m);
      k.bubble_s = std::max(k.bubble_s, before - own_weight_pass);
      before += busy(k) / double(m);
    }
    if (shared) {
      k.compute_s *= share;
      k.recompute_s *= share;
      k.tp_s *= share;
      k.cp_s *= share;
      k.bubble_s *= share;
      k.core_wait_s = std::max(0.0, node_floor - (busy(k) + k.bubble_s));
    }
    if (stages) stages->push_back(k);
    if (k.step_s() > worst_step) {
      worst_step = k.step_s();
      worst_time = k;
    }
    if (k.memory_bytes() > worst_bytes) {
      worst_bytes = k.memory_bytes();
      worst_mem = k;
    }
  }
  Cost out = worst_time;
  out.param_bytes = worst_mem.param_bytes;
  out.grad_bytes = worst_mem.grad_bytes;
  out.optimizer_bytes = worst_mem.optimizer_bytes;
  out.activation_bytes = worst_mem.activation_bytes;
  out.buffer_bytes = worst_mem.buffer_bytes;
  out.tokens_per_s = double(w.global_batch) * T / out.step_s();
  return out;
}

// --- the public form ----------------------------------------------------------------------------

Cost estimate(const Workload& w, const Cluster& cluster, const Candidate& c) {
  return estimate_stages(w, cluster, c, nullptr);
}

Cost estimate_stages(const Workload& w, const Cluster& cluster, const Candidate& c,
                     std::vector<Cost>* stages) {
  ModelShape shape(w);
  const parallel::Plan& p = c.plan;
  Layout l;
  l.pp = p.mesh.pp;
  l.dp = p.mesh.dp;
  l.cp = p.mesh.cp;
  l.tp = p.mesh.tp;
  l.sp = !p.layers.empty() && p.layers.front().sequence_parallel;
  l.cp_kind = p.layers.empty() ? parallel::ContextParallelKind::kNone : p.layers.front().cp_kind;
  l.zero = p.zero_stage;
  l.schedule = p.pipeline.schedule;
  l.v = p.pipeline.virtual_stages;
  l.micro_batch = c.micro_batch;
  l.micro_batches = w.global_batch / (c.micro_batch * l.dp);
  // The checkpointed blocks each rank holds, by the plan's cut.
  std::vector<int> ckpt(size_t(l.pp), 0);
  const std::vector<int64_t>& cuts = p.pipeline.cuts;
  for (int64_t b = 0; b < int64_t(p.layers.size()); ++b) {
    if (!p.layers[size_t(b)].checkpoint) continue;
    const int vs = int(std::upper_bound(cuts.begin(), cuts.end(), b) - cuts.begin());
    ++ckpt[size_t(vs % l.pp)];
  }
  l.checkpointed = &ckpt;
  if (stages) stages->clear();
  return estimate_layout(shape, cluster, l, nullptr, 0, stages);
}

std::string why_faster(const Cost& a, const Cost& b) {
  const auto ta_all = a.terms(), tb_all = b.terms();
  const char* name = "compute";
  double gain = 0, ta = a.compute_s, tb = b.compute_s;
  for (size_t i = 0; i < ta_all.size(); ++i)
    if (const double x = ta_all[i].second, y = tb_all[i].second; y - x > gain) {
      gain = y - x;
      name = ta_all[i].first;
      ta = x;
      tb = y;
    }
  char buf[128];
  std::snprintf(buf, sizeof(buf), "%s %.4g s against %.4g s", name, ta, tb);
  return buf;
}

std::string explain(const Candidate& c, const Cost& k) {
  std::ostringstream o;
  char buf[160];
  auto line = [&](const char* what, double s) {
    std::snprintf(buf, sizeof(buf), "  %-18s %10.4f s  %5.1f%%\n", what, s,
                  100 * s / std::max(k.step_s(), 1e-30));
    o << buf;
  };
  o << c.plan.summary() << ", micro-batch " << c.micro_batch << "\n";
  for (const auto& [name, s] : k.terms()) line(name, s);
  std::snprintf(buf, sizeof(buf), "  %-18s %10.4f s  (%.0f tokens/s)\n", "step", k.step_s(),
                k.tokens_per_s);
  o << buf;
  const double gib = double(1ull << 30);
  std::snprintf(buf, sizeof(buf),
                "  memory per device  %.3f GiB: parameters %.3f, gradients %.3f, optimizer %.3f, "
                "activations %.3f, buffers %.3f\n",
                k.memory_bytes() / gib, k.param_bytes / gib, k.grad_bytes / gib,
                k.optimizer_bytes / gib, k.activation_bytes / gib, k.buffer_bytes / gib);
  o << buf << "  bottleneck: " << k.bottleneck() << "\n";
  return o.str();
}

}  // namespace cairn::planner
