// Group: a process group with the collectives cairn uses, each bounded by a timeout. CPU
// tensors go over Gloo; with GroupOptions::cuda, CUDA tensors go over NCCL when libtorch was
// built with it (USE_C10D_NCCL), else over Gloo too. Collectives must be called by every rank of
// the group in the same order.
//
// A timed-out or failed collective throws comm::CollectiveError, which the trainer lets
// propagate so the agent can restart the workers.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <vector>

#include "cairn/core/status.h"

namespace cairn::comm {

struct CollectiveError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct GroupOptions {
  std::chrono::milliseconds timeout{120000};  // every collective and the initial connection
  std::string bind_host = "127.0.0.1";        // address this rank's Gloo device binds to
  // Also an NCCL process group for CUDA tensors, when libtorch has one (has_nccl()). The GPU
  // path is not tested: no GPU here.
  bool cuda = false;
};

// Whether this libtorch was built with NCCL (CUDA tensors' collectives on the GPU).
bool has_nccl();

// An in-flight collective. wait() throws CollectiveError on failure or timeout.
class Pending {
 public:
  Pending() = default;
  Pending(c10::intrusive_ptr<c10d::Work> work, std::chrono::milliseconds timeout, std::string what)
      : work_(std::move(work)), timeout_(timeout), what_(std::move(what)) {}
  // The collective ran on `staged`, an fp32 copy of `target` (Gloo has no bfloat16): wait()
  // copies the result back.
  Pending(c10::intrusive_ptr<c10d::Work> work, std::chrono::milliseconds timeout, std::string what,
          torch::Tensor staged, torch::Tensor target)
      : work_(std::move(work)),
        timeout_(timeout),
        what_(std::move(what)),
        staged_(std::move(staged)),
        target_(std::move(target)) {}
  void wait();
  bool valid() const { return bool(work_); }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  std::chrono::milliseconds timeout_{0};
  std::string what_;
  torch::Tensor staged_, target_;
};

class Group {
 public:
  // From torchrun's environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT. Rank 0 hosts the
  // TCPStore. The bind address is taken from CAIRN_BIND_HOST, else MASTER_ADDR when it is a
  // loopback address, else the machine's hostname.
  static Result<std::unique_ptr<Group>> FromEnv(const GroupOptions& options);
  // Over an existing store (tests: a shared c10d::HashStore, ranks as threads).
  static std::unique_ptr<Group> Create(c10::intrusive_ptr<c10d::Store> store, int rank, int size,
                                       const GroupOptions& options);
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }

  // A group of `ranks` (global ranks of this group, in order). Every rank of this group must
  // call it with the same arguments in the same order; non-members get nullptr.
  std::unique_ptr<Group> subgroup(const std::vector<int>& ranks, const std::string& tag);

  // Sum over ranks, in place.
  Pending allreduce_async(torch::Tensor& t);
  void allreduce(torch::Tensor& t) { allreduce_async(t).wait(); }
  // Elementwise maximum over ranks, in place.
  void allreduce_max(torch::Tensor& t);
  void broadcast(torch::Tensor& t, int root);
  // out (size * n) = concatenation of every rank's `in` (n). REQUIRES: both contiguous.
  void allgather(torch::Tensor& out, const torch::Tensor& in);
  // out (n) = sum over ranks of their slice [rank * n, (rank + 1) * n) of `in` (size * n).
  // `in` is used as scratch. Gloo has no reduce-scatter: this all-reduces `in` and keeps the
  // slice, moving 2 (size - 1) / size * n elements per rank where a ring reduce-scatter (NCCL's)
  // moves half of that; the interface is the one a native reduce-scatter replaces.
  void reduce_scatter(torch::Tensor& out, torch::Tensor& in);
  // Exchanges blocks of dimension 0: `in` holds size blocks of equal rows, block j for rank j;
  // `out` receives, as its block j, rank j's block for this rank. REQUIRES: both contiguous,
  // of one shape, dimension 0 a multiple of size.
  void all_to_all(torch::Tensor& out, const torch::Tensor& in);
  // Point to point: sends `t` to rank `dst`, or receives into `t` from rank `src` (ranks of this
  // group), matched with the peer's call of the same tag. `t` stays untouched (send) or unread
  // (recv) until wait(). REQUIRES: t contiguous.
  Pending send_async(const torch::Tensor& t, int dst, int tag);
  Pending recv_async(torch::Tensor& t, int src, int tag);
  void barrier();

  // Collectives this rank has issued on this group (tests count them).
  int64_t collectives() const { return collectives_.load(); }
  // Sends this rank has issued on this group (tests count them).
  int64_t sends() const { return sends_.load(); }

 private:
  Group(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<c10d::ProcessGroup> pg,
        c10::intrusive_ptr<c10d::ProcessGroup> device_pg, int rank, int size, GroupOptions options)
      : store_(std::move(store)),
        pg_(std::move(pg)),
        device_pg_(std::move(device_pg)),
        rank_(rank),
        size_(size),
        options_(options) {}
  // The process group for `t`: NCCL's for a CUDA tensor when there is one, else Gloo's.
  c10d::ProcessGroup& pg_for(const torch::Tensor& t) const {
    return t.is_cuda() && device_pg_ ? *device_pg_ : *pg_;
  }
  // Gloo moves no bfloat16: such tensors travel as fp32 copies on it.
  bool staged(const torch::Tensor& t) const {
    return t.scalar_type() == torch::kBFloat16 && &pg_for(t) == pg_.get();
  }
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroup> pg_;         // Gloo
  c10::intrusive_ptr<c10d::ProcessGroup> device_pg_;  // NCCL, or null
  int rank_, size_;
  GroupOptions options_;
  std::atomic<int64_t> collectives_{0};
  std::atomic<int64_t> sends_{0};
};

}  // namespace cairn::comm
