#include "cairn/dashboard/prometheus.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace cairn::dashboard {
namespace {

TEST(PromText, FamiliesSamplesAndEscapedLabels) {
  PromText p;
  p.family("cairn_x_total", "A help\\text\nwith a newline", "counter");
  p.sample("cairn_x_total", {{"a", "q\"uote"}, {"b", "back\\slash\nnl"}}, 3);
  EXPECT_EQ(p.text(),
            "# HELP cairn_x_total A help\\\\text\\nwith a newline\n"
            "# TYPE cairn_x_total counter\n"
            "cairn_x_total{a=\"q\\\"uote\",b=\"back\\\\slash\\nnl\"} 3\n");
}

TEST(PromText, NumbersReadBackExactly) {
  EXPECT_EQ(PromText::number(0.1), "0.1");
  EXPECT_EQ(PromText::number(1e6), "1000000");
  EXPECT_EQ(PromText::number(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(PromText::number(2.5e20), "2.5e+20");
  EXPECT_EQ(PromText::number(-3), "-3");
  EXPECT_EQ(std::strtod(PromText::number(1.0 / 3).c_str(), nullptr), 1.0 / 3);
  EXPECT_EQ(PromText::number(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(PromText::number(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(PromText::number(std::nan("")), "NaN");
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
