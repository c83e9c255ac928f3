// Context parallelism (see the header): the zigzag split, the Ulysses all-to-alls, ring attention
// forward and backward, and the hooks that put them in a model.
//
// Ring attention's shapes: BK = B * K key/value heads, G = H / K query heads per key/value head,
// n query rows and m keys of a block; queries are (BK, G, n, D), keys and values (BK, m, D),
// so that a query group multiplies its shared key/value head without copying it (as
// causal_attention does). Each rank's 2c rows are its two zigzag chunks: rows [0, c) are chunk
// ring_rank, rows [c, 2c) chunk 2R-1-ring_rank. Against the block of rank s:
//   s == r  both chunks, causal by position (the first chunk sees none of the second);
//   s <  r  every query row sees the block's first chunk (earlier), none of its second (later);
//   s >  r  only the second query chunk sees anything, and it sees the whole block;
// so after the first step every block is half the work of a full one, on every rank. A block is
// computed in tiles of query rows, each against the keys it may see (within the own block, up to
// its last row), so that a rank never holds more scores than a tile's and skips the masked
// half of its own block.
#include "cairn/parallel/context_parallel.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <vector>

#include "cairn/comm/group.h"
#include "cairn/model/attention.h"
#include "cairn/model/parallel_hooks.h"

namespace cairn::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

int64_t pack(comm::Group* g) { return int64_t(reinterpret_cast<intptr_t>(g)); }
comm::Group* unpack(const c10::IValue& v) {
  return reinterpret_cast<comm::Group*>(intptr_t(v.toInt()));
}
bool active(comm::Group* g) { return g && g->size() > 1; }

