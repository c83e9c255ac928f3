#include "cairn/elastic/worker_env.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "elastic/testing_impl.h"

namespace cairn::elastic {
namespace {

World two_nodes_of_three(int node_rank) {
  World w;
  w.num_nodes = 2;
  w.node_rank = node_rank;
  w.nproc_per_node = 3;
  w.master_addr = "node0";
  w.master_port = 29400;
  w.run_id = "job";
  w.round = 2;
  return w;
}

TEST(WorkerEnv, TorchrunVariablesForEveryWorkerOfEveryNode) {
  WorkerEnvOptions o;
  o.max_restarts = 4;
  o.run_dir = "/runs/x";
  o.num_cores = 12;
  for (int node = 0; node < 2; ++node) {
    for (int local = 0; local < 3; ++local) {
      Env e = worker_env(two_nodes_of_three(node), local, o, {});
      const std::string rank = std::to_string(node * 3 + local);
      EXPECT_EQ(e["RANK"], rank);
      EXPECT_EQ(e["LOCAL_RANK"], std::to_string(local));
      EXPECT_EQ(e["WORLD_SIZE"], "6");
      EXPECT_EQ(e["LOCAL_WORLD_SIZE"], "3");
      EXPECT_EQ(e["GROUP_RANK"], std::to_string(node));
      EXPECT_EQ(e["GROUP_WORLD_SIZE"], "2");
      EXPECT_EQ(e["ROLE_NAME"], "default");
      EXPECT_EQ(e["ROLE_RANK"], rank);
      EXPECT_EQ(e["ROLE_WORLD_SIZE"], "6");
      EXPECT_EQ(e["MASTER_ADDR"], "node0");
      EXPECT_EQ(e["MASTER_PORT"], "29400");
      EXPECT_EQ(e["TORCHELASTIC_RESTART_COUNT"], "2");
      EXPECT_EQ(e["TORCHELASTIC_MAX_RESTARTS"], "4");
      EXPECT_EQ(e["TORCHELASTIC_RUN_ID"], "job");
      EXPECT_EQ(e["TORCHELASTIC_USE_AGENT_STORE"], "False");
      EXPECT_EQ(e["CAIRN_RUN_DIR"], "/runs/x");
      EXPECT_EQ(e["OMP_NUM_THREADS"], "4");
    }
  }
}

TEST(WorkerEnv, BaseIsKeptButLauncherVariablesWin) {
  Env base = {{"PATH", "/bin"}, {"RANK", "99"}, {"MASTER_PORT", "1"}, {"HOME", "/root"}};
  Env e = worker_env(two_nodes_of_three(1), 0, {}, base);
  EXPECT_EQ(e["PATH"], "/bin");
  EXPECT_EQ(e["HOME"], "/root");
  EXPECT_EQ(e["RANK"], "3");
  EXPECT_EQ(e["MASTER_PORT"], "29400");
}

TEST(WorkerEnv, OmpThreadsIsCoresPerWorkerAtLeastOneUnlessSet) {
  World w;
  w.nproc_per_node = 4;
  struct Case {
    int cores;
    std::string want;
  };
  for (Case c : {Case{16, "4"}, Case{7, "1"}, Case{4, "1"}, Case{2, "1"}, Case{1, "1"},
                 Case{0, "1"}, Case{9, "2"}}) {
    WorkerEnvOptions o;
    o.num_cores = c.cores;
    EXPECT_EQ(worker_env(w, 0, o, {})["OMP_NUM_THREADS"], c.want) << c.cores;
  }
  WorkerEnvOptions o;
  o.num_cores = 64;
  EXPECT_EQ(worker_env(w, 0, o, {{"OMP_NUM_THREADS", "3"}})["OMP_NUM_THREADS"], "3");
}

TEST(WorkerEnv, EnvironRoundTrip) {
  const char* raw[] = {"A=1", "B=x=y", "EMPTY=", "NOEQUALS", nullptr};
  Env e = env_from_environ(const_cast<char**>(raw));
  EXPECT_EQ(e.size(), 3u);
  EXPECT_EQ(e["A"], "1");
  EXPECT_EQ(e["B"], "x=y");
  EXPECT_EQ(e["EMPTY"], "");
  EXPECT_EQ(to_envp(e), (std::vector<std::string>{"A=1", "B=x=y", "EMPTY="}));
  EXPECT_TRUE(env_from_environ(nullptr).empty());
}

TEST(WorkerEnv, CairnMeansThisBinary) {
  EXPECT_EQ(resolve_self_command({"cairn", "train", "x.yaml"}, "/opt/bin/cairn"),
            (std::vector<std::string>{"/opt/bin/cairn", "train", "x.yaml"}));
  EXPECT_EQ(resolve_self_command({"python3", "cairn"}, "/x"),
            (std::vector<std::string>{"python3", "cairn"}));
  EXPECT_EQ(resolve_self_command({"./cairn"}, "/x"), (std::vector<std::string>{"./cairn"}));
}

TEST(WorkerEnv, FindExecutable) {
  testing::ScratchDir dir("find_exe");
  const std::string tool = dir / "tool";
  std::ofstream(tool) << "#!/bin/sh\n";
  ::chmod(tool.c_str(), 0755);
  const std::string plain = dir / "plain";
  std::ofstream(plain) << "x";
  std::filesystem::create_directories(dir / "subdir");

  EXPECT_EQ(*find_executable("tool", "/nonexistent:" + dir.path()), tool);
  EXPECT_EQ(*find_executable("sh", "/nonexistent::/bin"), "/bin/sh");
  EXPECT_EQ(*find_executable(tool, ""), tool);
  EXPECT_EQ(find_executable("plain", dir.path()).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(find_executable("subdir", dir.path()).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(find_executable(plain, "").status().code(), StatusCode::kNotFound);
  auto missing = find_executable("no-such-tool-xyz", "/bin:/usr/bin");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("no-such-tool-xyz"), std::string::npos);
  EXPECT_FALSE(find_executable("", "/bin").ok());
}

}  // namespace
}  // namespace cairn::elastic
