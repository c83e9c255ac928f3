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
  return g;
}

}  // namespace cairn::comm
