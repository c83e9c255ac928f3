// Mesh: pure rank arithmetic for the parallel axes (pp, dp, sp, tp). No processes, no torch.
//
// Ranks are laid out with tp varying fastest, then sp, then dp, then pp:
//   rank = ((pp_i * dp + dp_i) * sp + sp_i) * tp + tp_i
// so a tensor-parallel group is a run of consecutive ranks (on one node when tp <= GPUs per
// node), and a data-parallel group strides over them.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "cairn/core/status.h"

namespace cairn::comm {

enum class Axis { kPipeline = 0, kData = 1, kSequence = 2, kTensor = 3 };
inline constexpr int kNumAxes = 4;
const char* axis_name(Axis a);  // "pp", "dp", "sp", "tp"

struct MeshShape {
  int pp = 1, dp = 1, sp = 1, tp = 1;
  int size() const { return pp * dp * sp * tp; }
  int extent(Axis a) const;
  std::string ToString() const;  // "pp=1 dp=2 sp=1 tp=1"
};

class Mesh {
 public:
  // Checks every extent >= 1 and that their product is world_size.
  static Result<Mesh> Create(const MeshShape& shape, int world_size);

  const MeshShape& shape() const { return shape_; }
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
  explicit Mesh(MeshShape s) : shape_(s) {}
  MeshShape shape_;
};

}  // namespace cairn::comm
