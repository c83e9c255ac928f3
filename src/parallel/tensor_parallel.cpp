// Tensor parallelism's region functions, vocabulary-parallel embedding and cross-entropy.
// See cairn/parallel/tensor_parallel.h. Shapes: N rows, C channels, Vl local vocabulary rows.
#include "cairn/parallel/tensor_parallel.h"

#include <torch/torch.h>

#include <cstdint>
#include <limits>

#include "cairn/comm/group.h"
#include "cairn/model/fused_cross_entropy.h"
#include "cairn/model/head_chunk.h"
#include "cairn/model/language_model.h"
#include "cairn/model/parallel_hooks.h"
#include "cairn/parallel/plan.h"

namespace cairn::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool active(comm::Group* g) { return g && g->size() > 1; }

// A group pointer through autograd's saved data (which holds IValues only).
int64_t pack(comm::Group* g) { return int64_t(reinterpret_cast<intptr_t>(g)); }
comm::Group* unpack(AutogradContext* ctx) {
  return reinterpret_cast<comm::Group*>(intptr_t(ctx->saved_data["group"].toInt()));
}

torch::Tensor all_reduce(const torch::Tensor& x, comm::Group* g) {
  auto out = x.contiguous().clone();
  g->allreduce(out);
  return out;
}

// The concatenation along `dim` of every rank's x, in rank order.
torch::Tensor all_gather(const torch::Tensor& x, comm::Group* g, int64_t dim) {
  auto in = x.transpose(0, dim).contiguous();  // (n, ...)
  std::vector<int64_t> shape = in.sizes().vec();
  shape[0] *= g->size();
  auto out = torch::empty(shape, in.options());  // (size * n, ...)
  auto flat = out.view({-1});
  g->allgather(flat, in.view({-1}));
  return out.transpose(0, dim).contiguous();
}

// This rank's chunk along `dim` of the sum over ranks of x.
torch::Tensor reduce_scatter(const torch::Tensor& x, comm::Group* g, int64_t dim) {
  const int64_t full = x.size(dim), size = g->size();
  TORCH_CHECK(full % size == 0, "reduce-scatter along dimension ", dim, ": extent ", full,
              " is not divisible by the group size ", size);
  auto in = x.transpose(0, dim).contiguous().clone();  // (full, ...), scratch
  std::vector<int64_t> shape = in.sizes().vec();
  shape[0] = full / size;
  auto out = torch::empty(shape, in.options());
  auto flat_in = in.view({-1});
  auto flat_out = out.view({-1});
  g->reduce_scatter(flat_out, flat_in);
  return out.transpose(0, dim).contiguous();
}

torch::Tensor chunk_of(const torch::Tensor& x, comm::Group* g, int64_t dim) {
  const int64_t full = x.size(dim), size = g->size();
  TORCH_CHECK(full % size == 0, "split along dimension ", dim, ": extent ", full,
              " is not divisible by the group size ", size);
  return x.narrow(dim, g->rank() * (full / size), full / size).contiguous();
}

struct CopyToTp : torch::autograd::Function<CopyToTp> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    return x.view_as(x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    return {all_reduce(g[0], unpack(ctx)), torch::Tensor()};
  }
};

struct ReduceFromTp : torch::autograd::Function<ReduceFromTp> {
  static torch::Tensor forward(AutogradContext*, const torch::Tensor& x, int64_t group) {
    return all_reduce(x, reinterpret_cast<comm::Group*>(intptr_t(group)));
  }
  static variable_list backward(AutogradContext*, variable_list g) {
    return {g[0], torch::Tensor()};
  }
};

struct GatherSequence : torch::autograd::Function<GatherSequence> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group,
                               int64_t dim) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["dim"] = dim;
    return all_gather(x, reinterpret_cast<comm::Group*>(intptr_t(group)), dim);
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    return {reduce_scatter(g[0], unpack(ctx), ctx->saved_data["dim"].toInt()), torch::Tensor(),
            torch::Tensor()};
  }
};

struct ReduceScatterSequence : torch::autograd::Function<ReduceScatterSequence> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group,
                               int64_t dim) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["dim"] = dim;
    return reduce_scatter(x, reinterpret_cast<comm::Group*>(intptr_t(group)), dim);
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    return {all_gather(g[0], unpack(ctx), ctx->saved_data["dim"].toInt()), torch::Tensor(),
            torch::Tensor()};
  }
};

