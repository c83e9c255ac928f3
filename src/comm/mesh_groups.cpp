// The process groups of a mesh.
#include "cairn/comm/mesh_groups.h"

#include "cairn/comm/group.h"

namespace cairn::comm {

MeshGroups::MeshGroups(Mesh mesh) : mesh_(std::move(mesh)) {}
MeshGroups::MeshGroups(MeshGroups&&) noexcept = default;
MeshGroups& MeshGroups::operator=(MeshGroups&&) noexcept = default;
MeshGroups::~MeshGroups() = default;

MeshGroups MeshGroups::Single() { return MeshGroups(*Mesh::Create(MeshShape{}, 1)); }

Result<MeshGroups> MeshGroups::Create(Group* world, const Mesh& mesh) {
  const int world_size = world ? world->size() : 1;
  if (mesh.size() != world_size)
    return Status::InvalidArgument("mesh " + mesh.shape().ToString() + " holds " +
                                   std::to_string(mesh.size()) + " ranks, the job has " +
                                   std::to_string(world_size));
  MeshGroups g(mesh);
  g.rank_ = world ? world->rank() : 0;
  for (Axis a : kDefaultOrder) {  // the same order on every rank
    const int extent = mesh.shape().extent(a);
    if (extent == 1) continue;
    if (extent == world_size) {
      g.groups_[size_t(a)] = world;
      continue;
    }
    for (const std::vector<int>& ranks : mesh.all_groups(a)) {
      std::unique_ptr<Group> sub = world->subgroup(ranks, axis_name(a));
      if (sub) g.owned_[size_t(a)] = std::move(sub);
    }
    g.groups_[size_t(a)] = g.owned_[size_t(a)].get();
  }
  g.world_ = world;
  const MeshShape& s = mesh.shape();
  if (s.cp == 1 || s.dp == 1) {
    g.data_context_ = g.get(s.cp == 1 ? Axis::kData : Axis::kContext);
  } else if (s.dp * s.cp == world_size) {
    g.data_context_ = world;
  } else {
    for (int r = 0; r < mesh.size(); ++r) {  // one group per (pp, tp), by its smallest rank
      if (mesh.coord(r, Axis::kData) != 0 || mesh.coord(r, Axis::kContext) != 0) continue;
      std::array<int, kNumAxes> c = mesh.coords(r);
      std::vector<int> ranks;
      for (int d = 0; d < s.dp; ++d)
        for (int x = 0; x < s.cp; ++x) {
          c[size_t(Axis::kData)] = d;
          c[size_t(Axis::kContext)] = x;
          ranks.push_back(mesh.rank_of(c));
        }
      std::unique_ptr<Group> sub = world->subgroup(ranks, "dp-cp");
      if (sub) g.owned_data_context_ = std::move(sub);
    }
    g.data_context_ = g.owned_data_context_.get();
  }
  return g;
}

MeshGroups::ContextSplit MeshGroups::split_context(int ulysses) const {
  const int cp = mesh_.shape().cp;
  TORCH_CHECK(ulysses >= 1 && cp % ulysses == 0, "split_context: ", ulysses, " does not divide cp ",
              cp);
  ContextSplit out;
  const int ring = cp / ulysses;
  if (cp == 1) return out;
  for (const std::vector<int>& ranks : mesh_.all_groups(Axis::kContext)) {  // same order everywhere
    if (ulysses > 1)
      for (int k = 0; k < ring; ++k) {
        std::vector<int> inner(ranks.begin() + k * ulysses, ranks.begin() + (k + 1) * ulysses);
        if (auto sub = world_->subgroup(inner, "cp-inner")) out.inner = std::move(sub);
      }
    if (ring > 1)
      for (int u = 0; u < ulysses; ++u) {
        std::vector<int> outer;
        for (int k = 0; k < ring; ++k) outer.push_back(ranks[size_t(k * ulysses + u)]);
        if (auto sub = world_->subgroup(outer, "cp-outer")) out.outer = std::move(sub);
      }
  }
  return out;
}

}  // namespace cairn::comm
