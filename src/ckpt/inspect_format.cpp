// The human-readable text of `cairn ckpt inspect`.
#include <algorithm>
#include <ctime>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "cairn/ckpt/inspect.h"

namespace cairn::ckpt {
namespace {

using Lines = std::vector<std::pair<std::string, std::string>>;

void line(Lines& lines, const std::string& key, const std::string& value) {
  lines.emplace_back(key, value);
}

// "key  value" lines with the values aligned.
void emit(std::ostringstream& os, const Lines& lines) {
  size_t width = 0;
  for (auto& [k, v] : lines) width = std::max(width, k.size());
  for (auto& [k, v] : lines) os << k << std::string(width - k.size() + 2, ' ') << v << "\n";
}

std::string utc_time(double unix_seconds) {
  const std::time_t t = std::time_t(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// "1.5 MiB" style sizes next to exact byte counts.
std::string human_bytes(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  std::ostringstream os;
  os.precision(u == 0 ? 0 : 1);
  os << std::fixed << v << " " << units[u];
  return os.str();
}

std::string json_scalar(const nlohmann::json& v) {
  return v.is_string() ? v.get<std::string>() : v.dump();
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

bool has_prefix(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

void tensor_table(std::ostringstream& os, const std::vector<TensorSummary>& tensors) {
  size_t w_name = 4, w_dtype = 5, w_shape = 5, w_bytes = 5;
  for (auto& t : tensors) {
    w_name = std::max(w_name, t.name.size());
    w_dtype = std::max(w_dtype, t.dtype.size());
    w_shape = std::max(w_shape, shape_text(t.shape).size());
    w_bytes = std::max(w_bytes, std::to_string(t.bytes).size());
  }
  auto row = [&](const std::string& a, const std::string& b, const std::string& c,
                 const std::string& d, const std::string& e) {
    os << "  " << a << std::string(w_name - a.size() + 2, ' ') << b
       << std::string(w_dtype - b.size() + 2, ' ') << c << std::string(w_shape - c.size() + 2, ' ')
       << std::string(w_bytes - d.size(), ' ') << d << "  " << e << "\n";
  };
  row("name", "dtype", "shape", "bytes", "shards");
  for (auto& t : tensors)
    row(t.name, t.dtype, shape_text(t.shape), std::to_string(t.bytes), std::to_string(t.shards));
}

}  // namespace

std::string format_summary(const CheckpointSummary& s, bool show_config) {
  Lines os;
  if (!s.root.empty()) {
    std::string steps;
    for (int64_t step : s.steps) steps += (steps.empty() ? "" : " ") + std::to_string(step);
    line(os, "root", s.root);
    line(os, "steps", steps.empty() ? "(none)" : steps);
    line(os, "latest", s.latest.empty() ? "(no latest file)" : s.latest);
  }
  line(os, "checkpoint", s.path);
  line(os, "format", "cairn-checkpoint version " + std::to_string(s.format_version));
  line(os, "step", std::to_string(s.step));
  line(os, "saved at", s.created > 0 ? utc_time(s.created) : "(not recorded)");
  std::string mesh;
  if (s.mesh.is_object())
    for (auto& [k, v] : s.mesh.items())
      mesh += (mesh.empty() ? "" : " ") + k + "=" + json_scalar(v);
  line(os, "mesh", mesh.empty() ? "(not recorded)" : mesh);
  for (size_t i = 0; i < s.files.size(); ++i)
    line(os, i == 0 ? "files" : "", s.files[i] + "  " + std::to_string(s.file_bytes[i]) + " bytes");

  std::string config_yaml;
  for (auto& [k, v] : s.state.items()) {
    if (k == "config_yaml" && v.is_string()) {
      config_yaml = v.get<std::string>();
      continue;
    }
    line(os, "state." + k, json_scalar(v));
  }
  if (!config_yaml.empty()) {
    int64_t n = 0;
    for (char ch : config_yaml) n += ch == '\n';
    line(os, "state.config_yaml",
         std::to_string(n) + " lines (" + (show_config ? "below" : "--config prints them") + ")");
  }

  int64_t n_model = 0, n_optim = 0, params = 0, model_bytes = 0;
  for (auto& t : s.tensors) {
    if (has_prefix(t.name, "model.")) {
      ++n_model;
      model_bytes += t.bytes;
      int64_t numel = 1;
      for (int64_t d : t.shape) numel *= d;
      params += numel;
    } else if (has_prefix(t.name, "optim.")) {
      ++n_optim;
    }
  }
  const int64_t n_other = int64_t(s.tensors.size()) - n_model - n_optim;
  line(os, "tensors",
       std::to_string(s.tensors.size()) + " (model " + std::to_string(n_model) + ", optim " +
           std::to_string(n_optim) + ", other " + std::to_string(n_other) + "), " +
           std::to_string(s.bytes) + " bytes (" + human_bytes(s.bytes) + ")");
  line(os, "parameters", std::to_string(params) + " in model.* (" + human_bytes(model_bytes) + ")");
  line(os, "checksums", s.verified ? "verified" : "not read (--verify reads and checks them)");
  std::ostringstream out;
  emit(out, os);
  if (show_config && !config_yaml.empty()) {
    out << "\nconfig_yaml:\n";
    std::istringstream in(config_yaml);
    for (std::string l; std::getline(in, l);) out << "  " << l << "\n";
  }
  out << "\n";
  tensor_table(out, s.tensors);
  if (!s.digest.empty()) out << "\ndigest  " << s.digest << "\n";
  return out.str();
}

}  // namespace cairn::ckpt
