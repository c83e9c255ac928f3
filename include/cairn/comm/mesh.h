// Mesh: pure rank arithmetic for the parallel axes (pp, dp, cp, tp). No processes, no torch.
//
// The axes are laid out in an order, outermost first; the innermost varies fastest. With the
// default order pp, dp, cp, tp:
//   rank = ((pp_i * dp + dp_i) * cp + cp_i) * tp + tp_i
// so a tensor-parallel group is a run of consecutive ranks (on one node when tp <= GPUs per
// node), and a data-parallel group strides over them.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "cairn/core/status.h"

namespace cairn::comm {

// kContext is the context-parallel axis (the sequence split across ranks: Ulysses, ring
// attention). Megatron's sequence parallelism has no axis of its own: it runs on tp's ranks.
enum class Axis { kPipeline = 0, kData = 1, kContext = 2, kTensor = 3 };
inline constexpr int kNumAxes = 4;
inline constexpr std::array<Axis, kNumAxes> kDefaultOrder = {Axis::kPipeline, Axis::kData,
                                                             Axis::kContext, Axis::kTensor};
const char* axis_name(Axis a);  // "pp", "dp", "cp", "tp"
Result<Axis> parse_axis(const std::string& name);
// Four distinct axis names, outermost first, e.g. {"pp", "dp", "cp", "tp"}.
Result<std::array<Axis, kNumAxes>> parse_order(const std::vector<std::string>& names);

struct MeshShape {
  int pp = 1, dp = 1, cp = 1, tp = 1;
  int size() const { return pp * dp * cp * tp; }
  int extent(Axis a) const;
  std::string ToString() const;  // "pp=1 dp=2 cp=1 tp=1"
};

class Mesh {
 public:
  // Checks every extent >= 1, that their product is world_size and that `order` names each
  // axis once.
  static Result<Mesh> Create(const MeshShape& shape, int world_size,
                             const std::array<Axis, kNumAxes>& order = kDefaultOrder);

  const MeshShape& shape() const { return shape_; }
  const std::array<Axis, kNumAxes>& order() const { return order_; }
  int size() const { return shape_.size(); }

  // Coordinates of `rank` along each axis, indexed by Axis.
  std::array<int, kNumAxes> coords(int rank) const;
  int rank_of(const std::array<int, kNumAxes>& coords) const;
  int coord(int rank, Axis a) const { return coords(rank)[int(a)]; }
  // The ranks that share every coordinate with `rank` except along `a`, in axis order.
  std::vector<int> group(int rank, Axis a) const;
  // Every group along `a`, each in axis order, groups ordered by their smallest rank.
  // Creating process groups in this order on every rank keeps collective creation aligned.
  std::vector<std::vector<int>> all_groups(Axis a) const;

 private:
  Mesh(MeshShape s, std::array<Axis, kNumAxes> order) : shape_(s), order_(order) {}
  MeshShape shape_;
  std::array<Axis, kNumAxes> order_;
};

}  // namespace cairn::comm