struct SplitSequence : torch::autograd::Function<SplitSequence> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group,
                               int64_t dim) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["dim"] = dim;
    return chunk_of(x, reinterpret_cast<comm::Group*>(intptr_t(group)), dim);
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    return {all_gather(g[0], unpack(ctx), ctx->saved_data["dim"].toInt()), torch::Tensor(),
            torch::Tensor()};
  }
};

// The vocabulary-parallel fused linear + cross-entropy (see the header), chunk by chunk of
// rows: the chunk's logits on this rank's rows and their local softmax, each row's maximum
// reduced over the group, then its sum of exponentials and target logit (one collective of 2n
// values), its loss; then, when
// a gradient is wanted, the same logits turned into softmax - one_hot and multiplied back into
// the gradients of h (this rank's share) and w (its rows). No logits are recomputed.
struct VocabParallelCrossEntropy : torch::autograd::Function<VocabParallelCrossEntropy> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& h_in,
                               const torch::Tensor& w, const torch::Tensor& targets, int64_t vocab,
                               int64_t start, int64_t group, int64_t chunk_rows,
                               int64_t ignore_index, bool need_h, bool need_w) {
    auto* g = reinterpret_cast<comm::Group*>(intptr_t(group));
    const int64_t N = h_in.size(0), C = h_in.size(1), Vl = w.size(0);
    const int64_t real = std::clamp<int64_t>(vocab - start, 0, Vl);  // rows that are not padding
    auto h = h_in.contiguous();                                      // (N, C)
    auto valid = targets.ne(ignore_index);                           // (N)
    auto tgt = targets.masked_fill(valid.logical_not(), 0);          // (N) global ids
    auto mine = valid.logical_and(tgt.ge(start)).logical_and(tgt.lt(start + real));  // (N)
    auto local_tgt = (tgt - start).masked_fill(mine.logical_not(), 0).unsqueeze(1);  // (N, 1)
    const int64_t count = valid.sum().item<int64_t>();
    const double inv =
        count > 0 ? 1.0 / static_cast<double>(count) : std::numeric_limits<double>::quiet_NaN();
    const bool any_grad = (need_h || need_w) && count > 0;
    const auto fopt = h.options().dtype(torch::kFloat);
    const float neg_inf = -std::numeric_limits<float>::infinity();
    torch::Tensor gh, gw;
    if (any_grad && need_h) gh = torch::empty({N, C}, h.options());
    if (any_grad && need_w) gw = torch::zeros(w.sizes(), fopt);
    auto total = torch::zeros({}, fopt.dtype(torch::kDouble));
    auto wt = w.t();  // (C, Vl)
    for (int64_t r = 0; r < N; r += chunk_rows) {
      const int64_t n = std::min(chunk_rows, N - r);
      auto hc = h.narrow(0, r, n);  // (n, C)
      auto z = torch::mm(hc, wt);   // (n, Vl)
      if (z.scalar_type() != torch::kFloat) z = z.to(torch::kFloat);
      if (real < Vl) z.narrow(1, real, Vl - real).fill_(neg_inf);  // padding: no probability
      auto tc = local_tgt.narrow(0, r, n);
      auto mc = mine.narrow(0, r, n), vc = valid.narrow(0, r, n);
      auto picked = z.gather(1, tc).squeeze(1).masked_fill(mc.logical_not(), 0);  // (n)
      // This rank's softmax in place (one pass per row, the row in cache): p_l = exp(z - m_l)
      // / s_l with m_l the row's local maximum and s_l = 1 / p_l at that maximum. The whole
      // vocabulary's softmax is then p_l scaled by f = s_l exp(m_l - M) / S (M the maximum over
      // the group, S the sum of every rank's s_l exp(m_l - M)): three passes over the chunk
      // (maximum, softmax, scaling) instead of one per element-wise operation.
      torch::Tensor m, share;  // (n)
      if (real > 0) {
        auto [mx, arg] = z.max(1);
        at::_softmax_out(z, z, 1, false);
        m = mx;
        share = z.gather(1, arg.unsqueeze(1)).squeeze(1).reciprocal_();  // s_l
      } else {  // a rank holding padding only: no probability, nothing to the sums
        m = torch::full({n}, neg_inf, fopt);
        share = torch::zeros({n}, fopt);
        z.zero_();
      }
      auto big = m.clone();
      if (active(g)) g->allreduce_max(big);       // M, the row maximum over the whole vocabulary
      share.mul_(m.sub_(big).exp_());             // s_l exp(m_l - M)
      auto sums = torch::stack({share, picked});  // (2, n): sum of exponentials, target logit
      if (active(g)) g->allreduce(sums);
      auto s = sums[0], t = sums[1];
      total.add_(s.log().add_(big).sub_(t).masked_fill_(vc.logical_not(), 0).sum(torch::kDouble));
      if (!any_grad) continue;
      auto p = z.mul_(share.div_(s).unsqueeze(1));  // the whole vocabulary's softmax
      p.scatter_add_(1, tc, mc.to(torch::kFloat).neg().unsqueeze(1));
      model::add_chunk_gradients(p, vc, hc, w, gh, gw, r, inv);
    }
    if (gw.defined() && gw.scalar_type() != w.scalar_type()) gw = gw.to(w.scalar_type());
    ctx->save_for_backward({gh, gw});
    return total.mul_(inv).to(torch::kFloat);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& go = grads[0];
    auto scale = [&](const torch::Tensor& x) {
      return x.defined() ? x * go.to(x.scalar_type()) : torch::Tensor();
    };
    variable_list out(11);
    out[0] = scale(saved[0]);
    out[1] = scale(saved[1]);
    return out;
  }
};

}  // namespace

