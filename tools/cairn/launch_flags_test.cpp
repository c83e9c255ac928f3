// `cairn run` flags as the CLI parses them (launch_flags.h) and validates them
// (elastic::resolve_launch_options).
#include "launch_flags.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace cairn::elastic {
namespace {

// Parses `args` (what follows `cairn run`) the way the CLI does.
Result<LaunchOptions> parse(std::vector<std::string> args) {
  CLI::App app{"test"};
  LaunchFlags flags;
  cli::add_launch_flags(app, &flags);
  std::reverse(args.begin(), args.end());
  app.parse(args);
  cli::collect_unknown_flags(app, &flags);
  return resolve_launch_options(flags);
}

// The error message for `args`; fails the test if parsing succeeds or the code is not
// kInvalidArgument.
std::string error_of(std::vector<std::string> args) {
  auto r = parse(std::move(args));
  EXPECT_FALSE(r.ok());
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  return r.status().message();
}

TEST(LaunchOptions, DefaultsAreOneStandaloneWorker) {
  auto o = parse({"--", "prog"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->min_nodes, 1);
  EXPECT_EQ(o->max_nodes, 1);
  EXPECT_EQ(o->nproc_per_node, 1);
  EXPECT_EQ(o->node_rank, 0);
  EXPECT_TRUE(o->standalone);
  EXPECT_EQ(o->master_host, "");
  EXPECT_EQ(o->max_restarts, 0);
  EXPECT_DOUBLE_EQ(o->monitor_interval_s, 0.1);
  EXPECT_DOUBLE_EQ(o->grace_period_s, 10.0);
  EXPECT_EQ(o->run_dir, "");
  EXPECT_EQ(o->run_id, "");
  EXPECT_EQ(o->command, std::vector<std::string>{"prog"});
}

TEST(LaunchOptions, CommandAfterDashDashKeepsItsOwnFlags) {
  auto o = parse({"--nproc-per-node", "2", "--", "cairn", "train", "x.yaml", "--max-steps", "5",
                  "--help", "--", "-x"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->nproc_per_node, 2);
  EXPECT_EQ(o->command, (std::vector<std::string>{"cairn", "train", "x.yaml", "--max-steps", "5",
                                                  "--help", "--", "-x"}));
}

TEST(LaunchOptions, EveryFlagWithDashesAndUnderscores) {
  for (bool underscore : {false, true}) {
    auto name = [&](std::string s) {
      if (underscore) std::replace(s.begin() + 2, s.end(), '-', '_');
      return s;
    };
    auto o = parse({name("--nnodes=2:4"),
                    name("--nproc-per-node"),
                    "3",
                    name("--node-rank"),
                    "3",
                    name("--rdzv-endpoint"),
                    "node0:1234",
                    name("--rdzv-backend"),
                    "static",
                    name("--rdzv-id"),
                    "job7",
                    name("--max-restarts"),
                    "5",
                    name("--monitor-interval"),
                    "0.5",
                    name("--grace-period"),
                    "2.5",
                    name("--run-dir"),
                    "runs/x",
                    "--",
                    "prog",
                    "a"});
    ASSERT_TRUE(o.ok()) << o.status().ToString();
    EXPECT_EQ(o->min_nodes, 2);
    EXPECT_EQ(o->max_nodes, 4);
    EXPECT_EQ(o->nproc_per_node, 3);
    EXPECT_EQ(o->node_rank, 3);
    EXPECT_FALSE(o->standalone);
    EXPECT_EQ(o->master_host, "node0");
    EXPECT_EQ(o->master_port, 1234);
    EXPECT_EQ(o->run_id, "job7");
    EXPECT_EQ(o->max_restarts, 5);
    EXPECT_DOUBLE_EQ(o->monitor_interval_s, 0.5);
    EXPECT_DOUBLE_EQ(o->grace_period_s, 2.5);
    EXPECT_EQ(o->run_dir, "runs/x");
    EXPECT_EQ(o->command, (std::vector<std::string>{"prog", "a"}));
  }
}

TEST(LaunchOptions, EqualsAndSpaceFormsAgree) {
  auto a = parse({"--nproc-per-node=4", "--max-restarts=1", "--", "p"});
  auto b = parse({"--nproc-per-node", "4", "--max-restarts", "1", "--", "p"});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->nproc_per_node, b->nproc_per_node);
  EXPECT_EQ(a->max_restarts, b->max_restarts);
}

TEST(LaunchOptions, MissingCommand) {
  EXPECT_NE(error_of({}).find("no worker command"), std::string::npos);
  EXPECT_NE(error_of({"--nproc-per-node", "2"}).find("after --"), std::string::npos);
  EXPECT_NE(error_of({"--nproc-per-node", "2", "--"}).find("no worker command"), std::string::npos);
}

TEST(LaunchOptions, UnknownFlagsAreNamed) {
  std::string m = error_of({"--nproc-per-nod", "2", "--", "p"});
  EXPECT_NE(m.find("--nproc-per-nod"), std::string::npos) << m;
  m = error_of({"--standalone", "prog", "--lr", "1"});
  EXPECT_NE(m.find("--lr"), std::string::npos) << m;
  EXPECT_NE(m.find("after --"), std::string::npos) << m;
}

TEST(LaunchOptions, NprocMustBeAPositiveInteger) {
  for (std::string bad : {"0", "-1", "x", "1.5", "", "2x", "1025", "99999999999999999999"}) {
    std::string m = error_of({"--nproc-per-node", bad, "--", "p"});
    EXPECT_NE(m.find("--nproc-per-node"), std::string::npos) << bad << ": " << m;
  }
  for (std::string good : {"1", "8", "1024", "+2"}) {
    auto o = parse({"--nproc-per-node", good, "--", "p"});
    EXPECT_TRUE(o.ok()) << good;
  }
}

TEST(LaunchOptions, NnodesForms) {
  EXPECT_EQ(*parse_nnodes("1"), std::make_pair(1, 1));
  EXPECT_EQ(*parse_nnodes("3"), std::make_pair(3, 3));
  EXPECT_EQ(*parse_nnodes("1:4"), std::make_pair(1, 4));
  EXPECT_EQ(*parse_nnodes("2:2"), std::make_pair(2, 2));
  for (std::string bad : {"0", "-1", "x", "", ":", "1:", ":2", "2:1", "0:2", "1:2:3", "1.5", "1-2",
                          "65537", "1:65537"}) {
    auto r = parse_nnodes(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("--nnodes"), std::string::npos);
    std::string m = error_of({"--nnodes", bad, "--rdzv-endpoint", "h:1", "--", "p"});
    EXPECT_NE(m.find("--nnodes"), std::string::npos) << bad << ": " << m;
  }
}

TEST(LaunchOptions, EndpointForms) {
  EXPECT_EQ(*parse_endpoint("host", 29400), std::make_pair(std::string("host"), 29400));
  EXPECT_EQ(*parse_endpoint("host:1", 29400), std::make_pair(std::string("host"), 1));
  EXPECT_EQ(*parse_endpoint("10.0.0.1:65535", 1), std::make_pair(std::string("10.0.0.1"), 65535));
  EXPECT_EQ(*parse_endpoint("[::1]:29500", 1), std::make_pair(std::string("::1"), 29500));
  EXPECT_EQ(*parse_endpoint("[fe80::1]", 7), std::make_pair(std::string("fe80::1"), 7));
  for (std::string bad : {"", ":29400", "host:", "host:0", "host:65536", "host:x", "a:b:c", "::1",
                          "[::1", "[::1]x", "[::1]:", "[]:1", "ho st:1", "h/x:1", "host:-1"}) {
    auto r = parse_endpoint(bad, 29400);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("--rdzv-endpoint"), std::string::npos);
  }
}

TEST(LaunchOptions, EndpointDefaultsToTorchrunPort) {
  auto o = parse({"--rdzv-endpoint", "node0", "--", "p"});
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->master_port, kDefaultRdzvPort);
  EXPECT_FALSE(o->standalone);  // one node, but at a fixed address
}

