// Data parallelism with an owned AdamW: DDP (zero_stage 0), ZeRO-1 (optimizer state sharded
// over the data-parallel group) and ZeRO-2 (gradients too: each bucket is reduced as soon as
// it is complete, every micro-batch, and a rank keeps only its shard of the result).
//
// Parameters and gradients are moved into flat buckets (parameters become views into them,
// gradients accumulate in place into bucket views). On the backward pass that ends a step,
// each bucket's all-reduce starts as soon as its last gradient has been accumulated, in bucket
// order, so communication overlaps the rest of the backward pass. Works with one process too
// (no group): the same buckets and update, no communication.
//
// Collective-ordering contract: every rank of the group calls broadcast_parameters,
// finish_backward (after a synced backward), clip_grad_norm, step and gather_state in the
// same order.
#pragma once

#include <torch/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cairn/core/status.h"

namespace cairn::comm {
class Group;
}

namespace cairn::parallel {

struct AdamHyper {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

struct DataParallelOptions {
  int zero_stage = 0;                       // 0 = DDP, 1 = + optimizer state sharded,
                                            // 2 = + gradients sharded
  int64_t bucket_bytes = int64_t(8) << 20;  // gradient bucket size
  AdamHyper adam;
  // ZeRO-2: reduce the gradients when flush_grads() is called instead of as autograd makes
  // them, for a schedule whose weight gradients come in a later pass of their own (zb-h1).
  bool reduce_on_flush = false;
};

struct MemoryReport {
  int64_t params = 0;      // parameters (unpadded count)
  double param_bytes = 0;  // bytes this rank holds, per parameter
  double grad_bytes = 0;
  double optimizer_bytes = 0;
  double total() const { return param_bytes + grad_bytes + optimizer_bytes; }
};

class DataParallel {
 public:
  using NamedParams = std::vector<std::pair<std::string, torch::Tensor>>;
  using DecayFn = std::function<bool(const std::string&, const torch::Tensor&)>;

  // Takes over the storage of `params` (fp32, CPU). `group` is the data-parallel group, or
  // null for one process; it must outlive this object.
  DataParallel(NamedParams params, DecayFn decays, comm::Group* group, DataParallelOptions options);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Copies rank 0's parameters to every rank.
  void broadcast_parameters();
  // Zeroes every gradient (they stay defined: views into the buckets).
  void zero_grad();
  // Whether the next backward reduces gradients across ranks (true for the last micro-batch
  // of a step). REQUIRES: called before that backward.
  void set_sync(bool on);
  // After the synced backward: waits for every bucket and averages gradients over ranks.
  void finish_backward();
  // With options.reduce_on_flush under ZeRO-2: starts reducing every gradient made since the
  // last call (the buckets holding one, in order) and frees them; this rank keeps its shard of
  // the sums. Collective over the group (every rank calls it at the same points); a no-op when
  // gradients are not sharded (they accumulate in the buckets until finish_backward).
  void flush_grads();
  // Multiplies the gradients (this rank's shards under ZeRO-2) by `factor`.
  void scale_grads(double factor);
  // Scales gradients so their global norm is at most max_norm; returns the norm before.
  double clip_grad_norm(double max_norm);
  // The same for a norm the caller computed over more than these gradients (tensor
  // parallelism), e.g. from grad_parts below.
  void clip_to(double norm, double max_norm);
  // After finish_backward: the gradient of every parameter `select` picks (by name) as this rank
  // holds it: whole, or under ZeRO-2 the part in this rank's shards (then the parts of all
  // ranks together are the whole). Views: writing into them changes the gradients.
  std::vector<torch::Tensor> grad_parts(const std::function<bool(const std::string&)>& select);
  // Whether each rank holds only a part of the gradients (ZeRO-2 over several ranks).
  bool shards_gradients() const;
  // One AdamW update (the same update as torch.optim.AdamW) with learning rate `lr`.
  void step(double lr);
  int64_t step_count() const;

  // The whole optimizer state, "<param>.exp_avg" / "<param>.exp_avg_sq", gathered on every
  // rank (collective). Without sharding the tensors are views of the live state: copy them
  // before the next step() if they must outlive it.
  NamedParams gather_state();
  // Restores from whole-state tensors (any world size wrote them); checks everything first.
  Status load_state(const std::map<std::string, torch::Tensor>& tensors, const std::string& prefix,
                    int64_t step_count);
  MemoryReport memory_report() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace cairn::parallel