int64_t pack(ContextCommStats* st) { return int64_t(reinterpret_cast<intptr_t>(st)); }
ContextCommStats* unpack_stats(const c10::IValue& v) {
  return reinterpret_cast<ContextCommStats*>(intptr_t(v.toInt()));
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Waits for `p` (if posted), counting the time blocked in `st`.
void wait(comm::Pending& p, ContextCommStats* st) {
  if (!p.valid()) return;
  const double t0 = st ? now_s() : 0;
  p.wait();
  if (st) st->wait_s += now_s() - t0;
}

// One hop around the ring: `t` to rank r+1 while the same-shaped buffer from r-1 arrives.
struct Hop {
  comm::Pending sent, received;
  torch::Tensor out, next;  // out stays alive until it has gone
  ContextCommStats* st = nullptr;
  Hop() = default;
  Hop(comm::Group* g, const torch::Tensor& t, int tag, ContextCommStats* stats)
      : out(t), st(stats) {
    const int R = g->size(), r = g->rank();
    next = torch::empty_like(t);
    sent = g->send_async(t, (r + 1) % R, tag);
    received = g->recv_async(next, (r + R - 1) % R, tag);
    if (st) {
      st->bytes += t.numel() * int64_t(t.element_size());
      st->messages += 1;
    }
  }
  // The buffer from r-1, once both directions are done.
  torch::Tensor finish() {
    wait(sent, st);
    wait(received, st);
    out = torch::Tensor();
    return next;
  }
};

// --- Ulysses ----------------------------------------------------------------------------------

// x (B, P, W, T', D): block j (dimension 1) for rank j -> (B, W, P T', D): every rank's block
// for this rank, in rank order along the sequence.
// One all-to-all, counted in `st` (may be null).
void exchange(torch::Tensor& out, const torch::Tensor& in, comm::Group* g, ContextCommStats* st) {
  const double t0 = st ? now_s() : 0;
  g->all_to_all(out, in);
  if (st) {
    st->wait_s += now_s() - t0;
    st->bytes += in.numel() * int64_t(in.element_size()) / g->size() * (g->size() - 1);
    st->messages += 1;
  }
}

torch::Tensor to_heads(const torch::Tensor& x, comm::Group* g, ContextCommStats* st) {
  auto in = x.permute({1, 0, 2, 3, 4}).contiguous();  // (P, B, W, T', D)
  auto out = torch::empty_like(in);
  exchange(out, in, g, st);
  const int64_t P = x.size(1), B = x.size(0), W = x.size(2), Tl = x.size(3), D = x.size(4);
  return out.permute({1, 2, 0, 3, 4}).reshape({B, W, P * Tl, D});
}

// to_heads' inverse: y (B, W, P T', D) -> (B, P, W, T', D).
torch::Tensor to_seq(const torch::Tensor& y, comm::Group* g, ContextCommStats* st) {
  const int64_t P = g->size(), B = y.size(0), W = y.size(1), D = y.size(3);
  TORCH_CHECK(y.size(2) % P == 0, "Ulysses: sequence ", y.size(2), " not divisible by ", P);
  const int64_t Tl = y.size(2) / P;
  auto in = y.reshape({B, W, P, Tl, D}).permute({2, 0, 1, 3, 4}).contiguous();  // (P, B, W, T', D)
  auto out = torch::empty_like(in);
  exchange(out, in, g, st);
  return out.permute({1, 0, 2, 3, 4});  // (B, P, W, T', D)
}

struct SeqToHeads : torch::autograd::Function<SeqToHeads> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, int64_t group, int64_t stats) {
    comm::Group* g = unpack(group);
    ctx->saved_data["stats"] = stats;
    const int64_t P = g->size(), B = q.size(0), Tl = q.size(2), D = q.size(3);
    const int64_t h = q.size(1) / P, kv = k.size(1) / P;
    ctx->saved_data["group"] = group;
    ctx->saved_data["h"] = h;
    ctx->saved_data["kv"] = kv;
    auto packed = torch::cat(
        {q.reshape({B, P, h, Tl, D}), k.reshape({B, P, kv, Tl, D}), v.reshape({B, P, kv, Tl, D})},
        2);  // (B, P, h + 2 kv, T', D)
    auto out = to_heads(packed, g, unpack_stats(stats)).split_with_sizes({h, kv, kv}, 1);
    return {out[0].contiguous(), out[1].contiguous(), out[2].contiguous()};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    comm::Group* g = unpack(ctx->saved_data["group"]);
    const int64_t h = ctx->saved_data["h"].toInt(), kv = ctx->saved_data["kv"].toInt();
    for (size_t i = 0; i < 3; ++i)
      if (!grads[i].defined())
        grads[i] =
            torch::zeros({grads[0].size(0), i == 0 ? h : kv, grads[0].size(2), grads[0].size(3)},
                         grads[0].options());
    auto back = to_seq(torch::cat({grads[0], grads[1], grads[2]}, 1), g,
                       unpack_stats(ctx->saved_data["stats"]));  // (B, P, W, T', D)
    auto parts = back.split_with_sizes({h, kv, kv}, 2);
    auto whole = [&](const torch::Tensor& t) {  // (B, P, w, T', D) -> (B, P w, T', D)
      return t.reshape({t.size(0), t.size(1) * t.size(2), t.size(3), t.size(4)});
    };
    return {whole(parts[0]), whole(parts[1]), whole(parts[2]), torch::Tensor(), torch::Tensor()};
  }
};

struct HeadsToSeq : torch::autograd::Function<HeadsToSeq> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& y, int64_t group,
                               int64_t stats) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["stats"] = stats;
    auto s = to_seq(y, unpack(group), unpack_stats(stats));  // (B, P, W, T', D)
    return s.reshape({s.size(0), s.size(1) * s.size(2), s.size(3), s.size(4)});
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    comm::Group* g = unpack(ctx->saved_data["group"]);
    const auto& gy = grads[0];  // (B, H, T', D)
    const int64_t P = g->size();
    return {to_heads(gy.reshape({gy.size(0), P, gy.size(1) / P, gy.size(2), gy.size(3)}), g,
                     unpack_stats(ctx->saved_data["stats"])),
            torch::Tensor(), torch::Tensor()};
  }
};

// --- ring attention ---------------------------------------------------------------------------

// Keys and values travel as one buffer (2, BK, m, D); in backward with their gradients.
struct Block {
  int64_t q_begin, q_rows;  // query rows of the tile
  int64_t k_begin, k_rows;  // the keys of the block they see
  bool causal;              // mask by position (the rank's own block)
};

