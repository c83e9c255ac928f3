// The master refuses bad input without changing or journaling anything: a ReportFailure that
// names no node or no exit, and a start on a port that is taken.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "cairn.grpc.pb.h"
#include "cairn/elastic/master_client.h"
#include "cairn/elastic/master_server.h"
#include "elastic/master/master_testing_impl.h"
#include "elastic/testing_impl.h"

namespace cairn::elastic {
namespace {

using testing::Deadline;
using testing::ScratchDir;

constexpr char kToken[] = "input-test-token";

MasterServerOptions options(const std::string& journal,
                            const std::string& address = "127.0.0.1:0") {
  MasterServerOptions o;
  o.listen_address = address;
  o.job_token = kToken;
  o.journal_path = journal;
  o.rdzv = {1, 2, 1, 5, 5};
  o.tick_interval_s = 0.02;
  o.shutdown_deadline_s = 0.5;
  return o;
}

std::string read(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

grpc::Status report(v1::Master::Stub& rpc, const v1::ReportFailureRequest& req) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  ctx.AddMetadata(kJobTokenMetadataKey, kToken);
  v1::ReportFailureResponse resp;
  return rpc.ReportFailure(&ctx, req, &resp);
}

TEST(MasterInput, AFailureReportWithoutNodeOrExitIsRefusedAndNotJournaled) {
  Deadline guard(60);
  ScratchDir dir("master_input");
  const std::string journal = dir / "master.journal";
  auto server = MasterServer::Start(options(journal));
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto rpc = v1::Master::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  const std::string before = read(journal);

  v1::ReportFailureRequest empty;
  grpc::Status s = report(*rpc, empty);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("node_id is empty"), std::string::npos) << s.error_message();

  v1::ReportFailureRequest no_exit;
  no_exit.set_node_id("a");
  no_exit.set_rank(0);
  s = report(*rpc, no_exit);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("neither exit_code nor signal"), std::string::npos);

  v1::ReportFailureRequest bad_rank = no_exit;
  bad_rank.set_signal(9);
  bad_rank.set_rank(-7);
  EXPECT_EQ(report(*rpc, bad_rank).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(read(journal), before) << "a refused report must not be journaled";

  v1::ReportFailureRequest good = no_exit;
  good.set_signal(9);
  good.set_diagnosis("killed: by SIGKILL");
  EXPECT_TRUE(report(*rpc, good).ok());
  EXPECT_NE(read(journal), before) << "a valid report is journaled";
}

TEST(MasterInput, APortInUseFailsAndLeavesNoNewJournal) {
  Deadline guard(60);
  ScratchDir dir("master_input_port");
  auto first = MasterServer::Start(options(""));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  const std::string taken = "127.0.0.1:" + std::to_string((*first)->port());
  const std::string journal = dir / "second.journal";
  auto second = MasterServer::Start(options(journal, taken));
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("cannot listen on " + taken), std::string::npos)
      << second.status().ToString();
  EXPECT_FALSE(std::filesystem::exists(journal)) << "the failed master created its journal";

  // An existing journal is left as it was.
  { std::ofstream(dir / "kept.journal") << ""; }
  auto third = MasterServer::Start(options(dir / "kept.journal", taken));
  ASSERT_FALSE(third.ok());
  EXPECT_TRUE(std::filesystem::exists(dir / "kept.journal"));
}

}  // namespace
}  // namespace cairn::elastic
