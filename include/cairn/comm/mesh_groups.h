// MeshGroups: the process groups of a Mesh, one per axis for this rank, built from the job's
// world group. An axis of extent 1 has no group (null: nothing to communicate); an axis
// spanning the whole world uses the world group itself (no second set of connections).
#pragma once

#include <array>
#include <memory>

#include "cairn/comm/mesh.h"
#include "cairn/core/status.h"

namespace cairn::comm {

class Group;

class MeshGroups {
 public:
  // Collective over `world` (null for one process, whose mesh has size 1): every rank
  // creates every group of every axis in the same order (Mesh::all_groups) and keeps its own.
  // `world` must outlive the result. kInvalidArgument when the mesh's size is not the world's.
  static Result<MeshGroups> Create(Group* world, const Mesh& mesh);
  // One process: a mesh of size 1, no groups.
  static MeshGroups Single();

  MeshGroups(MeshGroups&&) noexcept;
  MeshGroups& operator=(MeshGroups&&) noexcept;
  ~MeshGroups();

  // This rank's group along `a`, or null when the axis' extent is 1.
  Group* get(Axis a) const { return groups_[size_t(a)]; }
  const Mesh& mesh() const { return mesh_; }
  int rank() const { return rank_; }  // in the world

 private:
  explicit MeshGroups(Mesh mesh);  // out of line: Group is incomplete here
  Mesh mesh_;
  int rank_ = 0;
  std::array<std::unique_ptr<Group>, kNumAxes> owned_;
  std::array<Group*, kNumAxes> groups_{};
};

}  // namespace cairn::comm