// The tiles of at most t query rows in which rank r's queries see rank s's block (see the file
// comment); c = rows per chunk.
std::vector<Block> tiles(int r, int s, int64_t c, int64_t t) {
  std::vector<Block> out;
  auto rows = [&](int64_t begin, int64_t end) {
    for (int64_t a = begin; a < end; a += t) {
      const int64_t n = std::min(t, end - a);
      if (s == r)
        out.push_back({a, n, 0, a + n, true});  // up to the tile's last row
      else if (s < r)
        out.push_back({a, n, 0, c, false});
      else
        out.push_back({a, n, 0, 2 * c, false});
    }
  };
  if (s == r) {  // each chunk causally (tiles within a chunk)
    rows(0, c);
    rows(c, 2 * c);
  }
  if (s < r) rows(0, 2 * c);  // every row sees the block's first chunk
  if (s > r) rows(c, 2 * c);  // the second chunk sees the whole block
  return out;
}

// The (2c, 2c) causal mask of a rank's own block (true: hidden): its rows and keys are the two
// chunks r and 2R-1-r, each of c positions.
torch::Tensor own_mask(int r, int R, int64_t c) {
  auto pos = torch::cat({torch::arange(r * c, (r + 1) * c),
                         torch::arange((2 * R - 1 - r) * c, (2 * R - r) * c)});  // (2c)
  return pos.unsqueeze(0) > pos.unsqueeze(1);                                    // key after query
}

struct Shape {
  int64_t B, H, K, G, T2, D;  // T2 = 2c rows on this rank
  int64_t BK() const { return B * K; }
};

Shape shape_of(const torch::Tensor& q, const torch::Tensor& k) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && q.size(1) % k.size(1) == 0 && q.size(2) % 2 == 0,
              "ring attention: q ", q.sizes(), " and k ", k.sizes(),
              " must be (B, H, 2c, D) and (B, K, 2c, D) with K dividing H");
  return {q.size(0), q.size(1), k.size(1), q.size(1) / k.size(1), q.size(2), q.size(3)};
}

// The scaled, masked scores of rows [b.q_begin, +q_rows) against keys [b.k_begin, +k_rows):
// (BK, G, n, m) fp32.
torch::Tensor scores(const torch::Tensor& q, const torch::Tensor& k, const Block& b,
                     const torch::Tensor& mask, double scale) {
  const int64_t BK = q.size(0), G = q.size(1), D = q.size(3);
  auto qb = q.narrow(2, b.q_begin, b.q_rows).reshape({BK, G * b.q_rows, D}) * scale;
  auto s = torch::bmm(qb, k.narrow(1, b.k_begin, b.k_rows).transpose(1, 2));
  s = s.view({BK, G, b.q_rows, b.k_rows});
  if (b.causal)
    s.masked_fill_(mask.narrow(0, b.q_begin, b.q_rows).narrow(1, b.k_begin, b.k_rows),
                   -std::numeric_limits<float>::infinity());
  return s;
}

// How a ring call communicates: its group, whether transfers overlap the computation (false:
// each one is waited for as soon as it is posted, to measure what the overlap hides), and where
// it counts its waits (may be null).
struct RingComm {
  comm::Group* g = nullptr;
  bool overlap = true;
  ContextCommStats* st = nullptr;
  int size() const { return g ? g->size() : 1; }
  int rank() const { return g ? g->rank() : 0; }
  Hop post(const torch::Tensor& t, int tag) const {
    Hop h(g, t, tag, st);
    if (!overlap) h.finish();
    return h;
  }
};

