#include "cairn/dashboard/prometheus.h"

#include <gtest/gtest.h>

namespace cairn::dashboard {
namespace {

TEST(PromText, FamiliesSamplesAndEscapedLabels) {
  PromText p;
  p.family("cairn_x_total", "A help\\text\nwith a newline", "counter");
  p.sample({{"a", "q\"uote"}, {"b", "back\\slash\nnl"}}, 3);
  p.family("cairn_empty_total", "no samples: not written", "counter");
  p.family("cairn_y", "a gauge", "gauge");
  p.sample({}, 0.1);
  p.sample({{"k", "v"}}, 1e6);
  const std::string t = p.text();
  EXPECT_NE(t.find("# HELP cairn_x_total A help\\\\text\\nwith a newline\n"
                   "# TYPE cairn_x_total counter\n"
                   "cairn_x_total{a=\"q\\\"uote\",b=\"back\\\\slash\\nnl\"} 3\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("# TYPE cairn_y gauge\n"), std::string::npos) << t;
  EXPECT_NE(t.find("\ncairn_y 0.1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("\ncairn_y{k=\"v\"} 1000000\n"), std::string::npos) << t;
  EXPECT_EQ(t.find("cairn_empty_total"), std::string::npos) << t;
}

TEST(PromText, HistogramBucketsAreCumulative) {
  PromText p;
  p.histogram(
      "cairn_d_seconds", "d", {0.5, 1, 2},
      {{{{"storage", "disk"}}, {0.25, 0.75, 0.875, 1.5, 9}}, {{{"storage", "memory"}}, {}}});
  const std::string t = p.text();
  EXPECT_NE(t.find("cairn_d_seconds_bucket{storage=\"disk\",le=\"0.5\"} 1\n"), std::string::npos)
      << t;
  EXPECT_NE(t.find("cairn_d_seconds_bucket{storage=\"disk\",le=\"1\"} 3\n"), std::string::npos);
  EXPECT_NE(t.find("cairn_d_seconds_bucket{storage=\"disk\",le=\"2\"} 4\n"), std::string::npos);
  EXPECT_NE(t.find("cairn_d_seconds_bucket{storage=\"disk\",le=\"+Inf\"} 5\n"), std::string::npos);
  EXPECT_NE(t.find("cairn_d_seconds_sum{storage=\"disk\"} 12.375\n"), std::string::npos);
  EXPECT_NE(t.find("cairn_d_seconds_count{storage=\"disk\"} 5\n"), std::string::npos);
  EXPECT_NE(t.find("cairn_d_seconds_count{storage=\"memory\"} 0\n"), std::string::npos);
  EXPECT_EQ(t.find("# TYPE cairn_d_seconds histogram"), t.rfind("# TYPE"))
      << "one TYPE line for the family";
}

}  // namespace
}  // namespace cairn::dashboard