torch::Tensor copy_to_tp(const torch::Tensor& x, comm::Group* tp) {
  return active(tp) ? CopyToTp::apply(x, pack(tp)) : x;
}

torch::Tensor reduce_from_tp(const torch::Tensor& x, comm::Group* tp) {
  return active(tp) ? ReduceFromTp::apply(x, pack(tp)) : x;
}

torch::Tensor gather_sequence(const torch::Tensor& x, comm::Group* tp, int64_t dim) {
  return active(tp) ? GatherSequence::apply(x, pack(tp), dim) : x;
}

torch::Tensor reduce_scatter_sequence(const torch::Tensor& x, comm::Group* tp, int64_t dim) {
  return active(tp) ? ReduceScatterSequence::apply(x, pack(tp), dim) : x;
}

torch::Tensor split_sequence(const torch::Tensor& x, comm::Group* tp, int64_t dim) {
  return active(tp) ? SplitSequence::apply(x, pack(tp), dim) : x;
}

VocabShard vocab_shard(int64_t vocab, int rank, int tp) {
  TORCH_CHECK(vocab >= 1 && tp >= 1 && rank >= 0 && rank < tp, "vocab_shard: vocab ", vocab,
              ", rank ", rank, " of ", tp);
  const int64_t local = (vocab + tp - 1) / tp;
  return {vocab, rank * local, local};
}

torch::Tensor vocab_parallel_embedding(const torch::Tensor& idx, const torch::Tensor& weight,
                                       const VocabShard& shard, comm::Group* tp,
                                       bool sequence_parallel) {
  TORCH_CHECK(idx.dim() == 2 && idx.scalar_type() == torch::kLong,
              "vocab_parallel_embedding: idx must be (B, T) int64, got ", idx.scalar_type(), " ",
              idx.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == shard.local,
              "vocab_parallel_embedding: weight must hold ", shard.local, " rows, got ",
              weight.sizes());
  auto mine = idx.ge(shard.start).logical_and(idx.lt(shard.start + shard.local));  // (B, T)
  auto local = (idx - shard.start).masked_fill(mine.logical_not(), 0);             // (B, T)
  auto e = torch::embedding(weight, local).masked_fill(mine.logical_not().unsqueeze(-1), 0);
  return sequence_parallel ? reduce_scatter_sequence(e, tp, 1) : reduce_from_tp(e, tp);
}