// Forward of every block around the ring: out (BK, G, 2c, D) and lse (BK, G, 2c), fp32.
std::pair<torch::Tensor, torch::Tensor> ring_forward(const torch::Tensor& q, const torch::Tensor& k,
                                                     const torch::Tensor& v, const RingComm& rc,
                                                     double scale, int64_t tile_rows) {
  const int R = rc.size(), r = rc.rank();
  const int64_t BK = q.size(0), G = q.size(1), T2 = q.size(2), D = q.size(3), c = T2 / 2;
  auto out = torch::zeros({BK, G, T2, D}, q.options());
  auto lse = torch::full({BK, G, T2}, -std::numeric_limits<float>::infinity(), q.options());
  const auto mask = own_mask(r, R, c);
  auto cur = torch::stack({k, v});  // (2, BK, 2c, D)
  for (int i = 0; i < R; ++i) {
    const int s = ((r - i) % R + R) % R;
    Hop hop;
    if (i + 1 < R) hop = rc.post(cur, 0);  // the next block travels while this one is computed
    for (const Block& b : tiles(r, s, c, tile_rows)) {
      auto sc = scores(q, cur[0], b, mask, scale);  // (BK, G, n, m)
      auto lb = torch::logsumexp(sc, -1);           // (BK, G, n)
      auto p = sc.sub_(lb.unsqueeze(-1)).exp_();    // (BK, G, n, m)
      auto ob =
          torch::bmm(p.view({BK, G * b.q_rows, b.k_rows}), cur[1].narrow(1, b.k_begin, b.k_rows))
              .view({BK, G, b.q_rows, D});
      auto o = out.narrow(2, b.q_begin, b.q_rows);
      auto l = lse.narrow(2, b.q_begin, b.q_rows);
      auto merged = torch::logaddexp(l, lb);
      o.mul_((l - merged).exp_().unsqueeze(-1)).add_(ob.mul_((lb - merged).exp_().unsqueeze(-1)));
      l.copy_(merged);
    }
    if (i + 1 < R) cur = hop.finish();
  }
  return {out, lse};
}

// (B, H, T, D) -> (BK, G, T, D) fp32 contiguous, and keys/values (B, K, T, D) -> (BK, T, D).
torch::Tensor queries(const torch::Tensor& q, const Shape& d) {
  return q.to(torch::kFloat).contiguous().view({d.BK(), d.G, d.T2, d.D});
}
torch::Tensor keys(const torch::Tensor& k, const Shape& d) {
  return k.to(torch::kFloat).contiguous().view({d.BK(), d.T2, d.D});
}

