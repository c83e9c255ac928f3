#include "cairn/elastic/slurm.h"

#include <gtest/gtest.h>

namespace cairn::elastic {
namespace {

using Hosts = std::vector<std::string>;

Hosts expand(const std::string& text) {
  auto r = expand_hostlist(text);
  EXPECT_TRUE(r.ok()) << text << ": " << r.status().ToString();
  return r.ok() ? *r : Hosts{};
}

TEST(Hostlist, ExpandsAsScontrolShowHostnames) {
  EXPECT_EQ(expand("node1"), (Hosts{"node1"}));
  EXPECT_EQ(expand("n[1-3]"), (Hosts{"n1", "n2", "n3"}));
  EXPECT_EQ(expand("gpu[08-11,20],login"),
            (Hosts{"gpu08", "gpu09", "gpu10", "gpu11", "gpu20", "login"}));
  EXPECT_EQ(expand("r[1-2]n[01-02]"), (Hosts{"r1n01", "r1n02", "r2n01", "r2n02"}));
  EXPECT_EQ(expand("a-b[9-10].cluster,c"), (Hosts{"a-b9.cluster", "a-b10.cluster", "c"}));
  EXPECT_EQ(expand("x[099-101]"), (Hosts{"x099", "x100", "x101"}));
}

TEST(Hostlist, MalformedListsAreNamed) {
  struct Case {
    const char* text;
    const char* says;
  } cases[] = {
      {"", "an empty host name"},
      {"a,,b", "an empty host name"},
      {"n[1-3", "a '[' without its ']'"},
      {"n1-3]", "a ']' without its '['"},
      {"n[3-1]", "the range 3-1 runs backwards"},
      {"n[a-b]", "has 'a-b', not N or N-M"},
      {"n[1-2,]", "has '', not N or N-M"},
      {"n[[1]]", "nested brackets"},
      {"n[0-99999]", "more than 65536 hosts"},
      {"n[0-999]m[0-999]", "more than 65536 hosts"},
  };
  for (const Case& c : cases) {
    auto r = expand_hostlist(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.says), std::string::npos)
        << c.text << ": " << r.status().message();
    EXPECT_NE(r.status().message().find(std::string("'") + c.text + "'"), std::string::npos);
  }
}

Env job(const std::string& node_id, const std::string& nodename) {
  return {{"SLURM_JOB_ID", "4242"},
          {"SLURM_NNODES", "3"},
          {"SLURM_NODEID", node_id},
          {"SLURM_JOB_NODELIST", "gpu[07-09]"},
          {"SLURMD_NODENAME", nodename}};
}

TEST(Slurm, TheHeadNodeRunsTheMasterAndEveryNodeMeetsThere) {
  LaunchFlags f;
  f.nproc_per_node = "8";
  auto head = slurm_launch_flags(f, job("0", "gpu07"));
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(*head->rdzv_backend, "cairn");
  EXPECT_EQ(*head->nnodes, "3");
  EXPECT_EQ(*head->node_id, "gpu07");
  EXPECT_EQ(*head->rdzv_endpoint, "gpu07:" + std::to_string(slurm_master_port(4242)));
  EXPECT_EQ(slurm_master_port(4242), 24242);
  EXPECT_TRUE(head->embed_master);
  EXPECT_EQ(*head->rdzv_id, "slurm-4242");
  EXPECT_EQ(*head->run_dir, "runs/slurm-4242/gpu07");
  EXPECT_EQ(*head->nproc_per_node, "8");
  auto other = slurm_launch_flags(f, job("2", "gpu09"));
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->embed_master);
  EXPECT_EQ(*other->rdzv_endpoint, *head->rdzv_endpoint);
  EXPECT_EQ(*other->node_id, "gpu09");
  // The result is a valid elastic launch.
  f.command = {"/bin/true"};
  auto resolved = resolve_launch_options(*slurm_launch_flags(f, job("2", "gpu09")));
  ASSERT_TRUE(resolved.ok()) << resolved.status().ToString();
  EXPECT_TRUE(resolved->elastic);
  EXPECT_EQ(resolved->max_nodes, 3);
  EXPECT_EQ(resolved->master_host, "gpu07");
  // Mutual TLS on one command line: node 0's master verifies clients, the others only connect.
  f.tls_ca = "ca.pem";
  f.tls_cert = "node.pem";
  f.tls_key = "node.key";
  f.tls_verify_clients = true;
  for (const char* node : {"0", "2"}) {
    auto tls = resolve_launch_options(*slurm_launch_flags(f, job(node, "gpu07")));
    ASSERT_TRUE(tls.ok()) << node << ": " << tls.status().ToString();
    EXPECT_EQ(tls->tls_verify_clients, std::string(node) == "0");
    EXPECT_EQ(tls->tls_ca_path, "ca.pem");
  }
  f.tls_ca.reset();
  f.tls_cert.reset();
  f.tls_key.reset();
  f.tls_verify_clients = false;
  // What the user gives wins: an endpoint, a node range (elastic), a run directory.
  f.rdzv_endpoint = "10.0.0.1:29400";
  f.nnodes = "2:3";
  f.run_dir = "/scratch/run";
  auto given = slurm_launch_flags(f, job("0", "gpu07"));
  ASSERT_TRUE(given.ok());
  EXPECT_EQ(*given->rdzv_endpoint, "10.0.0.1:29400");
  EXPECT_EQ(*given->nnodes, "2:3");
  EXPECT_EQ(*given->run_dir, "/scratch/run");
}

TEST(Slurm, WhenItApplies) {
  LaunchFlags f;
  EXPECT_FALSE(wants_slurm(f, {}));
  EXPECT_TRUE(wants_slurm(f, job("0", "gpu07")));
  LaunchFlags endpoint;
  endpoint.rdzv_endpoint = "h:1";
  EXPECT_FALSE(wants_slurm(endpoint, job("0", "gpu07"))) << "an explicit endpoint: not Slurm's";
  LaunchFlags stat;
  stat.rdzv_backend = "static";
  EXPECT_FALSE(wants_slurm(stat, job("0", "gpu07")));
  LaunchFlags slurm;
  slurm.rdzv_backend = "slurm";
  EXPECT_TRUE(wants_slurm(slurm, {}));
}

TEST(Slurm, AMissingOrBadVariableIsNamed) {
  struct Case {
    const char* key;
    const char* value;  // nullptr: unset
    const char* says;
  } cases[] = {
      {"SLURM_JOB_ID", nullptr, "$SLURM_JOB_ID is not set"},
      {"SLURM_NNODES", "two", "$SLURM_NNODES is 'two', not a whole number >= 1"},
      {"SLURM_NODEID", "3", "$SLURM_NODEID 3 is not below $SLURM_NNODES 3"},
      {"SLURM_JOB_NODELIST", "gpu[07-08]", "names 2 hosts, $SLURM_NNODES says 3"},
      {"SLURM_JOB_NODELIST", "gpu[07-", "a '[' without its ']'"},
  };
  for (const Case& c : cases) {
    Env env = job("1", "gpu08");
    if (c.value)
      env[c.key] = c.value;
    else
      env.erase(c.key);
    auto r = slurm_launch_flags(LaunchFlags{}, env);
    ASSERT_FALSE(r.ok()) << c.key;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.says), std::string::npos) << r.status().message();
  }
  LaunchFlags ranked;
  ranked.node_rank = "1";
  auto r = slurm_launch_flags(ranked, job("1", "gpu08"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--node-rank 1"), std::string::npos);
}

}  // namespace
}  // namespace cairn::elastic