TEST(LaunchOptions, MalformedEndpointIsNamed) {
  std::string m = error_of({"--nnodes", "2", "--rdzv-endpoint", "h:99999", "--", "p"});
  EXPECT_NE(m.find("--rdzv-endpoint"), std::string::npos) << m;
}

TEST(LaunchOptions, MultiNodeNeedsAnEndpoint) {
  std::string m = error_of({"--nnodes", "2", "--", "p"});
  EXPECT_NE(m.find("--rdzv-endpoint"), std::string::npos) << m;
  m = error_of({"--nnodes", "1:2", "--node-rank", "1", "--", "p"});
  EXPECT_NE(m.find("--rdzv-endpoint"), std::string::npos) << m;
}

TEST(LaunchOptions, NodeRankMustBeInRange) {
  auto ok = parse({"--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint", "h:1", "--", "p"});
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->node_rank, 1);
  for (std::string bad : {"2", "-1", "x", "7"}) {
    std::string m =
        error_of({"--nnodes", "2", "--node-rank", bad, "--rdzv-endpoint", "h:1", "--", "p"});
    EXPECT_NE(m.find("--node-rank"), std::string::npos) << bad << ": " << m;
  }
  std::string m = error_of({"--node-rank", "1", "--", "p"});  // one node
  EXPECT_NE(m.find("--node-rank"), std::string::npos) << m;
}