torch::Tensor vocab_parallel_cross_entropy(const torch::Tensor& h, const torch::Tensor& w,
                                           const torch::Tensor& targets, const VocabShard& shard,
                                           comm::Group* tp, int64_t chunk_rows,
                                           int64_t ignore_index) {
  TORCH_CHECK(h.dim() == 2 && w.dim() == 2 && h.size(1) == w.size(1) && w.size(0) == shard.local,
              "vocab_parallel_cross_entropy: h must be (N, C) and w (", shard.local, ", C), got ",
              h.sizes(), " and ", w.sizes());
  TORCH_CHECK(h.is_floating_point() && h.scalar_type() == w.scalar_type(),
              "vocab_parallel_cross_entropy: h and w must share one floating dtype");
  TORCH_CHECK(
      targets.dim() == 1 && targets.size(0) == h.size(0) && targets.scalar_type() == torch::kLong,
      "vocab_parallel_cross_entropy: targets must be int64 (N) with N=", h.size(0));
  TORCH_CHECK(chunk_rows >= 1, "vocab_parallel_cross_entropy: chunk_rows must be >= 1");
  if (targets.numel() > 0) {
    auto bad =
        targets.ne(ignore_index).logical_and(targets.lt(0).logical_or(targets.ge(shard.vocab)));
    TORCH_CHECK(!bad.any().item<bool>(), "vocab_parallel_cross_entropy: a target is outside [0, ",
                shard.vocab, ") and is not ignore_index=", ignore_index);
  }
  const bool grad = torch::GradMode::is_enabled();
  return VocabParallelCrossEntropy::apply(h, w, targets, shard.vocab, shard.start, pack(tp),
                                          chunk_rows, ignore_index, grad && h.requires_grad(),
                                          grad && w.requires_grad());
}

// --- parameters ----------------------------------------------------------------------------

std::string tp_unfit(const model::ModelConfig& c, int tp) {
  if (tp < 1) return "tp " + std::to_string(tp) + " must be at least 1";
  auto divides = [tp](int64_t n) { return n % tp == 0; };
  // Key/value heads are split (a multiple of tp) or replicated (dividing tp).
  auto kv_fit = [&c](int t) { return c.kv_heads() % t == 0 || t % c.kv_heads() == 0; };
  std::string ok;
  for (int t : tp_that_fit(c)) ok += (ok.empty() ? "" : ", ") + std::to_string(t);
  auto why = [&](const std::string& what) {
    return what + " is not a multiple of tp " + std::to_string(tp) +
           " (tp that fit this model: " + ok + ")";
  };
  if (!divides(c.n_head)) return why("model.n_head " + std::to_string(c.n_head));
  if (!kv_fit(tp))
    return "the key/value heads (" + std::to_string(c.kv_heads()) +
           ") are neither a multiple of tp " + std::to_string(tp) +
           " nor a divisor of it (tp that fit this model: " + ok + ")";
  if (!divides(c.ffn_dim())) return why("the MLP width " + std::to_string(c.ffn_dim()));
  return "";
}

int tp_kv_replicas(const model::ModelConfig& c, int tp) {
  return c.kv_heads() < tp ? tp / int(c.kv_heads()) : 1;
}

bool tp_kv_replicated(const model::ParamSpec& spec, const model::ModelConfig& c, int tp) {
  return (spec.role == model::ParamRole::kKey || spec.role == model::ParamRole::kValue) &&
         tp_kv_replicas(c, tp) > 1;
}

std::vector<int64_t> tp_local_shape(const model::ParamSpec& spec, const model::ModelConfig& c,
                                    int tp) {
  std::vector<int64_t> shape = spec.shape;
  if (tp_kv_replicated(spec, c, tp)) {
    shape[0] = c.head_dim();  // one key/value head
    return shape;
  }
  switch (spec.tp) {
    case model::TpSplit::kReplicated:
      break;
    case model::TpSplit::kColumn:
      shape[0] /= tp;
      break;
    case model::TpSplit::kRow:
      shape[1] /= tp;
      break;
    case model::TpSplit::kVocab:
      shape[0] = (shape[0] + tp - 1) / tp;
      break;
  }
  return shape;
}

