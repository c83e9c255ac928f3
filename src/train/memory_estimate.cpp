// Memory estimate of a training job, checked at start.
#include "cairn/train/memory_estimate.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "cairn/model/head_chunk.h"

namespace cairn::train {
namespace {

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f GiB", bytes / double(1ull << 30));
  return buf;
}

}  // namespace

int64_t count_params(const model::ModelConfig& c) {
  const int64_t C = c.n_embd, F = c.ffn_dim(), V = c.vocab_size, L = c.n_layer;
  if (c.is_llama()) {
    const int64_t KV = c.kv_heads() * c.head_dim(), Q = c.n_head * c.head_dim();
    const int64_t block = C * Q + 2 * C * KV + Q * C + 3 * C * F + 2 * C;
    return V * C /* tok_embeddings */ + L * block + C /* norm */ + V * C /* output */;
  }
  const int64_t block = (C * 3 * C + 3 * C) + (C * C + C) + (C * F + F) + (F * C + C) + 4 * C;
  return V * C + c.block_size * C + L * block + 2 * C;  // head tied to wte
}

namespace {

// Parameters every tensor-parallel rank holds whole: the norms, the biases of the row-parallel
// projections and GPT-2's position table.
int64_t whole_params(const model::ModelConfig& c) {
  const int64_t C = c.n_embd, L = c.n_layer;
  if (c.is_llama()) return L * 2 * C + C;
  return c.block_size * C + L * 6 * C + 2 * C;
}

}  // namespace

MemoryEstimate estimate_memory(const MemoryEstimateInput& in) {
  MemoryEstimate e;
  e.params = count_params(in.model);
  const double tp = double(in.tp > 0 ? in.tp : 1), W = double(whole_params(in.model));
  // The parameters this rank holds: 1/tp of the split ones, all of the whole ones.
  const double P = tp > 1 ? (double(e.params) - W) / tp + W : double(e.params);
  const double d = double(in.world > 0 ? in.world : 1);
  // Bytes per parameter for fp32 weights (4), gradients (4) and AdamW's two moments (8).
  switch (in.zero_stage) {
    case 0:
      e.state_bytes = 16 * P;
      break;
    case 1:
      e.state_bytes = (8 + 8 / d) * P;
      break;
    case 2:
      e.state_bytes = (4 + 12 / d) * P;
      break;
    default:
      e.state_bytes = 16 / d * P;
      break;
  }
  const auto& c = in.model;
  const double B = double(in.micro_batch_size), T = double(in.seq_len), C = double(c.n_embd);
  const double H = double(c.n_head), L = double(c.n_layer), V = double(c.vocab_size);
  // Context parallelism: this rank's 1/cp of every sequence.
  const double cp = double(in.cp > 0 ? in.cp : 1);
  const double ring = double(in.cp_ring > 0 ? in.cp_ring : 1), ulysses = cp / ring;
  const double tokens = B * T / cp;
  // One block's saved activations (fp32): the values model::block_saved_values counts per
  // token and channel (GPT-2's 17: inputs of the norms, projections, MLP and residuals; 4
  // more with a ring, its fp32 copies of q, k, v and the output) plus what attention keeps of
  // the scores. Under tp, the `whole` ones (the norms' inputs and outputs, the residuals) stay
  // whole without sequence parallelism; the heads' scores and the rest are split. causal_attention
  // keeps the probabilities of the causal triangle, 2 bytes per head per pair (fp32, half the
  // pairs), for the heads it runs: H / tp over the whole sequence in one process, H / (tp cp) under
  // Ulysses. Ring attention keeps none: it recomputes each block's scores in backward from the
  // saved log-sum-exp.
  const model::BlockSaved per = model::block_saved_values(c);
  const double whole_per = tp > 1 && !in.sequence_parallel ? per.whole : per.whole / tp;
  const double heads = H / tp / ulysses;  // the heads each rank's attention runs
  const double ring_copies = ring > 1 ? 4 : 0;
  const double scores = ring > 1 ? 0 : 2 * B * heads * T * T;
  const double block = 4 * tokens * C * (whole_per + (per.split + ring_copies) / tp) + scores;
  // Attention's transients: a ring tile's scores, probabilities and their gradient (three fp32
  // tables of up to 256 query rows by the T / ring keys of a block, per head).
  const double ring_block =
      ring > 1 ? 3 * 4 * B * heads * std::min(256.0, T / ring) * (T / ring) : 0;
  const double boundary = 4 * tokens * C / (in.sequence_parallel ? tp : 1);  // a block's input
  const double saved = in.activation_checkpointing ? L * boundary + block : L * block;
  // Transients: the chunked head + loss (one chunk of logits, its vocabulary rows under tp,
  // turned into its gradient in place; the table's gradient, which the fused loss computes in
  // forward and keeps for backward) and the embedding output with its gradient; ZeRO-3 also
  // gathers one block's parameters.
  const double head_rows = double(model::head_chunk_rows(int64_t(V / tp)));
  const double head =
      4 * std::min(tokens, head_rows) * V / tp + 4 * V * C / tp + 4 * tokens * C * 2;
  const double gathered = in.zero_stage >= 3 ? 2 * 4 * P / (L > 0 ? L : 1) : 0;
  e.activation_bytes = saved + std::max(head, ring_block) + gathered;
  return e;
}

Status check_memory(const MemoryEstimate& e, int local_ranks, int64_t available) {
  const double need = e.total() * double(local_ranks > 0 ? local_ranks : 1);
  if (need <= double(available)) return Status::Ok();
  char params[32];
  std::snprintf(params, sizeof(params), "%.1fM", double(e.params) / 1e6);
  std::string who = local_ranks > 1 ? std::to_string(local_ranks) + " ranks on this machine need "
                                    : "this rank needs ";
  return Status::InvalidArgument(
      "the job does not fit in memory: " + who + gib(need) + " (per rank: " + params +
      " parameters, " + gib(e.state_bytes) + " of weights, gradients and AdamW state, about " +
      gib(e.activation_bytes) + " of activations) but " + gib(double(available)) +
      " is available; use a smaller model, a smaller train.micro_batch_size or train.seq_len, "
      "train.activation_checkpointing: true, or more ranks with parallel.zero_stage 3");
}

}  // namespace cairn::train