TEST(LaunchOptions, StandaloneIsOneNodeWithoutEndpoint) {
  auto o = parse({"--standalone", "--nproc-per-node", "2", "--", "p"});
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(o->standalone);
  EXPECT_NE(error_of({"--standalone", "--nnodes", "2", "--", "p"}).find("--standalone"),
            std::string::npos);
  EXPECT_NE(error_of({"--standalone", "--rdzv-endpoint", "h:1", "--", "p"}).find("--standalone"),
            std::string::npos);
}

TEST(LaunchOptions, RdzvBackendStaticOrCairn) {
  std::string m = error_of({"--rdzv-backend", "c10d", "--", "p"});
  EXPECT_NE(m.find("--rdzv-backend"), std::string::npos) << m;
  EXPECT_NE(m.find("static"), std::string::npos) << m;
  EXPECT_NE(m.find("cairn"), std::string::npos) << m;
}

TEST(LaunchOptions, ElasticBackend) {
  auto o = parse({"--rdzv-backend", "cairn", "--rdzv-endpoint", "10.0.0.1:29400", "--nnodes", "1:4",
                  "--node-id", "n7", "--node-host", "10.0.0.7", "--job-token", "t",
                  "--embed-master", "--rdzv-wait", "2", "--heartbeat-timeout", "6", "--", "p"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_TRUE(o->elastic);
  EXPECT_TRUE(o->embed_master);
  EXPECT_EQ(o->min_nodes, 1);
  EXPECT_EQ(o->max_nodes, 4);
  EXPECT_EQ(o->node_id, "n7");
  EXPECT_EQ(o->node_host, "10.0.0.7");
  EXPECT_EQ(o->job_token, "t");
  EXPECT_EQ(o->master_host, "10.0.0.1");
  EXPECT_DOUBLE_EQ(o->rdzv_wait_s, 2);
  EXPECT_DOUBLE_EQ(o->heartbeat_timeout_s, 6);
  EXPECT_NE(error_of({"--rdzv-backend", "cairn", "--", "p"}).find("--rdzv-endpoint"),
            std::string::npos);
  EXPECT_NE(error_of({"--rdzv-backend", "cairn", "--rdzv-endpoint", "h:1", "--nnodes", "2",
                      "--node-rank", "1", "--", "p"})
                .find("assigns node ranks"),
            std::string::npos);
  EXPECT_NE(error_of({"--node-id", "x", "--", "p"}).find("need --rdzv-backend cairn"),
            std::string::npos);
  EXPECT_NE(error_of({"--rdzv-backend", "cairn", "--rdzv-endpoint", "h:1", "--heartbeat-timeout",
                      "0.1", "--", "p"})
                .find("--heartbeat-timeout"),
            std::string::npos);
}

TEST(LaunchOptions, TlsToTheMaster) {
  const std::vector<std::string> cairn = {"--rdzv-backend", "cairn", "--rdzv-endpoint", "h:1"};
  auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> args = cairn;
    args.insert(args.end(), more.begin(), more.end());
    args.insert(args.end(), {"--", "p"});
    return args;
  };
  auto o = parse(with({"--embed-master", "--tls-ca", "ca.pem", "--tls-cert", "n.pem", "--tls-key",
                       "n.key", "--tls-verify-clients"}));
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->tls_ca_path, "ca.pem");
  EXPECT_EQ(o->tls_cert_path, "n.pem");
  EXPECT_EQ(o->tls_key_path, "n.key");
  EXPECT_TRUE(o->tls_verify_clients);
  EXPECT_FALSE(o->insecure);
  o = parse(with({"--insecure"}));
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_TRUE(o->insecure);
  EXPECT_NE(error_of(with({"--tls-cert", "n.pem", "--tls-ca", "c"})).find("go together"),
            std::string::npos);
  EXPECT_NE(error_of(with({"--tls-cert", "n.pem", "--tls-key", "k"})).find("needs --tls-ca"),
            std::string::npos);
  EXPECT_NE(error_of(with({"--tls-ca", "c", "--insecure"})).find("exclude each other"),
            std::string::npos);
  EXPECT_NE(error_of(with({"--tls-ca", "c", "--embed-master"})).find("embedded master's"),
            std::string::npos);
  EXPECT_NE(error_of(with({"--tls-ca", "c", "--tls-verify-clients"})).find("--embed-master"),
            std::string::npos);
  EXPECT_NE(error_of(with({"--tls-ca", ""})).find("--tls-ca"), std::string::npos);
  EXPECT_NE(error_of({"--insecure", "--", "p"}).find("need --rdzv-backend cairn"),
            std::string::npos);
}

