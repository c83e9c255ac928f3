// Prometheus' text format (see prometheus.h).
#include "cairn/dashboard/prometheus.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace cairn::dashboard {

void PromText::family(const std::string& name, const std::string& help, const std::string& type) {
  std::string h;
  for (char c : help) {  // HELP text escapes backslash and newline only
    if (c == '\\')
      h += "\\\\";
    else if (c == '\n')
      h += "\\n";
    else
      h += c;
  }
  out_ += "# HELP " + name + " " + h + "\n# TYPE " + name + " " + type + "\n";
}

void PromText::sample(const std::string& name, const Labels& labels, double value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += "{";
    for (size_t i = 0; i < labels.size(); ++i) {
      if (i) out_ += ",";
      out_ += labels[i].first + "=\"" + escape(labels[i].second) + "\"";
    }
    out_ += "}";
  }
  out_ += " " + number(value) + "\n";
}

void PromText::histogram(const std::string& name, const std::string& help,
                         const std::vector<double>& bounds, const std::vector<Series>& series) {
  family(name, help, "histogram");
  for (const Series& s : series) {
    std::vector<double> sorted = s.observations;
    std::sort(sorted.begin(), sorted.end());
    double sum = 0;
    for (double v : sorted) sum += v;
    for (double b : bounds) {
      Labels l = s.labels;
      l.emplace_back("le", number(b));
      const auto n = std::upper_bound(sorted.begin(), sorted.end(), b) - sorted.begin();
      sample(name + "_bucket", l, double(n));
    }
    Labels inf = s.labels;
    inf.emplace_back("le", "+Inf");
    sample(name + "_bucket", inf, double(sorted.size()));
    sample(name + "_sum", s.labels, sum);
    sample(name + "_count", s.labels, double(sorted.size()));
  }
}

std::string PromText::escape(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string PromText::number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {  // a count or whole figure: no exponent
    std::snprintf(buf, sizeof(buf), "%.0f", v);
    return buf;
  }
  for (int precision = 6; precision <= 17; ++precision) {  // the shortest that reads back
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

}  // namespace cairn::dashboard
