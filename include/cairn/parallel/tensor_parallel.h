// Tensor parallelism's building blocks over one tensor-parallel group (Megatron's layout):
// the four region functions that make a column- and row-parallel linear pair exact, their
// sequence-parallel counterparts, and the vocabulary-parallel embedding and fused
// linear + cross-entropy that never gather the full vocabulary.
//
//   replicated x ─ copy_to_tp ─► column-parallel linears (output features split) ─► local math
//      on this rank's heads / MLP columns ─► row-parallel linear (input features split) ─►
//      reduce_from_tp ─► replicated y
//   with sequence parallelism the replicated x and y are sequence shards instead:
//      x_shard ─ gather_sequence ─► ... ─► reduce_scatter_sequence ─► y_shard
//
//   function                 forward                      backward
//   copy_to_tp               identity                     all-reduce (sum)
//   reduce_from_tp           all-reduce (sum)             identity
//   gather_sequence          all-gather along dim         reduce-scatter along dim
//   reduce_scatter_sequence  reduce-scatter along dim     all-gather along dim
//   split_sequence           keep this rank's chunk       all-gather along dim
//
// Every function is an autograd function; a null group (or one of size 1) makes each of them
// the identity. Collectives are issued in the same order on every rank of the group.
// Dimension keys: N rows, C channels, V vocabulary (Vp padded, Vl = Vp / tp local rows).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cairn/model/param_specs.h"

namespace cairn::comm {
class Group;
}
namespace cairn::model {
class LanguageModel;
class TensorParallelHooks;
}  // namespace cairn::model

namespace cairn::parallel {

torch::Tensor copy_to_tp(const torch::Tensor& x, comm::Group* tp);
torch::Tensor reduce_from_tp(const torch::Tensor& x, comm::Group* tp);
// REQUIRES: x.size(dim) * tp size along `dim` is the full extent (all-gather), and the full
// extent divisible by the tp size (reduce-scatter and split).
torch::Tensor gather_sequence(const torch::Tensor& x, comm::Group* tp, int64_t dim);
torch::Tensor reduce_scatter_sequence(const torch::Tensor& x, comm::Group* tp, int64_t dim);
torch::Tensor split_sequence(const torch::Tensor& x, comm::Group* tp, int64_t dim);

// The vocabulary split: rows [start, start + local) of the padded table Vp = tp * local, of
// which rows >= vocab (the padding) are never a target and never part of a softmax.
struct VocabShard {
  int64_t vocab = 0;  // real vocabulary size
  int64_t start = 0;  // first global row this rank holds
  int64_t local = 0;  // rows this rank holds (Vp / tp)
};
// Rank `rank` of `tp` ranks: Vp = vocab rounded up to a multiple of tp.
VocabShard vocab_shard(int64_t vocab, int rank, int tp);

// Token embeddings from a vocabulary-split table: each rank looks up the ids it holds (others
// give zeros) and the partial rows are summed over the group: all-reduced (replicated output),
// or, with sequence_parallel, reduce-scattered along dimension 1 (a (B, T / tp, C) shard).
// idx (B, T) int64 global ids in [0, vocab); weight (Vl, C) -> (B, T, C) or (B, T / tp, C).
torch::Tensor vocab_parallel_embedding(const torch::Tensor& idx, const torch::Tensor& weight,
                                       const VocabShard& shard, comm::Group* tp,
                                       bool sequence_parallel);

// Mean over rows whose target is not ignore_index of -log softmax(h W^T)[row, target], where
// W is the full (vocab, C) head split by rows over the group and this rank holds w (Vl, C).
// Identical in value to model::fused_linear_cross_entropy on the gathered W (up to summation
// order). The logits are computed in chunks of chunk_rows and never gathered: per row, the
// maximum, then the sum of exponentials and the target's logit are reduced over the group (two
// small collectives per chunk); each chunk's logits become its gradients in place, so the
// head's matmul runs once, as in the one-process fused loss.
// Gradients: w's is this rank's rows, complete; h's is this rank's partial sum (its vocabulary
// rows' share), which the caller reduces over the group: put h through copy_to_tp (or
// gather_sequence under sequence parallelism) before this function.
// h (N, C), w (Vl, C) of one floating dtype, targets (N) int64 in [0, vocab) or ignore_index.
// Returns a float32 scalar, the same on every rank.
torch::Tensor vocab_parallel_cross_entropy(const torch::Tensor& h, const torch::Tensor& w,
                                           const torch::Tensor& targets, const VocabShard& shard,
                                           comm::Group* tp, int64_t chunk_rows = 256,
                                           int64_t ignore_index = -1);

// --- the model's parameters over a tensor-parallel group --------------------------------------
// Why `config`'s model cannot be split over tp ranks ("" when it can): the query heads and the
// MLP width must be multiples of tp, and the key/value heads a multiple of tp (split) or a
// divisor of it (replicated, below).
std::string tp_unfit(const model::ModelConfig& config, int tp);
// Grouped-query attention with fewer key/value heads K than tp ranks: each rank holds the one
// key/value head its query heads use, so tp / K consecutive ranks (its "replicas") hold the same
// head, and their gradients of it are partial sums to be added up over those ranks. 1 when the
// key/value heads are split instead.
int tp_kv_replicas(const model::ModelConfig& config, int tp);
// Whether `spec` is a key or value projection replicated so (tp_kv_replicas > 1).
bool tp_kv_replicated(const model::ParamSpec& spec, const model::ModelConfig& config, int tp);
// The shape of a rank's slice of the parameter `spec` over tp ranks.
std::vector<int64_t> tp_local_shape(const model::ParamSpec& spec, const model::ModelConfig& config,
                                    int tp);
// Rank `rank`'s slice of the whole tensor `full` (a new tensor; padding rows of a vocabulary
// table are zero).
torch::Tensor tp_slice(const torch::Tensor& full, const model::ParamSpec& spec,
                       const model::ModelConfig& config, int rank, int tp);
// Where rank `rank`'s slice `local` (of tp_local_shape) lies in the whole tensor, as
// rectangular pieces: one, or one per block of a blocked column split (GPT-2's q, k, v), each
// a view of `local` with its [begin, end) in every dimension of spec.shape. Vocabulary padding
// rows are in none; a rank holding only padding has no piece. Over the tp ranks the pieces
// cover the whole tensor exactly once (a replicated parameter: rank 0's one piece; a replicated
// key/value head: its first replica's).
struct TpPiece {
  torch::Tensor tensor;
  std::vector<std::pair<int64_t, int64_t>> slice;
};
std::vector<TpPiece> tp_pieces(const torch::Tensor& local, const model::ParamSpec& spec,
                               const model::ModelConfig& config, int rank, int tp);
// The whole tensor from every rank's slice `local` (collective over the group): tp_slice's
// inverse.
torch::Tensor tp_gather(const torch::Tensor& local, const model::ParamSpec& spec,
                        const model::ModelConfig& config, comm::Group* tp);

// The hooks that run `model` tensor-parallel over `tp` (parallel_hooks.h). Under
// sequence parallelism every sequence length must be a multiple of the group's size.
std::shared_ptr<model::TensorParallelHooks> make_tensor_parallel_hooks(
    const model::ModelConfig& config, comm::Group* tp, bool sequence_parallel);
// Replaces every parameter of `model` (whole, the same on every rank) by this rank's slice and
// installs the hooks: the model then computes, over the group, what it computed alone.
void shard_for_tensor_parallel(model::LanguageModel& model, comm::Group* tp,
                               bool sequence_parallel);

}  // namespace cairn::parallel