torch::Tensor tp_slice(const torch::Tensor& full, const model::ParamSpec& spec,
                       const model::ModelConfig& config, int rank, int tp) {
  TORCH_CHECK(full.sizes().equals(spec.shape), "tp_slice: ", spec.name, " is ", full.sizes(),
              ", its spec says ", c10::IntArrayRef(spec.shape));
  torch::NoGradGuard no_grad;
  if (tp_kv_replicated(spec, config, tp)) {  // the head of this rank's query heads
    const int64_t d = config.head_dim();
    return full.narrow(0, (rank / tp_kv_replicas(config, tp)) * d, d).clone();
  }
  switch (spec.tp) {
    case model::TpSplit::kReplicated:
      return full.clone();
    case model::TpSplit::kColumn: {
      const int64_t block = spec.shape[0] / spec.tp_blocks, part = block / tp;
      std::vector<torch::Tensor> parts;
      for (int b = 0; b < spec.tp_blocks; ++b)
        parts.push_back(full.narrow(0, b * block + rank * part, part));
      return torch::cat(parts, 0).contiguous();
    }
    case model::TpSplit::kRow: {
      const int64_t part = spec.shape[1] / tp;
      return full.narrow(1, rank * part, part).contiguous();
    }
    case model::TpSplit::kVocab: {
      const VocabShard v = vocab_shard(spec.shape[0], rank, tp);
      auto out = torch::zeros(tp_local_shape(spec, config, tp), full.options());
      const int64_t real = std::clamp<int64_t>(v.vocab - v.start, 0, v.local);
      if (real > 0) out.narrow(0, 0, real).copy_(full.narrow(0, v.start, real));
      return out;
    }
  }
  TORCH_CHECK(false, "tp_slice: unknown split");
}

std::vector<TpPiece> tp_pieces(const torch::Tensor& local, const model::ParamSpec& spec,
                               const model::ModelConfig& config, int rank, int tp) {
  std::vector<std::pair<int64_t, int64_t>> whole;
  for (int64_t d : spec.shape) whole.emplace_back(0, d);
  std::vector<TpPiece> out;
  if (tp_kv_replicated(spec, config, tp)) {  // the first replica of each head writes it
    const int replicas = tp_kv_replicas(config, tp);
    const int64_t d = config.head_dim(), head = rank / replicas;
    if (rank % replicas == 0) {
      whole[0] = {head * d, (head + 1) * d};
      out.push_back({local, whole});
    }
    return out;
  }
  switch (spec.tp) {
    case model::TpSplit::kReplicated:
      if (rank == 0) out.push_back({local, whole});
      break;
    case model::TpSplit::kColumn: {
      const int64_t block = spec.shape[0] / spec.tp_blocks, part = block / tp;
      for (int b = 0; b < spec.tp_blocks; ++b) {
        auto slice = whole;
        slice[0] = {b * block + rank * part, b * block + (rank + 1) * part};
        out.push_back({local.narrow(0, b * part, part), slice});
      }
      break;
    }
    case model::TpSplit::kRow: {
      const int64_t part = spec.shape[1] / tp;
      auto slice = whole;
      slice[1] = {rank * part, (rank + 1) * part};
      out.push_back({local, slice});
      break;
    }
    case model::TpSplit::kVocab: {
      const VocabShard v = vocab_shard(spec.shape[0], rank, tp);
      const int64_t real = std::clamp<int64_t>(v.vocab - v.start, 0, v.local);
      if (real == 0) break;
      auto slice = whole;
      slice[0] = {v.start, v.start + real};
      out.push_back({local.narrow(0, 0, real), slice});
      break;
    }
  }
  return out;
}

torch::Tensor tp_gather(const torch::Tensor& local, const model::ParamSpec& spec,
                        const model::ModelConfig& config, comm::Group* tp) {
  torch::NoGradGuard no_grad;
  if (spec.tp == model::TpSplit::kReplicated || !active(tp)) return local.detach().clone();
  const int size = tp->size();
  auto all = torch::empty({local.numel() * size}, local.options());
  tp->allgather(all, local.detach().contiguous().view({-1}));
  std::vector<torch::Tensor> pieces;  // rank r's slice, in its local shape
  for (int r = 0; r < size; ++r)
    pieces.push_back(all.narrow(0, r * local.numel(), local.numel()).view(local.sizes()));
  if (tp_kv_replicated(spec, config, size)) {  // each head from its first replica
    std::vector<torch::Tensor> heads;
    for (int r = 0; r < size; r += tp_kv_replicas(config, size)) heads.push_back(pieces[size_t(r)]);
    return torch::cat(heads, 0);
  }
  switch (spec.tp) {
    case model::TpSplit::kColumn: {
      const int64_t part = local.size(0) / spec.tp_blocks;
      std::vector<torch::Tensor> rows;
      for (int b = 0; b < spec.tp_blocks; ++b)
        for (int r = 0; r < size; ++r) rows.push_back(pieces[size_t(r)].narrow(0, b * part, part));
      return torch::cat(rows, 0);
    }
    case model::TpSplit::kRow:
      return torch::cat(pieces, 1);
    case model::TpSplit::kVocab:
      return torch::cat(pieces, 0).narrow(0, 0, spec.shape[0]).contiguous();
    case model::TpSplit::kReplicated:
      break;
  }
  return local.detach().clone();
}

