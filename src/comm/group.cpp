// Gloo (and, for CUDA tensors, NCCL) process groups with bounded collectives.
#include "cairn/comm/group.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace cairn::comm {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

Result<int> env_int(const char* name, int min, int max) {
  std::string v = env(name);
  if (v.empty())
    return Status::InvalidArgument(std::string("environment variable ") + name +
                                   " is not set (start workers with `cairn run`)");
  char* end = nullptr;
  long x = std::strtol(v.c_str(), &end, 10);
  if (*end != '\0' || x < min || x > max)
    return Status::InvalidArgument(std::string("environment variable ") + name + "='" + v +
                                   "' is not an integer in [" + std::to_string(min) + ", " +
                                   std::to_string(max) + "]");
  return int(x);
}

// Waits until something listens at addr:port (at most timeout). The TCPStore client retries a
// refused connection only after a second; a worker that starts a few milliseconds before rank 0
// would lose that second on every (re)start, so it polls here, every few milliseconds, first.
void wait_for_listener(const std::string& addr, int port, std::chrono::milliseconds timeout) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (::getaddrinfo(addr.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return;
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (bool up = false; !up && std::chrono::steady_clock::now() < until;) {
    for (addrinfo* a = res; a && !up; a = a->ai_next) {
      int fd = ::socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) continue;
      up = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0;
      ::close(fd);
    }
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  ::freeaddrinfo(res);
}

c10::intrusive_ptr<c10d::ProcessGroup> make_gloo(c10::intrusive_ptr<c10d::Store> store, int rank,
                                                 int size, const GroupOptions& o) {
  auto opts = c10d::ProcessGroupGloo::Options::create(o.timeout);
  opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(o.bind_host));
  opts->threads = 2;
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, opts);
}

// NCCL's group over the same store (its own prefix), or null without NCCL or CUDA.
c10::intrusive_ptr<c10d::ProcessGroup> make_device_group(c10::intrusive_ptr<c10d::Store> store,
                                                         int rank, int size,
                                                         const GroupOptions& o) {
  if (!o.cuda) return {};
#ifdef USE_C10D_NCCL
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = o.timeout;
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("nccl", std::move(store));
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, size, opts);
#else
  return {};
#endif
}

}  // namespace

bool has_nccl() {
#ifdef USE_C10D_NCCL
  return true;
#else
  return false;
#endif
}

void Pending::wait() {
  if (!work_) return;
  bool done = false;
  try {
    done = work_->wait(timeout_);
  } catch (const std::exception& e) {
    work_.reset();
    throw CollectiveError(what_ + " failed: " + e.what());
  }
  work_.reset();
  if (!done)
    throw CollectiveError(what_ + " timed out after " + std::to_string(timeout_.count()) + " ms");
  if (target_.defined()) {
    target_.copy_(staged_);
    staged_ = target_ = torch::Tensor();
  }
}

Result<std::unique_ptr<Group>> Group::FromEnv(const GroupOptions& options) {
  CAIRN_ASSIGN_OR_RETURN(int size, env_int("WORLD_SIZE", 1, 1 << 20));
  CAIRN_ASSIGN_OR_RETURN(int rank, env_int("RANK", 0, size - 1));
  CAIRN_ASSIGN_OR_RETURN(int port, env_int("MASTER_PORT", 1, 65535));
  std::string addr = env("MASTER_ADDR");
  if (addr.empty()) return Status::InvalidArgument("environment variable MASTER_ADDR is not set");
  GroupOptions o = options;
  if (!env("CAIRN_BIND_HOST").empty()) {
    o.bind_host = env("CAIRN_BIND_HOST");
  } else if (addr == "127.0.0.1" || addr == "localhost") {
    o.bind_host = "127.0.0.1";
  } else {
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    o.bind_host = host;
  }
  try {
    c10d::TCPStoreOptions so;
    so.port = uint16_t(port);
    so.isServer = rank == 0;
    so.numWorkers = size;
    so.waitWorkers = false;
    so.timeout = o.timeout;
    if (rank != 0) wait_for_listener(addr, port, o.timeout);
    auto store = c10::make_intrusive<c10d::TCPStore>(addr, so);
    return Create(store, rank, size, o);
  } catch (const std::exception& e) {
    return Status::PeerLost("cannot form the process group at " + addr + ":" +
                            std::to_string(port) + " (rank " + std::to_string(rank) + " of " +
                            std::to_string(size) + "): " + e.what());
  }
}

std::unique_ptr<Group> Group::Create(c10::intrusive_ptr<c10d::Store> store, int rank, int size,
                                     const GroupOptions& options) {
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("cairn/world", store);
  auto pg = make_gloo(prefixed, rank, size, options);
  auto device_pg = make_device_group(prefixed, rank, size, options);
  return std::unique_ptr<Group>(new Group(store, pg, device_pg, rank, size, options));
}

Group::~Group() = default;

