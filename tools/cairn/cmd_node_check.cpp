// `cairn node-check`: one node's part of the node check (`cairn run --network-check`). Times a
// fixed matmul workload, then forms a Gloo group with the other nodes of its check group
// (torchrun's environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; group rank 0 serves the
// store) and times all-reduces after a barrier. Writes the result as JSON to --result.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "cairn/comm/group.h"
#include "cairn/core/fs.h"
#include "commands.h"

namespace cairn::cli {
namespace {

struct NodeCheckArgs {
  std::string result;
  int matrix = 1024;
  int matmuls = 8;
  int allreduce_mb = 16;
  int allreduces = 3;
  double timeout_s = 60;
};

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// CAIRN_DEBUG_NODE_CHECK (tests): "fail" fails the check before it connects; "slow:F" does F
// times the matmul work, like a node F times slower.
struct DebugHook {
  bool fail = false;
  double slowdown = 1;
};

Result<DebugHook> debug_hook() {
  DebugHook h;
  const char* v = std::getenv("CAIRN_DEBUG_NODE_CHECK");
  if (!v || !*v) return h;
  const std::string s = v;
  if (s == "fail") {
    h.fail = true;
  } else if (s.rfind("slow:", 0) == 0) {
    char* end = nullptr;
    h.slowdown = std::strtod(s.c_str() + 5, &end);
    if (*end || !(h.slowdown >= 1) || h.slowdown > 1000)
      return Status::InvalidArgument("CAIRN_DEBUG_NODE_CHECK '" + s +
                                     "': expected slow:F with 1 <= F <= 1000");
  } else {
    return Status::InvalidArgument("CAIRN_DEBUG_NODE_CHECK '" + s + "': expected fail or slow:F");
  }
  return h;
}

Result<nlohmann::json> check(const NodeCheckArgs& a) {
  CAIRN_ASSIGN_OR_RETURN(DebugHook hook, debug_hook());
  if (hook.fail) return Status::Internal("failing as asked by CAIRN_DEBUG_NODE_CHECK=fail");
  torch::NoGradGuard no_grad;
  // The matmul workload: a square fp32 GEMM, once to warm up, then timed.
  auto x = torch::randn({a.matrix, a.matrix});
  auto y = torch::randn({a.matrix, a.matrix});
  auto out = torch::mm(x, y);
  const int matmuls = int(a.matmuls * hook.slowdown + 0.5);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < matmuls; ++i) torch::mm_out(out, x, y);
  const double matmul_s = since(t0);
  const double gflops = 2.0 * a.matrix * a.matrix * double(a.matrix) * matmuls / matmul_s / 1e9;

  comm::GroupOptions go;
  go.timeout = std::chrono::milliseconds(int64_t(a.timeout_s * 1000));
  CAIRN_ASSIGN_OR_RETURN(auto group, comm::Group::FromEnv(go));
  auto buf = torch::ones({int64_t(a.allreduce_mb) * 1024 * 1024 / 4});
  group->barrier();
  t0 = std::chrono::steady_clock::now();
  try {
    for (int i = 0; i < a.allreduces; ++i) group->allreduce(buf);
  } catch (const comm::CollectiveError& e) {
    return Status::PeerLost(e.what());
  }
  const double allreduce_s = since(t0);
  // Every rank added ones `allreduces` times: each element is size^allreduces.
  const double expect = std::pow(double(group->size()), a.allreduces);
  if (buf[0].item<float>() != float(expect) || buf[-1].item<float>() != float(expect))
    return Status::Internal("the all-reduce returned wrong values");
  spdlog::info(
      "node check: matmul {:.3f} s ({:.1f} GFLOP/s), all-reduce of {} MB x{} over {} "
      "node(s) {:.3f} s",
      matmul_s, gflops, a.allreduce_mb, a.allreduces, group->size(), allreduce_s);
  return nlohmann::json{{"ok", true},
                        {"matmul_s", matmul_s},
                        {"allreduce_s", allreduce_s},
                        {"gflops", gflops},
                        {"group_size", group->size()}};
}

void run_node_check(const NodeCheckArgs& a) {
  auto r = check(a);
  nlohmann::json j = r.ok() ? *r : nlohmann::json{{"ok", false}, {"error", r.status().message()}};
  if (!a.result.empty()) {
    Status s = core::write_file_atomic(a.result, j.dump() + "\n");
    if (!s.ok()) throw StatusError(s);
  } else {
    std::printf("%s\n", j.dump().c_str());
  }
  if (!r.ok()) throw StatusError(r.status());
}

}  // namespace

void register_node_check_command(CLI::App& app) {
  auto args = std::make_shared<NodeCheckArgs>();
  auto* cmd = app.add_subcommand("node-check", torch_command_description("node-check"));
  cmd->footer(
      "cairn run starts it with torchrun's variables for the node's check group; by hand, two\n"
      "nodes' worth on one machine:\n"
      "  RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29600 cairn node-check &\n"
      "  RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29600 cairn node-check\n"
      "Prints (or writes to --result) {\"ok\": true, \"matmul_s\": ..., \"allreduce_s\": ...}.");
  cmd->add_option("--result", args->result, "write the JSON result to this file (atomically)")
      ->option_text("FILE");
  cmd->add_option("--matrix", args->matrix, "side of the square matmul (default 1024)")
      ->check(CLI::Range(16, 16384));
  cmd->add_option("--matmuls", args->matmuls, "timed matmuls (default 8)")
      ->check(CLI::Range(1, 10000));
  cmd->add_option("--allreduce-mb", args->allreduce_mb, "all-reduce size in MB (default 16)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--allreduces", args->allreduces, "timed all-reduces (default 3)")
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--timeout", args->timeout_s,
                  "seconds for forming the group and for each collective (default 60)")
      ->check(CLI::Range(0.1, 86400.0));
  cmd->callback([args] { run_node_check(*args); });
}

}  // namespace cairn::cli