struct RingAttention : torch::autograd::Function<RingAttention> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& q_in,
                               const torch::Tensor& k_in, const torch::Tensor& v_in, int64_t group,
                               bool overlap, int64_t stats, int64_t tile_rows) {
    const Shape d = shape_of(q_in, k_in);
    const double scale = 1.0 / std::sqrt(double(d.D));
    auto q = queries(q_in, d), k = keys(k_in, d), v = keys(v_in, d);
    auto [out, lse] =
        ring_forward(q, k, v, {unpack(group), overlap, unpack_stats(stats)}, scale, tile_rows);
    ctx->saved_data["group"] = group;
    ctx->saved_data["tile_rows"] = tile_rows;
    ctx->saved_data["overlap"] = overlap;
    ctx->saved_data["stats"] = stats;
    ctx->save_for_backward({q, k, v, out, lse});
    return out.view({d.B, d.H, d.T2, d.D}).to(q_in.scalar_type());
  }

  // Rank r visits the blocks in the forward's order, recomputing each one's probabilities from
  // the saved log-sum-exp. Its queries' gradient stays home; a block's key/value gradient
  // travels with the block: what r adds to block s goes to r+1, which holds block s next, and
  // after R hops every block's gradient is back at its owner. Both hops of a step travel while
  // the next block is computed.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
    const RingComm rc{unpack(ctx->saved_data["group"]), ctx->saved_data["overlap"].toBool(),
                      unpack_stats(ctx->saved_data["stats"])};
    const int R = rc.size(), r = rc.rank();
    const int64_t BK = q.size(0), G = q.size(1), T2 = q.size(2), D = q.size(3), c = T2 / 2;
    const double scale = 1.0 / std::sqrt(double(D));
    const int64_t tile_rows = ctx->saved_data["tile_rows"].toInt();
    const int64_t B = grads[0].size(0), H = grads[0].size(1), K = BK / B;
    auto go = grads[0].to(torch::kFloat).contiguous().view({BK, G, T2, D});
    auto delta = (go * out).sum(-1);  // (BK, G, 2c): rowsum(dO * O)
    auto dq = torch::zeros_like(q);
    const auto mask = own_mask(r, R, c);
    auto kv = torch::stack({k, v});  // (2, BK, 2c, D), travels R - 1 times
    Hop grad_hop;                    // the gradient of the block held, on its way here
    torch::Tensor dkv;
    for (int i = 0; i < R; ++i) {
      const int s = ((r - i) % R + R) % R;
      Hop kv_hop;
      if (i + 1 < R) kv_hop = rc.post(kv, 0);
      auto mine = torch::zeros({2, BK, T2, D}, q.options());  // this rank's part of dk, dv
      for (const Block& b : tiles(r, s, c, tile_rows)) {
        const int64_t n = b.q_rows, m = b.k_rows;
        auto kb = kv[0].narrow(1, b.k_begin, m), vb = kv[1].narrow(1, b.k_begin, m);
        auto p = scores(q, kv[0], b, mask, scale)
                     .sub_(lse.narrow(2, b.q_begin, n).unsqueeze(-1))
                     .exp_()
                     .view({BK, G * n, m});  // (BK, G n, m)
        auto gob = go.narrow(2, b.q_begin, n).reshape({BK, G * n, D});
        mine[1].narrow(1, b.k_begin, m).baddbmm_(p.transpose(1, 2), gob);
        auto ds = torch::bmm(gob, vb.transpose(1, 2));  // dP (BK, G n, m)
        ds.sub_(delta.narrow(2, b.q_begin, n).reshape({BK, G * n, 1})).mul_(p);
        dq.narrow(2, b.q_begin, n).add_(torch::bmm(ds, kb).mul_(scale).view({BK, G, n, D}));
        auto qb = q.narrow(2, b.q_begin, n).reshape({BK, G * n, D});
        mine[0].narrow(1, b.k_begin, m).baddbmm_(ds.transpose(1, 2), qb, 1.0, scale);
      }
      dkv = i == 0 ? mine : grad_hop.finish().add_(mine);  // earlier ranks' parts, plus ours
      if (R > 1) grad_hop = rc.post(dkv, 1);
      if (i + 1 < R) kv = kv_hop.finish();
    }
    if (R > 1) dkv = grad_hop.finish();  // this rank's own block, from every rank
    auto as = [&](const torch::Tensor& t, int64_t heads, const torch::Tensor& like) {
      return t.view({B, heads, T2, D}).to(like.scalar_type());
    };
    return {as(dq, H, grads[0]), as(dkv[0], K, grads[0]), as(dkv[1], K, grads[0]), torch::Tensor(),
            torch::Tensor(),     torch::Tensor(),         torch::Tensor()};
  }
};

// --- hooks ------------------------------------------------------------------------------------

class ContextHooks : public model::ContextParallelHooks {
 public:
  ContextHooks(comm::Group* ulysses, comm::Group* ring, bool overlap,
               std::shared_ptr<ContextCommStats> stats)
      : ulysses_(active(ulysses) ? ulysses : nullptr),
        ring_(active(ring) ? ring : nullptr),
        split_(context_split(ulysses, ring)),
        overlap_(overlap),
        stats_(std::move(stats)) {}

  torch::Tensor positions(int64_t T_local, const torch::TensorOptions& options) override {
    return context_positions(T_local * split_.size(), split_).to(options.device());
  }

  torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k,
                          const torch::Tensor& v) override {
    auto* st = stats_.get();
    if (!ulysses_)
      return ring_ ? ring_attention(q, k, v, ring_, overlap_, st)
                   : model::causal_attention(q, k, v);
    auto heads = ulysses_seq_to_heads(q, k, v, ulysses_, st);
    auto y = ring_ ? ring_attention(heads[0], heads[1], heads[2], ring_, overlap_, st)
                   : model::causal_attention(heads[0], heads[1], heads[2]);
    return ulysses_heads_to_seq(y, ulysses_, st);
  }

 private:
  comm::Group* ulysses_;
  comm::Group* ring_;
  ContextSplit split_;
  bool overlap_;
  std::shared_ptr<ContextCommStats> stats_;
};

}  // namespace