std::unique_ptr<Group> Group::subgroup(const std::vector<int>& ranks, const std::string& tag) {
  int mine = -1;
  for (size_t i = 0; i < ranks.size(); ++i)
    if (ranks[i] == rank_) mine = int(i);
  if (mine < 0) return nullptr;
  std::string key = "cairn/group/" + tag;
  for (int r : ranks) key += "-" + std::to_string(r);
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>(key, store_);
  auto pg = make_gloo(prefixed, mine, int(ranks.size()), options_);
  auto device_pg = make_device_group(prefixed, mine, int(ranks.size()), options_);
  return std::unique_ptr<Group>(
      new Group(store_, pg, device_pg, mine, int(ranks.size()), options_));
}

Pending Group::allreduce_async(torch::Tensor& t) {
  ++collectives_;
  if (staged(t)) {
    std::vector<torch::Tensor> v{t.to(torch::kFloat)};
    return Pending(pg_for(t).allreduce(v), options_.timeout, "all-reduce", v[0], t);
  }
  std::vector<torch::Tensor> v{t};
  return Pending(pg_for(t).allreduce(v), options_.timeout, "all-reduce");
}

void Group::allreduce_max(torch::Tensor& t) {
  ++collectives_;
  std::vector<torch::Tensor> v{staged(t) ? t.to(torch::kFloat) : t};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::MAX;
  Pending(pg_for(t).allreduce(v, o), options_.timeout, "all-reduce (max)").wait();
  if (staged(t)) t.copy_(v[0]);
}

void Group::broadcast(torch::Tensor& t, int root) {
  ++collectives_;
  std::vector<torch::Tensor> v{staged(t) ? t.to(torch::kFloat) : t};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  Pending(pg_for(t).broadcast(v, o), options_.timeout, "broadcast").wait();
  if (staged(t)) t.copy_(v[0]);
}

void Group::allgather(torch::Tensor& out, const torch::Tensor& in) {
  TORCH_CHECK(out.numel() == in.numel() * size_, "allgather: out must hold size * in elements");
  const bool stage = staged(out) || staged(in);
  torch::Tensor o_t = stage ? torch::empty(out.sizes(), out.options().dtype(torch::kFloat)) : out;
  std::vector<torch::Tensor> outs;
  for (int r = 0; r < size_; ++r) outs.push_back(o_t.narrow(0, r * in.numel(), in.numel()));
  std::vector<std::vector<torch::Tensor>> o{outs};
  std::vector<torch::Tensor> i{stage ? in.to(torch::kFloat) : in};
  ++collectives_;
  Pending(pg_for(in).allgather(o, i), options_.timeout, "all-gather").wait();
  if (stage) out.copy_(o_t);
}

void Group::reduce_scatter(torch::Tensor& out, torch::Tensor& in) {
  TORCH_CHECK(in.numel() == out.numel() * size_,
              "reduce_scatter: in must hold size * out elements");
  // Gloo has no reduce-scatter: all-reduce and keep this rank's slice.
  allreduce(in);
  out.copy_(in.narrow(0, rank_ * out.numel(), out.numel()));
}

void Group::all_to_all(torch::Tensor& out, const torch::Tensor& in) {
  TORCH_CHECK(out.sizes() == in.sizes() && out.is_contiguous() && in.is_contiguous(),
              "all_to_all: out and in must be contiguous and of one shape");
  TORCH_CHECK(in.dim() > 0 && in.size(0) % size_ == 0, "all_to_all: dimension 0 of ", in.sizes(),
              " is not a multiple of the group's ", size_, " ranks");
  const bool stage = staged(out) || staged(in);
  torch::Tensor o = stage ? torch::empty(out.sizes(), out.options().dtype(torch::kFloat)) : out;
  torch::Tensor i = stage ? in.to(torch::kFloat) : in;
  std::vector<int64_t> equal;  // empty: equal splits
  ++collectives_;
  Pending(pg_for(in).alltoall_base(o, i, equal, equal), options_.timeout, "all-to-all").wait();
  if (stage) out.copy_(o);
}

Pending Group::send_async(const torch::Tensor& t, int dst, int tag) {
  TORCH_CHECK(t.is_contiguous(), "send: the tensor must be contiguous");
  ++sends_;
  std::vector<torch::Tensor> v{staged(t) ? t.to(torch::kFloat) : t};
  return Pending(pg_for(t).send(v, dst, tag), options_.timeout,
                 "send to rank " + std::to_string(dst));
}

Pending Group::recv_async(torch::Tensor& t, int src, int tag) {
  TORCH_CHECK(t.is_contiguous(), "recv: the tensor must be contiguous");
  const std::string what = "receive from rank " + std::to_string(src);
  if (staged(t)) {
    std::vector<torch::Tensor> v{torch::empty(t.sizes(), t.options().dtype(torch::kFloat))};
    return Pending(pg_for(t).recv(v, src, tag), options_.timeout, what, v[0], t);
  }
  std::vector<torch::Tensor> v{t};
  return Pending(pg_for(t).recv(v, src, tag), options_.timeout, what);
}

void Group::barrier() {
  auto t = torch::zeros({1});
  allreduce(t);
}

}  // namespace cairn::comm
