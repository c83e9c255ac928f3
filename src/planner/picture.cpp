// The plan's picture (planner.h: plan_svg).
#include <algorithm>
#include <cstdio>
#include <iterator>
#include <sstream>

#include "cairn/planner/planner.h"

namespace cairn::planner {
namespace {

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", v);
  return buf;
}

std::string fmt(const char* f, double v) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

struct Part {
  const char* name;
  const char* color;
};
constexpr Part kTime[] = {{"compute", "#4878d0"},
                          {"recompute", "#82c6e2"},
                          {"tp", "#ee854a"},
                          {"cp", "#d65f5f"},
                          {"dp", "#956cb4"},
                          {"pipeline sends", "#8c613c"},
                          {"pipeline bubble", "#bbbbbb"},
                          {"waiting for a core", "#dddddd"},
                          {"optimizer", "#6acc64"}};
constexpr Part kMemory[] = {{"parameters", "#4878d0"},
                            {"gradients", "#6acc64"},
                            {"optimizer", "#956cb4"},
                            {"activations", "#ee854a"},
                            {"buffers", "#bbbbbb"}};

}  // namespace

std::string plan_svg(const Candidate& c, const std::vector<Cost>& stages, double budget_bytes,
                     const std::string& title) {
  const double gib = double(1ull << 30);
  const int n = int(stages.size());
  const double left = 70, panel = 380, gap = 60, top = 70, row = 28, bar = 18;
  const double width = left + 2 * panel + gap + 30;
  const double height = top + row * std::max(n, 1) + 90;
  double time_max = 1e-30, mem_max = budget_bytes / gib;
  for (const Cost& k : stages) {
    time_max = std::max(time_max, k.step_s());
    mem_max = std::max(mem_max, k.memory_bytes() / gib);
  }
  mem_max = std::max(mem_max, 1e-30);
  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(width) << "\" height=\""
    << num(height) << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">" << escape(title)
    << "</text>\n";
  o << "<text x=\"10\" y=\"38\">" << escape(c.plan.summary()) << ", micro-batch " << c.micro_batch
    << "</text>\n";
  const double x_time = left, x_mem = left + panel + gap;
  o << "<text x=\"" << num(x_time) << "\" y=\"" << num(top - 10)
    << "\">step time per stage, s (max " << fmt("%.4g", time_max) << ")</text>\n";
  o << "<text x=\"" << num(x_mem) << "\" y=\"" << num(top - 10)
    << "\">memory per device, GiB (budget " << fmt("%.2f", budget_bytes / gib) << ")</text>\n";
  for (int s = 0; s < n; ++s) {
    const Cost& k = stages[size_t(s)];
    const double y = top + row * s;
    o << "<text x=\"10\" y=\"" << num(y + bar - 4) << "\">stage " << s << "</text>\n";
    const auto terms = k.terms();  // kTime names them shorter, in the same order
    static_assert(std::tuple_size_v<decltype(terms)> == std::size(kTime));
    double x = x_time;
    o << "<g class=\"time\" data-stage=\"" << s << "\" data-step-s=\"" << fmt("%.6g", k.step_s())
      << "\">\n";
    for (size_t i = 0; i < std::size(kTime); ++i) {
      const double w = panel * terms[i].second / time_max;
      if (w <= 0) continue;
      o << "<rect x=\"" << num(x) << "\" y=\"" << num(y) << "\" width=\"" << fmt("%.2f", w)
        << "\" height=\"" << num(bar) << "\" fill=\"" << kTime[i].color << "\"><title>"
        << kTime[i].name << " " << fmt("%.4g", terms[i].second) << " s</title></rect>\n";
      x += w;
    }
    o << "</g>\n";
    const double bytes[] = {k.param_bytes, k.grad_bytes, k.optimizer_bytes, k.activation_bytes,
                            k.buffer_bytes};
    x = x_mem;
    o << "<g class=\"memory\" data-stage=\"" << s << "\" data-gib=\""
      << fmt("%.6g", k.memory_bytes() / gib) << "\">\n";
    for (size_t i = 0; i < std::size(kMemory); ++i) {
      const double w = panel * bytes[i] / gib / mem_max;
      if (w <= 0) continue;
      o << "<rect x=\"" << num(x) << "\" y=\"" << num(y) << "\" width=\"" << fmt("%.2f", w)
        << "\" height=\"" << num(bar) << "\" fill=\"" << kMemory[i].color << "\"><title>"
        << kMemory[i].name << " " << fmt("%.4g", bytes[i] / gib) << " GiB</title></rect>\n";
      x += w;
    }
    o << "</g>\n";
  }
  const double y_end = top + row * std::max(n, 1);
  if (budget_bytes > 0) {
    const double xb = x_mem + panel * budget_bytes / gib / mem_max;
    o << "<line x1=\"" << num(xb) << "\" y1=\"" << num(top - 4) << "\" x2=\"" << num(xb)
      << "\" y2=\"" << num(y_end) << "\" stroke=\"black\" stroke-dasharray=\"4 3\"/>\n";
  }
  // Legends.
  auto legend = [&](const Part* parts, size_t count, double x0, double y0) {
    double x = x0, y = y0;
    for (size_t i = 0; i < count; ++i) {
      if (x > x0 + panel - 90) {
        x = x0;
        y += 18;
      }
      o << "<rect x=\"" << num(x) << "\" y=\"" << num(y - 10) << "\" width=\"10\" height=\"10\" "
        << "fill=\"" << parts[i].color << "\"/><text x=\"" << num(x + 14) << "\" y=\"" << num(y)
        << "\">" << parts[i].name << "</text>\n";
      x += 22 + 7.0 * double(std::string(parts[i].name).size());
    }
  };
  legend(kTime, std::size(kTime), x_time, y_end + 24);
  legend(kMemory, std::size(kMemory), x_mem, y_end + 24);
  o << "</svg>\n";
  return o.str();
}

}  // namespace cairn::planner
