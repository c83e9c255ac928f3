// Hardware profile (profile.h).
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "cairn/comm/group.h"
#include "cairn/core/blas_threads.h"
#include "cairn/core/proc.h"
#include "cairn/planner/profile.h"
#include "planner/profile_impl.h"

namespace cairn::planner {
namespace {

using profiling::Clock;
using profiling::median;
using profiling::since;

// The median seconds of `fn` over repetitions lasting about `budget` (at least 3).
template <typename Fn>
double median_s(double budget, Fn&& fn) {
  std::vector<double> t;
  const auto start = Clock::now();
  while (t.size() < 3 || (since(start) < budget && t.size() < 1000)) {
    const auto s = Clock::now();
    fn();
    t.push_back(since(s));
  }
  return median(std::move(t));
}

double gemm_flops(int64_t n, torch::ScalarType dtype, double seconds) {
  auto a = torch::randn({n, n}).to(dtype), b = torch::randn({n, n}).to(dtype);
  auto c = torch::mm(a, b);  // warm up
  const double s = median_s(seconds, [&] { c = torch::mm(a, b); });
  return 2.0 * double(n) * double(n) * double(n) / s;
}

// A collective measured on every rank at once; rank 0's median (every rank waits for the others).
double collective_s(comm::Group& g, const std::string& op, int64_t bytes, double seconds) {
  const int n = g.size();
  const int64_t elems = std::max<int64_t>(n, bytes / 4 / n * n);
  auto t = torch::ones({elems});
  auto out = torch::empty({op == "allgather" ? elems * n : elems});
  auto step = [&] {
    if (op == "allreduce") {
      g.allreduce(t);
    } else if (op == "allgather") {
      g.allgather(out, t);
    } else if (op == "all_to_all") {
      g.all_to_all(out, t);
    } else {  // sendrecv: rank r sends to r + 1 and receives from r - 1
      auto sent = g.send_async(t, (g.rank() + 1) % n, 7);
      g.recv_async(out, (g.rank() + n - 1) % n, 7).wait();
      sent.wait();
    }
  };
  step();
  g.barrier();
  // Every rank runs the same number of repetitions: rank 0 decides from its time.
  auto reps = torch::zeros({1});
  if (g.rank() == 0) {
    const auto s = Clock::now();
    step();
    reps[0] = float(std::clamp(seconds / std::max(since(s), 1e-6), 3.0, 200.0));
  } else {
    step();
  }
  g.broadcast(reps, 0);
  std::vector<double> times;
  for (int i = 0; i < int(reps.item<float>()); ++i) {
    const auto s = Clock::now();
    step();
    times.push_back(since(s));
  }
  return median(std::move(times));
}

// The fraction of a data-parallel bucket's all-reduce that runs hidden behind compute, with
// every rank computing and reducing at once (as DDP reduces its buckets during backward): the
// median of `reps` 8 MiB all-reduces alone (c), of GEMMs lasting about as long alone (w), and of
// the two at once (b, the GEMMs run while the all-reduce is in flight): hidden = (c + w - b) / c,
// within [0, 1]. On a machine whose ranks fill its cores the reduction's own threads take cores
// from the compute, and little is hidden.
double overlap_fraction(comm::Group& g, int reps) {
  auto t = torch::ones({int64_t(2) << 20});  // 8 MiB, the default bucket
  auto a = torch::randn({256, 256}), b = torch::randn({256, 256});
  auto c = torch::mm(a, b);
  auto median_of = [&](auto&& fn) {
    std::vector<double> times;
    for (int i = 0; i < reps; ++i) {
      g.barrier();
      const auto s = Clock::now();
      fn();
      times.push_back(since(s));
    }
    return median(std::move(times));
  };
  const double comm_s = median_of([&] { g.allreduce(t); });
  const double mm_s = median_of([&] { c = torch::mm(a, b); });
  const int mms = std::max(1, int(std::lround(comm_s / std::max(mm_s, 1e-9))));
  auto compute = [&] {
    for (int i = 0; i < mms; ++i) c = torch::mm(a, b);
  };
  const double work_s = median_of(compute);
  const double both_s = median_of([&] {
    auto pending = g.allreduce_async(t);
    compute();
    pending.wait();
  });
  return std::clamp((comm_s + work_s - both_s) / comm_s, 0.0, 1.0);
}

}  // namespace

Link fit_allreduce(const std::vector<std::pair<double, double>>& points, int n) {
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  const double k = double(points.size());
  for (const auto& [bytes, s] : points) {
    const double x = 2.0 * (n - 1) / n * bytes;
    sx += x;
    sy += s;
    sxx += x * x;
    sxy += x * s;
  }
  const double b = (k * sxy - sx * sy) / (k * sxx - sx * sx);
  const double a = (sy - b * sx) / k;
  Link l;
  l.bandwidth = b > 0 ? 1 / b : 0;
  l.latency = std::max(0.0, a / (2.0 * (n - 1)));
  return l;
}

Result<HardwareProfile> profile_hardware(int ranks, double seconds) {
  if (ranks < 2) return Status::InvalidArgument("profile-hw: --ranks must be at least 2");
  if (!(seconds > 0)) return Status::InvalidArgument("profile-hw: --seconds must be above 0");
  HardwareProfile p;
  p.runtime_bytes =
      double(core::resident_bytes());  // the binary and libtorch loaded, no tensor yet
  p.ranks = ranks;
  p.cores = core::usable_cores();
  p.huge_pages = core::transparent_hugepage_mode();
  p.gemm_n = 1024;
  const int blas_before = core::blas_num_threads();
  core::set_blas_num_threads(1);  // one core per rank, as the workers run
  // GEMMs on every rank at once.
  std::vector<double> fp32(static_cast<size_t>(ranks)), bf16(static_cast<size_t>(ranks));
  {
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r)
      threads.emplace_back([&, r] {
        torch::set_num_threads(1);
        fp32[size_t(r)] = gemm_flops(p.gemm_n, torch::kFloat, seconds);
        bf16[size_t(r)] = gemm_flops(p.gemm_n / 2, torch::kBFloat16, seconds);
      });
    for (auto& t : threads) t.join();
  }
  p.gemm_fp32_flops = *std::min_element(fp32.begin(), fp32.end());
  p.gemm_bf16_flops = *std::min_element(bf16.begin(), bf16.end());
  {
    auto src = torch::ones({int64_t(64) << 20}), dst = torch::empty_like(src);
    const double s = median_s(seconds, [&] { dst.copy_(src); });
    p.memcpy_bytes_per_s = 2.0 * double(src.numel()) * 4 / s;  // read + write
  }
  const Result<int64_t> avail = core::available_memory_bytes();  // cgroup-aware
  p.memory_bytes = avail.ok() ? double(*avail) / ranks : 0;
  // Collectives over sizes 4 KiB .. 16 MiB.
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::string> errors(static_cast<size_t>(ranks));
  std::vector<HardwareProfile::Point> points;
  std::vector<double> overlap(static_cast<size_t>(ranks));
  {
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r)
      threads.emplace_back([&, r] {
        try {
          torch::set_num_threads(1);
          comm::GroupOptions o;
          o.timeout = std::chrono::milliseconds(60000);
          auto g = comm::Group::Create(store, r, ranks, o);
          for (const char* op : {"allreduce", "allgather", "all_to_all", "sendrecv"})
            for (int64_t bytes = 4096; bytes <= (int64_t(16) << 20); bytes *= 4) {
              const double s = collective_s(*g, op, bytes, seconds / 8);
              if (r == 0) points.push_back({op, double(bytes), s});
            }
          overlap[size_t(r)] = overlap_fraction(*g, 9);
        } catch (const std::exception& e) {
          errors[size_t(r)] = e.what();
        }
      });
    for (auto& t : threads) t.join();
  }
  if (blas_before > 0) core::set_blas_num_threads(blas_before);
  for (int r = 0; r < ranks; ++r)
    if (!errors[size_t(r)].empty())
      return Status::Internal("profile-hw: rank " + std::to_string(r) + ": " + errors[size_t(r)]);
  p.collectives = points;
  std::vector<std::pair<double, double>> ar;
  for (const auto& pt : points)
    if (pt.op == "allreduce") ar.emplace_back(pt.bytes, pt.seconds);
  p.link = fit_allreduce(ar, ranks);
  p.dp_overlap = *std::min_element(overlap.begin(), overlap.end());  // a step waits for the slowest
  return p;
}

