// Context parallelism: every sequence split over the cp ranks, attention computed across the
// split. Three kinds (Plan's ContextParallelKind):
//
//   ulysses  each rank holds a contiguous 1/cp of the sequence. Before attention one all-to-all
//            trades sequence shards for head shards (q, k, v packed: each rank then holds the
//            whole sequence of 1/cp of the heads), the unsplit causal attention runs, and one
//            all-to-all trades back. Heads and key/value heads must be divisible by cp.
//   ring     the sequence is cut into 2 cp chunks and rank r holds chunks r and 2cp-1-r
//            ("zigzag"), so that under the causal mask every rank has the same work. Key/value
//            blocks travel around the ring (send to r+1, receive from r-1, overlapped with the
//            block being computed); each rank merges its queries' partial results by their
//            log-sum-exp (online softmax: the same value as one softmax over all keys). The
//            backward is a ring too: key/value blocks travel again, with their gradients.
//   2d       Ulysses over `ulysses` consecutive cp ranks, ring across the cp / ulysses groups:
//            the ring's zigzag share of a sequence is split contiguously over the Ulysses ranks.
//
//   tokens (B, T) ─ index_select(context_positions) ─► (B, T') ─► embed ─► blocks ─► loss
//                                                   each block: attention ◄─ cp group ─► ...
//
// Parameters are whole on every cp rank (their gradients are averaged over dp x cp), so
// checkpoints do not depend on cp. Dimension keys: B batch, H query heads, K key/value heads
// (of this tp rank), T sequence (T' this rank's share), D head size.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "cairn/parallel/plan.h"

namespace cairn::comm {
class Group;
}
namespace cairn::model {
class ContextParallelHooks;
}

namespace cairn::parallel {

// Where a rank sits on the cp axis: its Ulysses and ring coordinates (ulysses * ring = cp; a
// kind without one of them has degree 1 there).
struct ContextSplit {
  int ulysses = 1, ring = 1;
  int ulysses_rank = 0, ring_rank = 0;
  int size() const { return ulysses * ring; }
};

// What a rank's context-parallel communication cost since its owner last reset it: the time
// it was blocked (all-to-alls, and ring transfers not yet done when their block's computation
// ended), the bytes it sent and its messages.
struct ContextCommStats {
  double wait_s = 0;
  int64_t bytes = 0;
  int64_t messages = 0;
};

// Why a sequence of T tokens cannot be split so ("" when it can): T must be a multiple of
// 2 * ring * ulysses with a ring (two chunks per ring rank), of ulysses without.
std::string context_unfit(int64_t T, const ContextSplit& split);
// The positions in the sequence of T that the rank holds, in the order it holds them: (T / cp)
// int64. REQUIRES: context_unfit(T, split) is "".
torch::Tensor context_positions(int64_t T, const ContextSplit& split);

// The Ulysses exchanges over `g` (size P), autograd functions each the other's backward:
// sequence shards of all heads -> the whole sequence of this rank's heads, and back.
// seq_to_heads: q (B, H, T', D), k, v (B, K, T', D) -> q (B, H/P, P T', D), k, v (B, K/P, P T', D),
// one all-to-all for the three; rank j gets heads [j H/P, (j+1) H/P) (and the matching key/value
// heads), and the sequence in rank order. REQUIRES: H and K divisible by P.
// Both count their exchanges in `stats` when given (in backward too).
std::vector<torch::Tensor> ulysses_seq_to_heads(const torch::Tensor& q, const torch::Tensor& k,
                                                const torch::Tensor& v, comm::Group* g,
                                                ContextCommStats* stats = nullptr);
// heads_to_seq: y (B, H/P, P T', D) -> (B, H, T', D).
torch::Tensor ulysses_heads_to_seq(const torch::Tensor& y, comm::Group* g,
                                   ContextCommStats* stats = nullptr);

// Causal ring attention over `g` (size R): this rank's q (B, H, 2c, D), k, v (B, K, 2c, D) hold
// zigzag chunks ring_rank and 2R-1-ring_rank (each of c tokens) of a sequence of 2Rc. Returns
// the attention output (B, H, 2c, D) in q's dtype, as an autograd function. Computes in fp32.
// Forward: R - 1 key/value hops; backward: R - 1 key/value hops and R hops of their gradients.
// With `overlap` each hop travels while a block is computed; without, it is waited for at once
// (the same result: a measure of what the overlap hides). Hops are counted in `stats`.
// Each block is computed in tiles of `tile_rows` query rows: the scores a rank holds at once
// are a tile's, (B, H, tile_rows, <= 2c) fp32.
inline constexpr int64_t kRingTileRows = 256;
torch::Tensor ring_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             comm::Group* g, bool overlap = true, ContextCommStats* stats = nullptr,
                             int64_t tile_rows = kRingTileRows);
// The forward alone, without a graph: output (B, H, 2c, D) fp32 and the log-sum-exp of each
// query row's scaled scores over the keys it sees, (B, H, 2c) fp32 (tests).
std::pair<torch::Tensor, torch::Tensor> ring_attention_forward(const torch::Tensor& q,
                                                               const torch::Tensor& k,
                                                               const torch::Tensor& v,
                                                               comm::Group* g);

// The hooks that run a model context-parallel: `ulysses` (null: degree 1) inside, `ring` (null:
// degree 1) across. Positions by context_positions. `overlap` as ring_attention's; every
// exchange is counted in `stats` (may be null).
std::shared_ptr<model::ContextParallelHooks> make_context_parallel_hooks(
    comm::Group* ulysses, comm::Group* ring, bool overlap = true,
    std::shared_ptr<ContextCommStats> stats = nullptr);
// The split those groups make.
ContextSplit context_split(comm::Group* ulysses, comm::Group* ring);

}  // namespace cairn::parallel
