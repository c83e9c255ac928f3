#include "cairn/dashboard/server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "dashboard/dashboard_testing_impl.h"

namespace cairn::dashboard {
namespace {

using nlohmann::json;
using testing::TempRunDir;

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_.append("metrics.jsonl",
                "{\"step\":1,\"loss\":4,\"time\":1}\n{\"step\":2,\"loss\":3,\"time\":2}\n");
    dir_.append("events.jsonl", "{\"event\":\"start\",\"time\":1,\"max_steps\":5}\n");
    dir_.append("train.log", "hello\n");
  }
  std::unique_ptr<Server> Start(ServerOptions o = {}) {
    auto s = Server::Start(std::make_shared<RunView>(dir_.path()), std::move(o));
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(s).value() : nullptr;
  }
  TempRunDir dir_{"server"};
};

TEST_F(ServerTest, ServesThePageTheApiAndMetrics) {
  auto server = Start();
  ASSERT_NE(server, nullptr);
  EXPECT_GT(server->port(), 0);
  EXPECT_EQ(server->url(), "http://127.0.0.1:" + std::to_string(server->port()) + "/");
  httplib::Client c("127.0.0.1", server->port());
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("<title>cairn dashboard</title>"), std::string::npos);
  EXPECT_EQ(page->get_header_value("Content-Type"), "text/html; charset=utf-8");
  for (const char* asset : {"/dashboard.js", "/dashboard.css", "/uPlot.iife.min.js",
                            "/uPlot.min.css", "/uPlot.LICENSE"}) {
    auto r = c.Get(asset);
    ASSERT_TRUE(r) << asset;
    EXPECT_EQ(r->status, 200) << asset;
    EXPECT_GT(r->body.size(), 100u) << asset;
  }
  auto status = c.Get("/api/status");
  ASSERT_TRUE(status);
  EXPECT_EQ(json::parse(status->body)["step"], 2);
  auto rows = c.Get("/api/metrics?since=1");
  ASSERT_TRUE(rows);
  json j = json::parse(rows->body);
  EXPECT_EQ(j["rows"].size(), 1u);
  EXPECT_EQ(j["next"], 2);
  dir_.append("metrics.jsonl", "{\"step\":3,\"loss\":2,\"time\":3}\n");
  EXPECT_EQ(json::parse(c.Get("/api/metrics?since=2")->body)["rows"][0]["step"], 3)
      << "what the job appended since";
  EXPECT_EQ(json::parse(c.Get("/api/events")->body)["rows"][0]["event"], "start");
  EXPECT_EQ(json::parse(c.Get("/api/logs")->body)["logs"][0], "train.log");
  EXPECT_EQ(c.Get("/api/log?name=train.log&lines=5")->body, "hello\n");
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(metrics->body.find("cairn_train_step 3\n"), std::string::npos) << metrics->body;
}

TEST_F(ServerTest, BadRequestsGetClearErrors) {
  auto server = Start();
  ASSERT_NE(server, nullptr);
  httplib::Client c("127.0.0.1", server->port());
  struct Case {
    const char* path;
    int status;
    const char* says;
  } cases[] = {
      {"/api/metrics?since=abc", 400, "since: 'abc' is not a whole number >= 0"},
      {"/api/metrics?since=-1", 400, "is not a whole number"},
      {"/api/metrics?limit=100001", 400, "limit: 100001 is more than the most allowed, 100000"},
      {"/api/metrics?sinse=3", 400, "unknown parameter 'sinse' (known: limit, since)"},
      {"/api/status?x=1", 400, "this path takes none"},
      {"/api/log", 400, "name: missing"},
      {"/api/log?name=../../etc/passwd", 404, "no log '../../etc/passwd'"},
      {"/api/log?name=train.log&lines=1e9", 400, "lines: '1e9' is not a whole number"},
      {"/nothing/here", 404, "no such path: /nothing/here"},
  };
  for (const Case& k : cases) {
    auto r = c.Get(k.path);
    ASSERT_TRUE(r) << k.path;
    EXPECT_EQ(r->status, k.status) << k.path;
    const std::string error = json::parse(r->body, nullptr, false).value("error", "");
    EXPECT_NE(error.find(k.says), std::string::npos) << k.path << ": " << r->body;
  }
}

TEST_F(ServerTest, AwayFromLoopbackEveryRequestNeedsTheToken) {
  auto refused = Server::Start(std::make_shared<RunView>(dir_.path()), {"0.0.0.0", 0, ""});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("CAIRN_JOB_TOKEN"), std::string::npos);
  // With a token but without TLS: the token would cross the network in plaintext.
  ServerOptions o;
  o.bind = "0.0.0.0";
  o.token = "s3cret";
  refused = Server::Start(std::make_shared<RunView>(dir_.path()), o);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("--dashboard-insecure"), std::string::npos)
      << refused.status().ToString();
  o.insecure = true;
  auto server = Start(o);
  ASSERT_NE(server, nullptr);
  httplib::Client c("127.0.0.1", server->port());
  for (const char* path : {"/", "/api/status", "/metrics", "/uPlot.iife.min.js"}) {
    auto r = c.Get(path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << path;
  }
  EXPECT_EQ(c.Get("/api/status?token=wrong")->status, 401);
  EXPECT_EQ(c.Get("/api/status?token=s3cret")->status, 200);
  EXPECT_EQ(c.Get("/metrics", {{"Authorization", "Bearer s3cret"}})->status, 200);
  EXPECT_EQ(c.Get("/metrics", {{"Authorization", "Bearer s3cre"}})->status, 401);
  EXPECT_EQ(c.Post("/api/stop", {{"X-Cairn-Request", "stop"}}, "", "text/plain")->status, 401);
  // A liveness probe needs no token and learns nothing of the job.
  auto health = c.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "ok\n");
}

