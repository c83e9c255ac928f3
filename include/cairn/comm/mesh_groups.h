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
  // The ranks that share this rank's pp and tp coordinates: its dp and cp groups together,
  // ordered by (dp, cp) coordinates (the replicas of its parameters when cp > 1, over which
  // gradients are averaged); null when dp x cp is 1.
  Group* data_context() const { return data_context_; }
  // The cp group split in two (collective over the job): `ulysses` consecutive cp coordinates
  // form an inner group, those with the same offset in their run an outer group of
  // cp / ulysses (2D context parallelism: Ulysses inside, ring across). Either may be null
  // (extent 1). REQUIRES: ulysses divides cp.
  struct ContextSplit {
    std::unique_ptr<Group> inner, outer;
  };
  ContextSplit split_context(int ulysses) const;
  const Mesh& mesh() const { return mesh_; }
  int rank() const { return rank_; }  // in the world

 private:
  explicit MeshGroups(Mesh mesh);  // out of line: Group is incomplete here
  Mesh mesh_;
  int rank_ = 0;
  Group* world_ = nullptr;
  std::array<std::unique_ptr<Group>, kNumAxes> owned_;
  std::array<Group*, kNumAxes> groups_{};
  std::unique_ptr<Group> owned_data_context_;
  Group* data_context_ = nullptr;
};

}  // namespace cairn::comm
