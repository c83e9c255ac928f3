// The planner tests' shared cases: a small cluster of two nodes and a small model's workload.
#pragma once

#include <string>

#include "cairn/planner/planner.h"

namespace cairn::planner::testing {

inline Cluster TwoNodes() {
  Cluster c;
  c.name = "test";
  c.nodes = 2;
  c.devices_per_node = 2;
  c.memory_bytes = 1e9;
  c.peak_flops = 1e12;
  c.efficiency = 0.5;
  c.intra = Link{1e10, 1e-6};
  c.inter = Link{1e9, 1e-5};
  c.dp_overlap = 0.5;
  return c;
}

inline Workload Tiny(const std::string& arch = "gpt2") {
  Workload w;
  w.model.arch = arch;
  w.model.n_layer = 4;
  w.model.n_head = 4;
  w.model.n_embd = 64;
  w.model.vocab_size = 500;
  w.model.block_size = 64;
  if (arch == "llama") w.model.n_kv_head = 2;
  w.seq_len = 64;
  w.global_batch = 8;
  return w;
}

}  // namespace cairn::planner::testing