TEST_F(ServerTest, OverTlsTheTokenNeverTravelsInTheClear) {
  // openssl is a test prerequisite (scripts/install-deps.sh installs it).
  ASSERT_EQ(std::system("command -v openssl >/dev/null 2>&1"), 0) << "openssl is not installed";
  const std::string d = dir_.path();
  const std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-addext subjectAltName=IP:127.0.0.1 -keyout " +
      d + "/key.pem -out " + d + "/cert.pem >" + d + "/openssl.log 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  ServerOptions o;
  o.bind = "0.0.0.0";
  o.token = "s3cret";
  o.tls_cert_path = d + "/cert.pem";
  o.tls_key_path = d + "/key.pem";
  auto server = Start(o);
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->url().rfind("https://", 0), 0u) << server->url();
  // The printed address names the variable, never the token.
  EXPECT_NE(server->url().find("?token=$CAIRN_JOB_TOKEN"), std::string::npos) << server->url();
  EXPECT_EQ(server->url().find("s3cret"), std::string::npos) << server->url();
  httplib::SSLClient c("127.0.0.1", server->port());
  c.set_ca_cert_path((d + "/cert.pem").c_str());
  c.enable_server_certificate_verification(true);
  auto status = c.Get("/api/status", {{"Authorization", "Bearer s3cret"}});
  ASSERT_TRUE(status) << httplib::to_string(status.error());
  EXPECT_EQ(status->status, 200);
  EXPECT_EQ(c.Get("/api/status")->status, 401);
  // A plaintext client gets no answer from the TLS port.
  httplib::Client plain("127.0.0.1", server->port());
  plain.set_connection_timeout(2);
  plain.set_read_timeout(2);
  auto r = plain.Get("/healthz");
  EXPECT_TRUE(!r || r->status != 200);
  // Files that are not a certificate and its key: refused, named.
  o.tls_key_path = d + "/cert.pem";
  auto bad = Server::Start(std::make_shared<RunView>(d), o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("not a PEM certificate and its private key"),
            std::string::npos)
      << bad.status().ToString();
  o.tls_key_path.clear();
  EXPECT_FALSE(Server::Start(std::make_shared<RunView>(d), o).ok());
}

TEST_F(ServerTest, ThePlanPictureWhenTheRunHasOne) {
  auto server = Start();
  ASSERT_NE(server, nullptr);
  httplib::Client c("127.0.0.1", server->port());
  EXPECT_FALSE(json::parse(c.Get("/api/status")->body)["plan_picture"].get<bool>());
  auto none = c.Get("/plan.svg");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 404);
  EXPECT_NE(none->body.find("parallel.plan=auto"), std::string::npos) << none->body;
  dir_.append("plan.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>\n");
  EXPECT_TRUE(json::parse(c.Get("/api/status")->body)["plan_picture"].get<bool>());
  auto svg = c.Get("/plan.svg");
  ASSERT_TRUE(svg);
  EXPECT_EQ(svg->status, 200);
  EXPECT_EQ(svg->get_header_value("Content-Type"), "image/svg+xml");
  EXPECT_NE(svg->get_header_value("Content-Security-Policy").find("default-src 'none'"),
            std::string::npos);
  EXPECT_EQ(svg->body, "<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>\n");
  EXPECT_EQ(c.Get("/plan.svg?x=1")->status, 400);
}

TEST_F(ServerTest, StoppingTheJobOnlyWithControlAndTheHeader) {
  {
    auto reader = Start();
    ASSERT_NE(reader, nullptr);
    httplib::Client c("127.0.0.1", reader->port());
    EXPECT_FALSE(json::parse(c.Get("/api/status")->body)["control"].get<bool>());
    auto r = c.Post("/api/stop", {{"X-Cairn-Request", "stop"}}, "", "text/plain");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403);
    EXPECT_NE(r->body.find("--dashboard-control"), std::string::npos) << r->body;
  }
  std::vector<std::string> asked;
  ServerOptions o;
  o.stop_job = [&](const std::string& who) {
    asked.push_back(who);
    return asked.size() == 1 ? Status::Ok() : Status::FailedPrecondition("already stopping");
  };
  auto server = Start(o);
  ASSERT_NE(server, nullptr);
  httplib::Client c("127.0.0.1", server->port());
  EXPECT_TRUE(json::parse(c.Get("/api/status")->body)["control"].get<bool>());
  EXPECT_EQ(c.Get("/api/stop")->status, 405);
  auto plain = c.Post("/api/stop", "", "text/plain");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->status, 400) << "a cross-site form cannot send the header";
  EXPECT_NE(plain->body.find("X-Cairn-Request: stop"), std::string::npos) << plain->body;
  EXPECT_TRUE(asked.empty());
  auto r = c.Post("/api/stop", {{"X-Cairn-Request", "stop"}}, "", "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202);
  EXPECT_TRUE(json::parse(r->body)["stopping"].get<bool>());
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0], "127.0.0.1");
  auto again = c.Post("/api/stop", {{"X-Cairn-Request", "stop"}}, "", "text/plain");
  EXPECT_EQ(again->status, 409);
  EXPECT_NE(again->body.find("already stopping"), std::string::npos);
}

TEST(Server, APortInUseIsAnIoError) {
  TempRunDir dir("port");
  auto first = Server::Start(std::make_shared<RunView>(dir.path()), {});
  ASSERT_TRUE(first.ok());
  auto second =
      Server::Start(std::make_shared<RunView>(dir.path()), {"127.0.0.1", (*first)->port(), ""});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kIoError);
}

}  // namespace
}  // namespace cairn::dashboard
