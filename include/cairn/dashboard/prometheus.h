// Prometheus' text exposition format (version 0.0.4), written with Debian's prometheus-cpp:
// families of gauges and counters with their samples, histograms from their observations.
// A PromText is built afresh for each scrape (the dashboard's metrics are read from the run
// directory, not kept in the process). `promtool check metrics` checks what it writes
// (tests/dashboard_cli_test.sh).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace cairn::dashboard {

using Labels = std::vector<std::pair<std::string, std::string>>;

class PromText {
 public:
  PromText();
  ~PromText();
  PromText(const PromText&) = delete;
  PromText& operator=(const PromText&) = delete;

  // Starts a family: `type` is "counter" (its name ends in _total) or "gauge".
  void family(const std::string& name, const std::string& help, const std::string& type);
  // A sample of the current family; a counter's value must be >= 0.
  void sample(const Labels& labels, double value);
  // A whole histogram family from the observations of each of its label sets: cumulative
  // counts at `bounds` (ascending), +Inf, _sum and _count.
  struct Series {
    Labels labels;
    std::vector<double> observations;
  };
  void histogram(const std::string& name, const std::string& help,
                 const std::vector<double>& bounds, const std::vector<Series>& series);
  // Every family with at least one sample, serialized.
  std::string text() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::dashboard
