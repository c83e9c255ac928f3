// bench/shard_bench: shard requests served per second by the master's shard service on this
// machine, and the latency of one fetch. The master runs in this process on loopback (its own
// gRPC threads); each client thread has its own channel and loops GetShards(done = the shard it
// got last, want = W) for a few seconds. Target: at least 10,000 requests/s.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "cairn/elastic/master_client.h"
#include "cairn/elastic/master_server.h"

using namespace cairn;
using namespace cairn::elastic;

namespace {

constexpr char kToken[] = "bench-token";

struct Figures {
  double requests_per_s = 0, shards_per_s = 0, p50_us = 0, p99_us = 0;
};

Figures run(const std::string& address, int threads, int want, double seconds) {
  std::vector<std::vector<double>> lat(static_cast<size_t>(threads));
  std::vector<int64_t> shards(static_cast<size_t>(threads), 0);
  std::atomic<bool> go{false}, stop{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      MasterClientOptions o;
      o.address = address;
      o.job_token = kToken;
      auto c = MasterClient::Open(o);
      if (!c.ok()) std::abort();
      const std::string worker = "w" + std::to_string(t);
      std::vector<Shard> done;
      (void)(*c)->get_shards("bench", worker, done, 0);  // connect before timing
      while (!go) std::this_thread::yield();
      while (!stop) {
        auto t0 = std::chrono::steady_clock::now();
        auto b = (*c)->get_shards("bench", worker, done, want);
        lat[size_t(t)].push_back(
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
                .count());
        if (!b.ok()) {
          std::fprintf(stderr, "GetShards failed: %s\n", b.status().ToString().c_str());
          std::abort();
        }
        shards[size_t(t)] += int64_t(b->shards.size());
        done = b->shards;
      }
    });
  auto t0 = std::chrono::steady_clock::now();
  go = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : ts) t.join();
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<double> all;
  int64_t total_shards = 0;
  for (int t = 0; t < threads; ++t) {
    all.insert(all.end(), lat[size_t(t)].begin(), lat[size_t(t)].end());
    total_shards += shards[size_t(t)];
  }
  std::sort(all.begin(), all.end());
  Figures f;
  f.requests_per_s = double(all.size()) / took;
  f.shards_per_s = double(total_shards) / took;
  f.p50_us = all[all.size() / 2];
  f.p99_us = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 3.0;
  spdlog::set_level(spdlog::level::warn);
  MasterServerOptions mo;
  mo.listen_address = "127.0.0.1:0";
  mo.job_token = kToken;
  auto server = MasterServer::Start(mo);
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    return 1;
  }
  {
    MasterClientOptions o;
    o.address = (*server)->address();
    o.job_token = kToken;
    auto c = MasterClient::Open(o);
    ShardParams p;
    p.num_samples = int64_t(1) << 23;  // enough shards for every configuration below
    p.shard_size = 1;
    p.num_epochs = 1;
    p.lease_s = 600;
    auto created = (*c)->create_dataset("bench", p);
    if (!created.ok()) {
      std::fprintf(stderr, "%s\n", created.status().ToString().c_str());
      return 1;
    }
  }
  std::printf("shard service on %s, %u cores, %.1f s per configuration\n",
              (*server)->address().c_str(), std::thread::hardware_concurrency(), seconds);
  std::printf("%8s %6s %12s %12s %10s %10s %14s\n", "threads", "want", "requests/s", "shards/s",
              "p50 us", "p99 us", "vs 10,000/s");
  for (int want : {1, 16})
    for (int threads : {1, 4, 16}) {
      Figures f = run((*server)->address(), threads, want, seconds);
      std::printf("%8d %6d %12.0f %12.0f %10.0f %10.0f %13.2fx\n", threads, want,
                  f.requests_per_s, f.shards_per_s, f.p50_us, f.p99_us, f.requests_per_s / 1e4);
    }
  return 0;
}
