// Block-causal attention: query rows are processed in blocks of kBlockRows; a block at
// rows [s, e) multiplies only against keys [0, e), the diagonal tile is masked, and the
// softmax runs in place on the block's scores. Query heads of one group are stacked as
// rows of the same matrix product against their shared key/value head.
//
// Shapes: B batch, H query heads, K key/value heads, G = H / K group size, T sequence,
// D head size, n rows of a block, e keys a block sees. BK = B * K.
#include "cairn/model/attention.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <vector>

namespace cairn::model {
namespace {

constexpr int64_t kBlockRows = 64;

struct Dims {
  int64_t B, H, K, G, T, D;
};

Dims check_dims(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
              "causal_attention: q, k, v must be 4-D (B, heads, T, D), got ", q.sizes(), ", ",
              k.sizes(), ", ", v.sizes());
  TORCH_CHECK(k.sizes() == v.sizes(), "causal_attention: k ", k.sizes(), " and v ", v.sizes(),
              " differ");
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(2) == k.size(2) && q.size(3) == k.size(3),
              "causal_attention: q ", q.sizes(), " and k ", k.sizes(), " must agree in B, T and D");
  TORCH_CHECK(k.size(1) > 0 && q.size(1) % k.size(1) == 0, "causal_attention: ", q.size(1),
              " query heads are not a multiple of ", k.size(1), " key/value heads");
  TORCH_CHECK(q.is_floating_point() && q.scalar_type() == k.scalar_type() &&
                  q.scalar_type() == v.scalar_type(),
              "causal_attention: q, k, v must share one floating dtype");
  Dims d{q.size(0), q.size(1), k.size(1), q.size(1) / k.size(1), q.size(2), q.size(3)};
  return d;
}

// Upper-triangular (strictly above the diagonal) mask of the diagonal tile, (n, n).
torch::Tensor tile_mask(int64_t n, const torch::Device& device) {
  return torch::ones({n, n}, torch::dtype(torch::kBool).device(device)).triu(1);
}

class CausalAttentionFn : public torch::autograd::Function<CausalAttentionFn> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q_in,
                               const torch::Tensor& k_in, const torch::Tensor& v_in) {
    const Dims d = check_dims(q_in, k_in, v_in);
    const int64_t BK = d.B * d.K;
    const double scale = 1.0 / std::sqrt(static_cast<double>(d.D));
    auto q = q_in.contiguous().view({BK, d.G, d.T, d.D});
    auto k = k_in.contiguous().view({BK, d.T, d.D});
    auto v = v_in.contiguous().view({BK, d.T, d.D});
    auto out = torch::empty({BK, d.G, d.T, d.D}, q.options());  // (BK, G, T, D)
    const auto mask = tile_mask(std::min(kBlockRows, d.T), q.device());
    std::vector<torch::Tensor> probs;
    for (int64_t s = 0; s < d.T; s += kBlockRows) {
      const int64_t n = std::min(kBlockRows, d.T - s), e = s + n;
      auto qb = (q.narrow(2, s, n) * scale).view({BK, d.G * n, d.D});  // (BK, G*n, D)
      auto p = torch::bmm(qb, k.narrow(1, 0, e).transpose(1, 2));      // (BK, G*n, e)
      p.view({BK, d.G, n, e})
          .narrow(3, s, n)
          .masked_fill_(mask.narrow(0, 0, n).narrow(1, 0, n),
                        -std::numeric_limits<double>::infinity());
      at::_softmax_out(p, p, -1, false);
      out.narrow(2, s, n).copy_(torch::bmm(p, v.narrow(1, 0, e)).view({BK, d.G, n, d.D}));
      probs.push_back(p);
    }
    probs.push_back(q_in);
    probs.push_back(k_in);
    probs.push_back(v_in);
    ctx->save_for_backward(probs);
    return out.view({d.B, d.H, d.T, d.D});
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto v_in = saved.back();
    saved.pop_back();
    const auto k_in = saved.back();
    saved.pop_back();
    const auto q_in = saved.back();
    saved.pop_back();
    const Dims d = check_dims(q_in, k_in, v_in);
    const int64_t BK = d.B * d.K;
    const double scale = 1.0 / std::sqrt(static_cast<double>(d.D));
    auto q = q_in.contiguous().view({BK, d.G, d.T, d.D});
    auto k = k_in.contiguous().view({BK, d.T, d.D});
    auto v = v_in.contiguous().view({BK, d.T, d.D});
    auto go = grads[0].contiguous().view({BK, d.G, d.T, d.D});
    auto dq = torch::empty_like(q);  // (BK, G, T, D)
    auto dk = torch::zeros_like(k);  // (BK, T, D)
    auto dv = torch::zeros_like(v);  // (BK, T, D)
    for (size_t b = 0; b < saved.size(); ++b) {
      const int64_t s = static_cast<int64_t>(b) * kBlockRows;
      const int64_t n = std::min(kBlockRows, d.T - s), e = s + n;
      const auto& p = saved[b];                                   // (BK, G*n, e)
      auto gob = go.narrow(2, s, n).reshape({BK, d.G * n, d.D});  // (BK, G*n, D)
      dv.narrow(1, 0, e).baddbmm_(p.transpose(1, 2), gob);
      auto dp = torch::bmm(gob, v.narrow(1, 0, e).transpose(1, 2));  // (BK, G*n, e)
      at::_softmax_backward_data_out(dp, dp, p, -1, p.scalar_type());
      auto qb = (q.narrow(2, s, n) * scale).view({BK, d.G * n, d.D});
      dk.narrow(1, 0, e).baddbmm_(dp.transpose(1, 2), qb);
      dq.narrow(2, s, n).copy_(
          torch::bmm(dp, k.narrow(1, 0, e)).mul_(scale).view({BK, d.G, n, d.D}));
    }
    return {dq.view({d.B, d.H, d.T, d.D}), dk.view({d.B, d.K, d.T, d.D}),
            dv.view({d.B, d.K, d.T, d.D})};
  }
};

}  // namespace

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v) {
  check_dims(q, k, v);
  return CausalAttentionFn::apply(q, k, v);
}

torch::Tensor naive_causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                                     const torch::Tensor& v) {
  const Dims d = check_dims(q, k, v);
  auto kk = d.G == 1 ? k : k.repeat_interleave(d.G, 1);  // (B, H, T, D)
  auto vv = d.G == 1 ? v : v.repeat_interleave(d.G, 1);  // (B, H, T, D)
  auto att = torch::matmul(q, kk.transpose(-2, -1)) / std::sqrt(static_cast<double>(d.D));
  auto mask = tile_mask(d.T, q.device());                                 // (T, T)
  att = att.masked_fill(mask, -std::numeric_limits<double>::infinity());  // (B, H, T, T)
  return torch::matmul(torch::softmax(att, -1), vv);                      // (B, H, T, D)
}

}  // namespace cairn::model
