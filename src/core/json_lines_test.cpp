#include "cairn/core/json_lines.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

namespace cairn::core {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("cairn_jsonl_" + std::to_string(getpid()) + "_" + name))
      .string();
}

TEST(EventLog, WritesEventAndTimeAndKeepsAGivenTime) {
  const std::string path = TempPath("events");
  std::filesystem::remove(path);
  EventLog log(path);
  log.write("start", {{"step", 3}});
  log.write("eval", {{"time", 12.5}, {"event", "ignored"}});
  auto rows = read_json_lines(path);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].at("event"), "start");
  EXPECT_EQ(rows[0].at("step"), 3);
  EXPECT_GT(rows[0].at("time").get<double>(), 1.6e9);
  EXPECT_EQ(rows[1].at("event"), "eval");
  EXPECT_EQ(rows[1].at("time").get<double>(), 12.5);
  std::filesystem::remove(path);
}

// Writers on several threads (as the persister and the loop share a log): whole lines only.
TEST(JsonLines, ConcurrentWritersNeverInterleaveAndTornLinesAreSkipped) {
  const std::string path = TempPath("lines");
  std::filesystem::remove(path);
  {
    JsonLinesWriter w(path);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&w, t] {
        for (int i = 0; i < 200; ++i)
          w.append({{"t", t}, {"i", i}, {"pad", std::string(100, 'x')}});
      });
    for (auto& th : threads) th.join();
  }
  std::ofstream(path, std::ios::app) << "{\"torn\": ";  // a writer killed mid-line
  auto rows = read_json_lines(path);
  EXPECT_EQ(rows.size(), 800u);
  EXPECT_TRUE(read_json_lines(TempPath("missing")).empty());
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace cairn::core
