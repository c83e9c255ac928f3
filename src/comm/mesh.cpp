// Rank arithmetic of the parallel mesh.
#include "cairn/comm/mesh.h"

#include <algorithm>

namespace cairn::comm {

const char* axis_name(Axis a) {
  switch (a) {
    case Axis::kPipeline:
      return "pp";
    case Axis::kData:
      return "dp";
    case Axis::kContext:
      return "cp";
    case Axis::kTensor:
      return "tp";
  }
  return "?";
}

Result<Axis> parse_axis(const std::string& name) {
  for (int a = 0; a < kNumAxes; ++a)
    if (name == axis_name(Axis(a))) return Axis(a);
  return Status::InvalidArgument("'" + name + "' is not a mesh axis (pp, dp, cp, tp)");
}

Result<std::array<Axis, kNumAxes>> parse_order(const std::vector<std::string>& names) {
  std::array<Axis, kNumAxes> order{};
  if (names.size() != size_t(kNumAxes))
    return Status::InvalidArgument(
        "the mesh order names all four axes (pp, dp, cp, tp) once, got " +
        std::to_string(names.size()));
  std::array<bool, kNumAxes> seen{};
  for (size_t i = 0; i < names.size(); ++i) {
    CAIRN_ASSIGN_OR_RETURN(order[i], parse_axis(names[i]));
    if (seen[size_t(order[i])])
      return Status::InvalidArgument("the mesh order names '" + names[i] + "' twice");
    seen[size_t(order[i])] = true;
  }
  return order;
}

int MeshShape::extent(Axis a) const {
  switch (a) {
    case Axis::kPipeline:
      return pp;
    case Axis::kData:
      return dp;
    case Axis::kContext:
      return cp;
    case Axis::kTensor:
      return tp;
  }
  return 1;
}

std::string MeshShape::ToString() const {
  return "pp=" + std::to_string(pp) + " dp=" + std::to_string(dp) + " cp=" + std::to_string(cp) +
         " tp=" + std::to_string(tp);
}

Result<Mesh> Mesh::Create(const MeshShape& s, int world_size,
                          const std::array<Axis, kNumAxes>& order) {
  std::array<bool, kNumAxes> seen{};
  for (Axis a : order) {
    if (int(a) < 0 || int(a) >= kNumAxes || seen[size_t(a)])
      return Status::InvalidArgument("mesh: the order must name each axis once");
    seen[size_t(a)] = true;
  }
  for (int a = 0; a < kNumAxes; ++a)
    if (s.extent(Axis(a)) < 1)
      return Status::InvalidArgument(std::string("mesh: ") + axis_name(Axis(a)) +
                                     " must be >= 1, got " + std::to_string(s.extent(Axis(a))));
  if (s.size() != world_size)
    return Status::InvalidArgument("mesh " + s.ToString() + " holds " + std::to_string(s.size()) +
                                   " ranks but the world has " + std::to_string(world_size));
  return Mesh(s, order);
}

std::array<int, kNumAxes> Mesh::coords(int rank) const {
  std::array<int, kNumAxes> c{};
  for (int i = kNumAxes - 1; i >= 0; --i) {  // innermost first
    const Axis a = order_[size_t(i)];
    const int e = shape_.extent(a);
    c[size_t(a)] = rank % e;
    rank /= e;
  }
  return c;
}

int Mesh::rank_of(const std::array<int, kNumAxes>& c) const {
  int r = 0;
  for (Axis a : order_) r = r * shape_.extent(a) + c[size_t(a)];
  return r;
}

std::vector<int> Mesh::group(int rank, Axis a) const {
  auto c = coords(rank);
  std::vector<int> g;
  for (int i = 0; i < shape_.extent(a); ++i) {
    c[size_t(a)] = i;
    g.push_back(rank_of(c));
  }
  return g;
}

std::vector<std::vector<int>> Mesh::all_groups(Axis a) const {
  std::vector<std::vector<int>> out;
  for (int r = 0; r < size(); ++r)
    if (coord(r, a) == 0) out.push_back(group(r, a));
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace cairn::comm
