// Prometheus' text exposition format (version 0.0.4), written: metric families with their HELP
// and TYPE lines, samples with escaped label values, histograms with cumulative buckets, +Inf,
// _sum and _count. Debian has no Prometheus client library for C++; `promtool check metrics`
// checks what this writes (tests/dashboard_cli_test.sh).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace cairn::dashboard {

using Labels = std::vector<std::pair<std::string, std::string>>;

class PromText {
 public:
  // Starts a family: `type` is counter, gauge or histogram. A counter's name ends in _total.
  void family(const std::string& name, const std::string& help, const std::string& type);
  // A sample of the current family, by its full name (the family's, or e.g. NAME_bucket).
  void sample(const std::string& name, const Labels& labels, double value);
  // A whole histogram family from the observations of each of its label sets: cumulative
  // counts at `bounds` (ascending), +Inf, _sum and _count.
  struct Series {
    Labels labels;
    std::vector<double> observations;
  };
  void histogram(const std::string& name, const std::string& help,
                 const std::vector<double>& bounds, const std::vector<Series>& series);
  const std::string& text() const { return out_; }

  // A label value as the format wants it: backslash, double quote and newline escaped.
  static std::string escape(const std::string& value);
  // A sample value: a whole number below 1e15 as digits, else the shortest decimal that reads
  // back exactly; +Inf, -Inf or NaN.
  static std::string number(double v);

 private:
  std::string out_;
};

}  // namespace cairn::dashboard
