// Prometheus' text format (see prometheus.h), on prometheus-cpp's registry and serializer.
#include "cairn/dashboard/prometheus.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <map>
#include <sstream>

namespace cairn::dashboard {
namespace {

std::map<std::string, std::string> label_map(const Labels& labels) {
  return std::map<std::string, std::string>(labels.begin(), labels.end());
}

// prometheus-cpp 1.0 writes HELP text as it is: backslash and newline are escaped here, as the
// format wants them.
std::string help_text(const std::string& help) {
  std::string h;
  for (char c : help) {
    if (c == '\\')
      h += "\\\\";
    else if (c == '\n')
      h += "\\n";
    else
      h += c;
  }
  return h;
}

}  // namespace

struct PromText::Impl {
  prometheus::Registry registry;
  prometheus::Family<prometheus::Counter>* counters = nullptr;  // the current family: one of
  prometheus::Family<prometheus::Gauge>* gauges = nullptr;      // these two
};

PromText::PromText() : impl_(std::make_unique<Impl>()) {}
PromText::~PromText() = default;

void PromText::family(const std::string& name, const std::string& help, const std::string& type) {
  impl_->counters = nullptr;
  impl_->gauges = nullptr;
  if (type == "counter")
    impl_->counters =
        &prometheus::BuildCounter().Name(name).Help(help_text(help)).Register(impl_->registry);
  else
    impl_->gauges =
        &prometheus::BuildGauge().Name(name).Help(help_text(help)).Register(impl_->registry);
}

void PromText::sample(const Labels& labels, double value) {
  if (impl_->counters)
    impl_->counters->Add(label_map(labels)).Increment(value);
  else if (impl_->gauges)
    impl_->gauges->Add(label_map(labels)).Set(value);
}

void PromText::histogram(const std::string& name, const std::string& help,
                         const std::vector<double>& bounds, const std::vector<Series>& series) {
  impl_->counters = nullptr;
  impl_->gauges = nullptr;
  auto& family =
      prometheus::BuildHistogram().Name(name).Help(help_text(help)).Register(impl_->registry);
  for (const Series& s : series) {
    prometheus::Histogram& h = family.Add(label_map(s.labels), bounds);
    for (double v : s.observations) h.Observe(v);
  }
}

std::string PromText::text() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, impl_->registry.Collect());
  return out.str();
}

}  // namespace cairn::dashboard