nlohmann::json profile_to_cluster(const HardwareProfile& p, const std::string& name,
                                  double efficiency) {
  nlohmann::json link = {{"gb_per_s", p.link.bandwidth / 1e9},
                         {"latency_us", p.link.latency * 1e6}};
  nlohmann::json measured = {
      {"ranks", p.ranks},
      {"gemm_n", p.gemm_n},
      {"gemm_fp32_gflops", p.gemm_fp32_flops / 1e9},
      {"gemm_bf16_gflops", p.gemm_bf16_flops / 1e9},
      {"memcpy_gb_per_s", p.memcpy_bytes_per_s / 1e9},
      {"runtime_mb", p.runtime_bytes / 1e6},
      {"cores", p.cores},
      {"transparent_hugepages", p.huge_pages.empty() ? "not available" : p.huge_pages}};
  nlohmann::json table = nlohmann::json::array();
  for (const auto& pt : p.collectives)
    table.push_back({{"op", pt.op}, {"bytes", pt.bytes}, {"us", pt.seconds * 1e6}});
  measured["collectives"] = table;
  return {{"name", name},
          {"source", "measured by cairn plan profile-hw: " + std::to_string(p.ranks) +
                         " ranks as threads of one process, GEMM and collectives on all at once"},
          {"nodes", 1},
          {"devices_per_node", p.ranks},
          {"cores_per_node", p.cores},
          {"memory_gb", p.memory_bytes / double(1ull << 30)},
          {"peak_tflops", p.gemm_fp32_flops / 1e12},
          {"efficiency", efficiency},
          {"runtime_gb", p.runtime_bytes / double(1ull << 30)},
          {"dp_overlap", p.dp_overlap},
          {"intra", link},
          {"inter", link},
          {"measured", measured}};
}

}  // namespace cairn::planner
