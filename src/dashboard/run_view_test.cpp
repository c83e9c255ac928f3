#include "cairn/dashboard/run_view.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "dashboard/dashboard_testing_impl.h"

namespace cairn::dashboard {
namespace {

using testing::TempRunDir;

TEST(JsonLinesTail, ReadsWhatWasAppendedAndWaitsForAWholeLine) {
  TempRunDir d("tail");
  JsonLinesTail t(d.path() + "/metrics.jsonl");
  EXPECT_EQ(t.refresh(), 0u) << "no file yet";
  d.append("metrics.jsonl", "{\"step\":1}\n{\"step\":2}\n{\"st");
  EXPECT_EQ(t.refresh(), 2u);
  EXPECT_EQ(t.refresh(), 0u) << "the third line has no newline yet";
  d.append("metrics.jsonl", "ep\":3}\n");
  EXPECT_EQ(t.refresh(), 1u);
  ASSERT_EQ(t.rows().size(), 3u);
  EXPECT_EQ(t.rows()[2]["step"], 3);
  EXPECT_EQ(t.skipped(), 0);
}

TEST(JsonLinesTail, BadLinesAreCountedNeverThrown) {
  TempRunDir d("bad");
  d.append("events.jsonl",
           "{\"event\":\"start\"}\nnot json at all\n[1,2]\n\n{\"event\":\"end\"}\n");
  JsonLinesTail t(d.path() + "/events.jsonl");
  EXPECT_EQ(t.refresh(), 2u);
  EXPECT_EQ(t.skipped(), 2) << "a non-JSON line and an array; the empty line is no row";
  EXPECT_NE(t.last_error().find("[1,2]"), std::string::npos) << t.last_error();
  // A writer that never ends its line: dropped past 1 MiB, not kept growing.
  d.append("events.jsonl", std::string(1100000, 'x'));
  t.refresh();
  EXPECT_EQ(t.skipped(), 3);
  d.append("events.jsonl", "\n{\"event\":\"after\"}\n");
  t.refresh();
  EXPECT_EQ(t.rows().back()["event"], "after");
}

TEST(JsonLinesTail, AReplacedFileIsReadAgain) {
  TempRunDir d("replaced");
  d.append("m.jsonl", "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
  JsonLinesTail t(d.path() + "/m.jsonl");
  EXPECT_EQ(t.refresh(), 3u);
  std::ofstream(d.path() + "/m.jsonl", std::ios::trunc) << "{\"a\":9}\n";
  t.refresh();
  ASSERT_EQ(t.rows().size(), 1u);
  EXPECT_EQ(t.rows()[0]["a"], 9);
}

TEST(RunView, StatusOfARunningAndThenEndedJob) {
  TempRunDir d("status");
  RunView v(d.path());
  EXPECT_EQ(v.status()["state"], "waiting");
  d.append("events.jsonl",
           "{\"event\":\"start\",\"time\":100,\"max_steps\":10,\"world_size\":2}\n");
  for (int s = 1; s <= 4; ++s)
    d.append("metrics.jsonl", "{\"step\":" + std::to_string(s) +
                                  ",\"time\":" + std::to_string(100 + 2 * s) +
                                  ",\"loss\":5,\"lr\":0.1,\"step_time\":2,\"tokens_per_s\":50" +
                                  (s == 2 ? ",\"val_loss\":4.5" : "") + "}\n");
  nlohmann::json s = v.status();
  EXPECT_EQ(s["state"], "running");
  EXPECT_EQ(s["step"], 4);
  EXPECT_EQ(s["max_steps"], 10);
  EXPECT_EQ(s["world_size"], 2);
  EXPECT_EQ(s["val_loss"], 4.5);
  EXPECT_EQ(s["val_step"], 2);
  EXPECT_DOUBLE_EQ(s["eta_s"].get<double>(), 6 * 2.0);
  EXPECT_GT(s["goodput"].get<double>(), 0);
  d.append("events.jsonl", "{\"event\":\"end\",\"time\":120,\"reason\":\"completed\"}\n");
  s = v.status();
  EXPECT_EQ(s["state"], "ended");
  EXPECT_FALSE(s.contains("eta_s"));
  // Paging: rows from an index, at most `limit`, and where to go on.
  nlohmann::json page = v.metrics(1, 2);
  EXPECT_EQ(page["rows"].size(), 2u);
  EXPECT_EQ(page["rows"][0]["step"], 2);
  EXPECT_EQ(page["next"], 3);
  EXPECT_EQ(page["total"], 4);
  EXPECT_EQ(v.metrics(99, 10)["rows"].size(), 0u);
  EXPECT_EQ(v.metrics(99, 10)["next"], 4);
}

TEST(RunView, UnderAnAgentTheJobEndsWithTheAgent) {
  TempRunDir d("agent");
  RunView v(d.path());
  d.append("events.jsonl",
           "{\"event\":\"agent_start\",\"time\":1}\n{\"event\":\"start\",\"time\":2}\n"
           "{\"event\":\"worker_failed\",\"time\":3,\"diagnosis\":\"killed\"}\n"
           "{\"event\":\"restart\",\"time\":4}\n{\"event\":\"end\",\"time\":5}\n");
  nlohmann::json s = v.status();
  EXPECT_EQ(s["state"], "running") << "a worker's end is not the job's";
  EXPECT_EQ(s["failures"], 1);
  EXPECT_EQ(s["restarts"], 1);
  d.append("events.jsonl", "{\"event\":\"agent_end\",\"time\":6,\"exit_code\":0}\n");
  EXPECT_EQ(v.status()["state"], "ended");
  const std::string text = v.prometheus();
  EXPECT_NE(text.find("cairn_worker_failures_total{diagnosis=\"killed\"} 1\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("cairn_restarts_total{reason=\"killed\"} 1\n"), std::string::npos) << text;
}

TEST(RunView, PrometheusTextCountsTokensAndSteps) {
  TempRunDir d("prom");
  d.append("metrics.jsonl",
           "{\"step\":1,\"loss\":3,\"step_time\":0.5,\"tokens_per_s\":1000,\"mfu\":0.25}\n"
           "{\"step\":2,\"loss\":2.5,\"step_time\":0.25,\"tokens_per_s\":2000,\"mfu\":0.5,"
           "\"mem_peak_mb\":512}\nbroken\n");
  d.append("events.jsonl",
           "{\"event\":\"checkpoint_saved\",\"time\":7,\"storage\":\"memory\",\"duration_ms\":"
           "20}\n{\"event\":\"checkpoint_persisted\",\"time\":9}\n");
  RunView v(d.path());
  const std::string t = v.prometheus();
  EXPECT_NE(t.find("cairn_tokens_total 1000\n"), std::string::npos) << t;
  EXPECT_NE(t.find("cairn_steps_total 2\n"), std::string::npos);
  EXPECT_NE(t.find("cairn_train_loss 2.5\n"), std::string::npos);
  EXPECT_NE(t.find("cairn_mfu_ratio 0.5\n"), std::string::npos);
  EXPECT_NE(t.find("cairn_memory_peak_bytes 512000000\n"), std::string::npos);
  EXPECT_NE(t.find("cairn_step_duration_seconds_bucket{le=\"0.25\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("cairn_checkpoint_save_duration_seconds_count{storage=\"memory\"} 1\n"),
            std::string::npos);
  EXPECT_NE(t.find("cairn_checkpoint_last_success_timestamp_seconds 9\n"), std::string::npos);
  EXPECT_NE(t.find("cairn_dashboard_unreadable_lines_total{file=\"metrics.jsonl\"} 1\n"),
            std::string::npos);
  EXPECT_NE(t.find("cairn_build_info{version=\""), std::string::npos);
}

TEST(RunView, TheSlowestRankStandsOut) {
  TempRunDir d("ranks");
  RunView v(d.path());
  // Ranks 0 and 2 even, rank 1 three times slower in the recent steps; an older world of 2
  // ranks is not mixed in.
  d.append("metrics.jsonl", "{\"step\":1,\"rank_compute_s\":[9,9]}\n");
  for (int s = 2; s <= 4; ++s)
    d.append("metrics.jsonl",
             "{\"step\":" + std::to_string(s) + ",\"rank_compute_s\":[0.2,0.6,0.2]}\n");
  nlohmann::json s = v.status();
  ASSERT_EQ(s["rank_compute_s"].size(), 3u) << s.dump();
  EXPECT_DOUBLE_EQ(s["rank_compute_s"][1].get<double>(), 0.6);
  EXPECT_EQ(s["slowest_rank"], 1);
  EXPECT_DOUBLE_EQ(s["slowest_ratio"].get<double>(), 3.0);
  EXPECT_EQ(s["straggler"], 1);
  const std::string t = v.prometheus();
  EXPECT_NE(t.find("cairn_step_compute_duration_seconds_count{rank=\"1\"} 4\n"), std::string::npos)
      << t;
  EXPECT_NE(t.find("cairn_step_compute_duration_seconds_bucket{rank=\"0\",le=\"0.25\"} 3\n"),
            std::string::npos)
      << t;
  const size_t at = t.find("\ncairn_rank_compute_imbalance_ratio ");
  ASSERT_NE(at, std::string::npos) << t;
  EXPECT_NEAR(std::stod(t.substr(at + 36)), 3.0, 1e-9);
  // Evenly loaded ranks: a slowest one, no straggler.
  d.append("metrics.jsonl", std::string(10, ' ') + "\n");
  for (int s = 5; s <= 14; ++s)
    d.append("metrics.jsonl",
             "{\"step\":" + std::to_string(s) + ",\"rank_compute_s\":[0.2,0.21,0.2]}\n");
  s = v.status();
  EXPECT_LT(s["slowest_ratio"].get<double>(), 1.1);
  EXPECT_FALSE(s.contains("straggler")) << s.dump();
}

TEST(RunView, MembershipFromTheMastersEvents) {
  TempRunDir d("members");
  RunView v(d.path());
  EXPECT_FALSE(v.status().contains("nodes")) << "no master, no membership";
  d.append("events.jsonl",
           "{\"event\":\"master_start\",\"time\":1,\"min_nodes\":1,\"max_nodes\":3}\n"
           "{\"event\":\"master_node_joined\",\"time\":2,\"node\":{\"id\":\"a\","
           "\"host\":\"10.0.0.1\"}}\n"
           "{\"event\":\"master_node_joined\",\"time\":2,\"node\":{\"id\":\"b\"}}\n"
           "{\"event\":\"master_round_opened\",\"time\":2,\"number\":1}\n"
           "{\"event\":\"master_round_completed\",\"time\":5,\"round\":{\"number\":1,"
           "\"world_size\":4,\"members\":[{\"id\":\"a\"},{\"id\":\"b\"}]}}\n"
           "{\"event\":\"master_failure\",\"time\":6,\"node_id\":\"b\",\"rank\":3}\n"
           "{\"event\":\"master_node_removed\",\"time\":7,\"node_id\":\"b\",\"reason\":"
           "\"dropped\"}\n"
           "{\"event\":\"master_node_joined\",\"time\":8,\"node\":{\"id\":\"c\"}}\n"
           "{\"event\":\"master_node_excluded\",\"time\":9,\"node_id\":\"c\",\"reason\":"
           "\"failed the node check\"}\n"
           "{\"event\":\"master_round_opened\",\"time\":10,\"number\":2}\n"
           "{\"event\":\"master_round_completed\",\"time\":10.5,\"round\":{\"number\":2,"
           "\"world_size\":2,\"members\":[{\"id\":\"a\"}]}}\n");
  nlohmann::json s = v.status();
  ASSERT_EQ(s["nodes"].size(), 3u) << s.dump();
  EXPECT_EQ(s["nodes"][0]["id"], "a");
  EXPECT_EQ(s["nodes"][0]["state"], "member");
  EXPECT_EQ(s["nodes"][0]["host"], "10.0.0.1");
  EXPECT_EQ(s["nodes"][1]["state"], "dropped");
  EXPECT_EQ(s["nodes"][1]["failures"], 1);
  EXPECT_EQ(s["nodes"][1]["since"], 7);
  EXPECT_EQ(s["nodes"][2]["state"], "excluded");
  EXPECT_EQ(s["nodes"][2]["reason"], "failed the node check");
  EXPECT_EQ(s["rounds"], 2);
  EXPECT_EQ(s["world_size"], 2);
  std::string t = v.prometheus();
  EXPECT_NE(t.find("cairn_nodes{state=\"member\"} 1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("cairn_nodes{state=\"excluded\"} 1\n"), std::string::npos) << t;
  // The master's rounds gathered from the first join after the previous round: 2 to 5 and
  // 8 (c's join) to 10.5.
  EXPECT_NE(t.find("cairn_rendezvous_duration_seconds_sum 5.5\n"), std::string::npos) << t;
  // An agent's own rendezvous, when there is one, is what the metric counts.
  d.append("events.jsonl",
           "{\"event\":\"rendezvous\",\"time\":11,\"duration_ms\":250,\"world_size\":2}\n");
  EXPECT_DOUBLE_EQ(v.status()["rendezvous_s"].get<double>(), 0.25);
  t = v.prometheus();
  EXPECT_NE(t.find("cairn_rendezvous_duration_seconds_sum 0.25\n"), std::string::npos) << t;
  EXPECT_NE(t.find("cairn_rendezvous_duration_seconds_count 1\n"), std::string::npos) << t;
}

TEST(RunView, LogTailsOnlyOfTheRunsOwnLogs) {
  TempRunDir d("logs");
  d.append("train.log", "one\ntwo\nthree\n");
  d.append("logs/worker-0.log", "w\n");
  d.append("notes.txt", "not a log\n");
  RunView v(d.path());
  EXPECT_EQ(v.logs(), (std::vector<std::string>{"logs/worker-0.log", "train.log"}));
  auto tail = v.log_tail("train.log", 2);
  ASSERT_TRUE(tail.ok()) << tail.status().ToString();
  EXPECT_EQ(*tail, "two\nthree\n");
  EXPECT_EQ(*v.log_tail("train.log", 100), "one\ntwo\nthree\n");
  for (const char* name : {"../train.log", "notes.txt", "/etc/passwd", "logs/../train.log"}) {
    auto bad = v.log_tail(name, 2);
    ASSERT_FALSE(bad.ok()) << name;
    EXPECT_EQ(bad.status().code(), StatusCode::kNotFound);
    EXPECT_NE(bad.status().message().find("its logs: logs/worker-0.log, train.log"),
              std::string::npos)
        << bad.status().message();
  }
}

TEST(RunView, LinksInTheRunDirectoryAreNotFollowed) {
  TempRunDir d("links");
  d.append("train.log", "mine\n");
  const std::string secret = d.path() + "-secret.txt";
  { std::ofstream(secret) << "not the run's\n"; }
  std::filesystem::create_symlink(secret, d.path() + "/stolen.log");
  std::filesystem::create_symlink(secret, d.path() + "/plan.svg");
  std::filesystem::create_symlink(secret, d.path() + "/metrics.jsonl");
  RunView v(d.path());
  // Not listed, not served, not parsed.
  EXPECT_EQ(v.logs(), (std::vector<std::string>{"train.log"}));
  EXPECT_FALSE(v.log_tail("stolen.log", 5).ok());
  auto plan = v.plan_picture();
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("symbolic link"), std::string::npos)
      << plan.status().ToString();
  EXPECT_EQ(v.status().dump().find("not the run"), std::string::npos);
  std::filesystem::remove(secret);
}

}  // namespace
}  // namespace cairn::dashboard