namespace {

class Hooks : public model::TensorParallelHooks {
 public:
  Hooks(const model::ModelConfig& c, comm::Group* tp, bool sp)
      : tp_(tp), sp_(sp), vocab_(vocab_shard(c.vocab_size, tp->rank(), tp->size())) {}

  torch::Tensor enter(const torch::Tensor& x) override {
    return sp_ ? gather_sequence(x, tp_, 1) : copy_to_tp(x, tp_);
  }
  torch::Tensor leave(const torch::Tensor& y) override {
    return sp_ ? reduce_scatter_sequence(y, tp_, 1) : reduce_from_tp(y, tp_);
  }
  torch::Tensor embed_tokens(const torch::Tensor& idx, const torch::Tensor& table) override {
    if (sp_) check_sequence(idx.size(1));
    return vocab_parallel_embedding(idx, table, vocab_, tp_, sp_);
  }
  torch::Tensor positions(int64_t T, const torch::TensorOptions& options) override {
    if (!sp_) return torch::arange(T, options);
    check_sequence(T);
    const int64_t n = T / tp_->size();
    return torch::arange(tp_->rank() * n, (tp_->rank() + 1) * n, options);
  }
  torch::Tensor head_loss(const torch::Tensor& h, const torch::Tensor& head,
                          const torch::Tensor& targets) override {
    auto whole = enter(h);  // (B, T, C): its gradient is summed over the group
    return vocab_parallel_cross_entropy(whole.reshape({-1, whole.size(2)}), head,
                                        targets.reshape({-1}), vocab_, tp_,
                                        model::head_chunk_rows(head.size(0)));
  }
  torch::Tensor logits(const torch::Tensor& h, const torch::Tensor& head) override {
    auto local = torch::linear(enter(h), head);  // (B, T, Vl)
    return gather_sequence(local, tp_, 2).narrow(2, 0, vocab_.vocab);
  }

 private:
  void check_sequence(int64_t T) const {
    TORCH_CHECK(T % tp_->size() == 0, "sequence parallelism: the sequence length ", T,
                " is not a multiple of tp ", tp_->size());
  }
  comm::Group* tp_;
  bool sp_;
  VocabShard vocab_;
};

}  // namespace

std::shared_ptr<model::TensorParallelHooks> make_tensor_parallel_hooks(
    const model::ModelConfig& config, comm::Group* tp, bool sequence_parallel) {
  TORCH_CHECK(tp, "make_tensor_parallel_hooks: no group");
  return std::make_shared<Hooks>(config, tp, sequence_parallel);
}

void shard_for_tensor_parallel(model::LanguageModel& model, comm::Group* tp,
                               bool sequence_parallel) {
  const model::ModelConfig& c = model.config();
  const std::string unfit = tp_unfit(c, tp->size());
  TORCH_CHECK(unfit.empty(), "tensor parallelism: ", unfit);
  const std::vector<model::ParamSpec> specs = model::param_specs(c);
  torch::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    const model::ParamSpec* spec = model::find_spec(specs, item.key());
    TORCH_CHECK(spec, "shard_for_tensor_parallel: no spec for ", item.key());
    if (item.value().numel() == 0) continue;  // a placeholder of a part another rank holds
    item.value().set_data(tp_slice(item.value(), *spec, c, tp->rank(), tp->size()));
  }
  model.set_tensor_parallel(make_tensor_parallel_hooks(c, tp, sequence_parallel));
}

}  // namespace cairn::parallel
