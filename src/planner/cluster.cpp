// Cluster descriptions: JSON files of a machine's measured or published figures.
#include <nlohmann/json.hpp>
#include <set>

#include "cairn/core/fs.h"
#include "cairn/planner/planner.h"

namespace cairn::planner {
namespace {

using json = nlohmann::json;

Status unknown_keys(const json& obj, const std::string& where, const std::set<std::string>& known) {
  for (auto it = obj.begin(); it != obj.end(); ++it)
    if (!known.count(it.key()))
      return Status::InvalidArgument(where + "." + it.key() + ": unknown key");
  return Status::Ok();
}

// obj[key] as a number in [lo, hi]; `required` or left at *out.
Status number(const json& obj, const std::string& where, const char* key, double lo, double hi,
              bool required, double* out) {
  auto it = obj.find(key);
  if (it == obj.end())
    return required ? Status::InvalidArgument(where + "." + key + " is missing") : Status::Ok();
  if (!it->is_number()) return Status::InvalidArgument(where + "." + key + ": not a number");
  const double v = it->get<double>();
  if (!(v >= lo && v <= hi))
    return Status::InvalidArgument(where + "." + key + ": " + it->dump() + " is outside [" +
                                   json(lo).dump() + ", " + json(hi).dump() + "]");
  *out = v;
  return Status::Ok();
}

Status link(const json& obj, const std::string& where, const char* key, Link* out) {
  auto it = obj.find(key);
  if (it == obj.end()) return Status::InvalidArgument(where + "." + key + " is missing");
  if (!it->is_object()) return Status::InvalidArgument(where + "." + key + ": not an object");
  const std::string at = where + "." + key;
  CAIRN_RETURN_IF_ERROR(unknown_keys(*it, at, {"gb_per_s", "latency_us"}));
  double gb = 0, us = 0;
  CAIRN_RETURN_IF_ERROR(number(*it, at, "gb_per_s", 1e-6, 1e6, true, &gb));
  CAIRN_RETURN_IF_ERROR(number(*it, at, "latency_us", 0, 1e6, true, &us));
  out->bandwidth = gb * 1e9;
  out->latency = us * 1e-6;
  return Status::Ok();
}

}  // namespace

Result<Cluster> cluster_from_json(const std::string& text, const std::string& what) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return Status::InvalidArgument(what + ": not JSON: " + e.what());
  }
  if (!j.is_object()) return Status::InvalidArgument(what + ": not a JSON object");
  CAIRN_RETURN_IF_ERROR(unknown_keys(
      j, what,
      {"name", "source", "nodes", "devices_per_node", "memory_gb", "peak_tflops", "efficiency",
       "intra", "inter", "dp_overlap", "runtime_gb", "cores_per_node", "measured"}));
  if (auto m = j.find("measured"); m != j.end() && !m->is_object())
    return Status::InvalidArgument(what + ".measured: not an object");
  // A described cluster may leave the overlap at its default; a measured one was written
  // before profile-hw measured it.
  if (j.contains("measured") && !j.contains("dp_overlap"))
    return Status::InvalidArgument(what +
                                   ": a measured profile without dp_overlap (written before "
                                   "profile-hw measured it): run cairn plan profile-hw again");
  Cluster c;
  auto name = j.find("name");
  if (name == j.end() || !name->is_string())
    return Status::InvalidArgument(what + ".name: missing or not a string");
  c.name = name->get<std::string>();
  if (auto s = j.find("source"); s != j.end()) {
    if (!s->is_string()) return Status::InvalidArgument(what + ".source: not a string");
    c.source = s->get<std::string>();
  }
  double nodes = 0, per_node = 0, mem_gb = 0, tflops = 0;
  CAIRN_RETURN_IF_ERROR(number(j, what, "nodes", 1, 1 << 20, true, &nodes));
  CAIRN_RETURN_IF_ERROR(number(j, what, "devices_per_node", 1, 1024, true, &per_node));
  if (nodes != double(int64_t(nodes)) || per_node != double(int64_t(per_node)))
    return Status::InvalidArgument(what + ": nodes and devices_per_node are whole numbers");
  CAIRN_RETURN_IF_ERROR(number(j, what, "memory_gb", 1e-3, 1e6, true, &mem_gb));
  CAIRN_RETURN_IF_ERROR(number(j, what, "peak_tflops", 1e-6, 1e6, true, &tflops));
  CAIRN_RETURN_IF_ERROR(number(j, what, "efficiency", 1e-3, 1, true, &c.efficiency));
  CAIRN_RETURN_IF_ERROR(number(j, what, "dp_overlap", 0, 1, false, &c.dp_overlap));
  double runtime_gb = 0;
  CAIRN_RETURN_IF_ERROR(number(j, what, "runtime_gb", 0, 1e6, false, &runtime_gb));
  c.runtime_bytes = runtime_gb * double(1ull << 30);
  double cores = 0;
  CAIRN_RETURN_IF_ERROR(number(j, what, "cores_per_node", 0, 1 << 20, false, &cores));
  if (cores != double(int64_t(cores)))
    return Status::InvalidArgument(what + ".cores_per_node: a whole number");
  c.cores_per_node = int(cores);
  CAIRN_RETURN_IF_ERROR(link(j, what, "intra", &c.intra));
  CAIRN_RETURN_IF_ERROR(link(j, what, "inter", &c.inter));
  c.nodes = int(nodes);
  c.devices_per_node = int(per_node);
  c.memory_bytes = mem_gb * double(1ull << 30);
  c.peak_flops = tflops * 1e12;
  return c;
}

Result<Cluster> load_cluster(const std::string& path) {
  CAIRN_ASSIGN_OR_RETURN(std::string text, core::read_file(path));
  return cluster_from_json(text, path);
}

}  // namespace cairn::planner
