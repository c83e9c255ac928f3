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
    case Axis::kSequence:
      return "sp";
    case Axis::kTensor:
      return "tp";
  }
  return "?";
}

int MeshShape::extent(Axis a) const {
  switch (a) {
    case Axis::kPipeline:
      return pp;
    case Axis::kData:
      return dp;
    case Axis::kSequence:
      return sp;
    case Axis::kTensor:
      return tp;
  }
  return 1;
}

std::string MeshShape::ToString() const {
  return "pp=" + std::to_string(pp) + " dp=" + std::to_string(dp) + " sp=" + std::to_string(sp) +
         " tp=" + std::to_string(tp);
}

Result<Mesh> Mesh::Create(const MeshShape& s, int world_size) {
  for (int a = 0; a < kNumAxes; ++a)
    if (s.extent(Axis(a)) < 1)
      return Status::InvalidArgument(std::string("mesh: ") + axis_name(Axis(a)) +
                                     " must be >= 1, got " + std::to_string(s.extent(Axis(a))));
  if (s.size() != world_size)
    return Status::InvalidArgument("mesh " + s.ToString() + " holds " + std::to_string(s.size()) +
                                   " ranks but the world has " + std::to_string(world_size));
  return Mesh(s);
}

std::array<int, kNumAxes> Mesh::coords(int rank) const {
  std::array<int, kNumAxes> c{};
  for (int a = kNumAxes - 1; a >= 0; --a) {
    int e = shape_.extent(Axis(a));
    c[size_t(a)] = rank % e;
    rank /= e;
  }
  return c;
}

int Mesh::rank_of(const std::array<int, kNumAxes>& c) const {
  int r = 0;
  for (int a = 0; a < kNumAxes; ++a) r = r * shape_.extent(Axis(a)) + c[size_t(a)];
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