ContextSplit context_split(comm::Group* ulysses, comm::Group* ring) {
  ContextSplit s;
  if (ulysses) s.ulysses = ulysses->size(), s.ulysses_rank = ulysses->rank();
  if (ring) s.ring = ring->size(), s.ring_rank = ring->rank();
  return s;
}

std::string context_unfit(int64_t T, const ContextSplit& split) {
  const int64_t unit = split.ring > 1 ? 2 * int64_t(split.ring) * split.ulysses : split.ulysses;
  if (T % unit == 0) return "";
  return "the sequence length " + std::to_string(T) + " is not a multiple of " +
         std::to_string(unit) +
         (split.ring > 1 ? " (2 chunks per ring rank x " + std::to_string(split.ring) +
                               " ring ranks x " + std::to_string(split.ulysses) + " Ulysses ranks)"
                         : " (the Ulysses degree)");
}

torch::Tensor context_positions(int64_t T, const ContextSplit& split) {
  const std::string unfit = context_unfit(T, split);
  TORCH_CHECK(unfit.empty(), "context parallelism: ", unfit);
  auto ring_share = torch::arange(T);  // this ring rank's tokens, in its order
  if (split.ring > 1) {
    const int64_t c = T / (2 * split.ring), r = split.ring_rank;
    ring_share =
        torch::cat({torch::arange(r * c, (r + 1) * c),
                    torch::arange((2 * split.ring - 1 - r) * c, (2 * split.ring - r) * c)});
  }
  const int64_t n = ring_share.size(0) / split.ulysses;
  return ring_share.narrow(0, split.ulysses_rank * n, n).contiguous();
}

std::vector<torch::Tensor> ulysses_seq_to_heads(const torch::Tensor& q, const torch::Tensor& k,
                                                const torch::Tensor& v, comm::Group* g,
                                                ContextCommStats* stats) {
  if (!active(g)) return {q, k, v};
  TORCH_CHECK(q.size(1) % g->size() == 0 && k.size(1) % g->size() == 0,
              "Ulysses attention: ", q.size(1), " query heads and ", k.size(1),
              " key/value heads per rank must both be divisible by the Ulysses degree ", g->size());
  return SeqToHeads::apply(q, k, v, pack(g), pack(stats));
}

torch::Tensor ulysses_heads_to_seq(const torch::Tensor& y, comm::Group* g,
                                   ContextCommStats* stats) {
  if (!active(g)) return y;
  return HeadsToSeq::apply(y, pack(g), pack(stats));
}

torch::Tensor ring_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             comm::Group* g, bool overlap, ContextCommStats* stats,
                             int64_t tile_rows) {
  shape_of(q, k);
  TORCH_CHECK(k.sizes() == v.sizes() && q.size(2) == k.size(2), "ring attention: k ", k.sizes(),
              " and v ", v.sizes(), " must match q's rows ", q.sizes());
  TORCH_CHECK(tile_rows > 0, "ring attention: tile_rows ", tile_rows, " must be positive");
  return RingAttention::apply(q, k, v, pack(g), overlap, pack(stats), tile_rows);
}

std::pair<torch::Tensor, torch::Tensor> ring_attention_forward(const torch::Tensor& q,
                                                               const torch::Tensor& k,
                                                               const torch::Tensor& v,
                                                               comm::Group* g) {
  torch::NoGradGuard no_grad;
  const Shape d = shape_of(q, k);
  auto [out, lse] = ring_forward(queries(q, d), keys(k, d), keys(v, d), RingComm{g},
                                 1.0 / std::sqrt(double(d.D)), kRingTileRows);
  return {out.view({d.B, d.H, d.T2, d.D}), lse.view({d.B, d.H, d.T2})};
}

std::shared_ptr<model::ContextParallelHooks> make_context_parallel_hooks(
    comm::Group* ulysses, comm::Group* ring, bool overlap,
    std::shared_ptr<ContextCommStats> stats) {
  return std::make_shared<ContextHooks>(ulysses, ring, overlap, std::move(stats));
}

}  // namespace cairn::parallel
