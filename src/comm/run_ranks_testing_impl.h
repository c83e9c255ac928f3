// Tests' ranks as threads: fn(rank, group) on `world` threads, each with a Gloo group over one
// shared in-memory store and one intra-op thread (the ranks share the machine's cores). An
// exception on a rank fails the test, naming the rank.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <vector>

#include "cairn/comm/group.h"

namespace cairn::comm {

inline void RunRanks(int world, const std::function<void(int, Group&)>& fn,
                     std::chrono::milliseconds timeout = std::chrono::milliseconds(30000)) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::thread> threads;
  std::vector<std::string> errors(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        torch::set_num_threads(1);
        GroupOptions o;
        o.timeout = timeout;
        auto g = Group::Create(store, r, world, o);
        fn(r, *g);
      } catch (const std::exception& e) {
        errors[size_t(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[size_t(r)], "") << "rank " << r;
}

}  // namespace cairn::comm