TEST(LaunchOptions, NetworkCheckConfiguresTheEmbeddedMaster) {
  auto o =
      parse({"--rdzv-backend", "cairn", "--rdzv-endpoint", "h:1", "--embed-master",
             "--network-check", "--exclude-straggler", "--network-check-timeout", "9", "--", "p"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_TRUE(o->network_check);
  EXPECT_TRUE(o->exclude_straggler);
  EXPECT_DOUBLE_EQ(o->network_check_timeout_s, 9);
  EXPECT_NE(error_of({"--network-check", "--", "p"}).find("--embed-master"), std::string::npos);
  EXPECT_NE(
      error_of({"--rdzv-backend", "cairn", "--rdzv-endpoint", "h:1", "--network-check", "--", "p"})
          .find("pass them to `cairn master`"),
      std::string::npos);
  EXPECT_NE(error_of({"--rdzv-backend", "cairn", "--rdzv-endpoint", "h:1", "--embed-master",
                      "--exclude-straggler", "--", "p"})
                .find("need --network-check"),
            std::string::npos);
  EXPECT_NE(error_of({"--rdzv-backend", "cairn", "--rdzv-endpoint", "h:1", "--embed-master",
                      "--network-check", "--network-check-timeout", "0", "--", "p"})
                .find("--network-check-timeout"),
            std::string::npos);
}

TEST(LaunchOptions, MasterAddrAndPort) {
  auto o = parse({"--nnodes", "2", "--master-addr", "10.1.1.1", "--", "p"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->master_host, "10.1.1.1");
  EXPECT_EQ(o->master_port, kDefaultMasterPort);
  o = parse({"--master_addr", "[::1]", "--master_port", "777", "--", "p"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->master_host, "::1");
  EXPECT_EQ(o->master_port, 777);
  EXPECT_FALSE(o->standalone);
  EXPECT_NE(error_of({"--master-port", "1", "--", "p"}).find("--master-port"), std::string::npos);
  EXPECT_NE(error_of({"--master-addr", "h", "--master-port", "0", "--", "p"}).find("--master-port"),
            std::string::npos);
  EXPECT_NE(error_of({"--master-addr", "h", "--rdzv-endpoint", "h:1", "--", "p"}).find("both"),
            std::string::npos);
  EXPECT_NE(error_of({"--master-addr", "a b", "--", "p"}).find("--master-addr"), std::string::npos);
}

TEST(LaunchOptions, RestartsAndIntervals) {
  for (std::string bad : {"-1", "x", "1.5"})
    EXPECT_NE(error_of({"--max-restarts", bad, "--", "p"}).find("--max-restarts"),
              std::string::npos);
  for (std::string bad : {"0", "-1", "x", "61", "nan", "inf", "1e9"})
    EXPECT_NE(error_of({"--monitor-interval", bad, "--", "p"}).find("--monitor-interval"),
              std::string::npos)
        << bad;
  for (std::string bad : {"-1", "x", "3601", "1s"})
    EXPECT_NE(error_of({"--grace-period", bad, "--", "p"}).find("--grace-period"),
              std::string::npos)
        << bad;
  auto o = parse({"--grace-period", "0", "--monitor-interval", "1e-2", "--", "p"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_DOUBLE_EQ(o->grace_period_s, 0.0);
  EXPECT_DOUBLE_EQ(o->monitor_interval_s, 0.01);
}

TEST(LaunchOptions, EmptyValuesAreErrors) {
  for (std::string flag : {"--nnodes", "--nproc-per-node", "--node-rank", "--rdzv-endpoint",
                           "--rdzv-backend", "--rdzv-id", "--master-addr", "--max-restarts",
                           "--monitor-interval", "--grace-period", "--run-dir"}) {
    std::string m = error_of({flag, "", "--", "p"});
    EXPECT_NE(m.find(flag), std::string::npos) << flag << ": " << m;
  }
}

TEST(LaunchOptions, CliErrorsForMissingValues) {
  CLI::App app{"test"};
  LaunchFlags flags;
  cli::add_launch_flags(app, &flags);
  std::vector<std::string> args = {"--nproc-per-node"};
  EXPECT_THROW(app.parse(args), CLI::ParseError);
}

}  // namespace
}  // namespace cairn::elastic
