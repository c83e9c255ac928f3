// `cairn run` inside a Slurm allocation (see slurm.h).
#include "cairn/elastic/slurm.h"

#include <cerrno>
#include <cstdlib>

namespace cairn::elastic {
namespace {

constexpr size_t kMaxHosts = 65536;

Status bad_list(const std::string& text, const std::string& why) {
  return Status::InvalidArgument("host list '" + text + "': " + why);
}

// A whole non-negative decimal number, or -1.
long long whole(const std::string& s) {
  if (s.empty() || s.size() > 18 || s.find_first_not_of("0123456789") != std::string::npos)
    return -1;
  return std::strtoll(s.c_str(), nullptr, 10);
}

// "01-03,7" -> {"01", "02", "03", "7"}: each range keeps the width of its first bound.
Result<std::vector<std::string>> expand_ranges(const std::string& list, const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    const std::string item = list.substr(start, comma - start);
    const size_t dash = item.find('-');
    const std::string lo = item.substr(0, dash);
    const std::string hi = dash == std::string::npos ? lo : item.substr(dash + 1);
    const long long a = whole(lo), b = whole(hi);
    if (a < 0 || b < 0) return bad_list(text, "'[" + list + "]' has '" + item + "', not N or N-M");
    if (b < a) return bad_list(text, "the range " + item + " runs backwards");
    if (size_t(b - a) + out.size() >= kMaxHosts)
      return bad_list(text, "more than " + std::to_string(kMaxHosts) + " hosts");
    for (long long v = a; v <= b; ++v) {
      std::string digits = std::to_string(v);
      if (digits.size() < lo.size()) digits.insert(0, lo.size() - digits.size(), '0');
      out.push_back(digits);
    }
    start = comma + 1;
  }
  return out;
}

// One name with any number of bracket groups: "r[1-2]n[01-02]" -> r1n01 r1n02 r2n01 r2n02.
Status expand_name(const std::string& name, const std::string& text,
                   std::vector<std::string>* out) {
  std::vector<std::string> partial = {""};
  size_t i = 0;
  while (i < name.size()) {
    const size_t open = name.find('[', i);
    const std::string literal = name.substr(i, open == std::string::npos ? open : open - i);
    if (literal.find(']') != std::string::npos) return bad_list(text, "a ']' without its '['");
    for (std::string& p : partial) p += literal;
    if (open == std::string::npos) break;
    const size_t close = name.find(']', open);
    if (close == std::string::npos) return bad_list(text, "a '[' without its ']'");
    CAIRN_ASSIGN_OR_RETURN(auto values,
                           expand_ranges(name.substr(open + 1, close - open - 1), text));
    if (partial.size() * values.size() + out->size() > kMaxHosts)
      return bad_list(text, "more than " + std::to_string(kMaxHosts) + " hosts");
    std::vector<std::string> next;
    for (const std::string& p : partial)
      for (const std::string& v : values) next.push_back(p + v);
    partial = std::move(next);
    i = close + 1;
  }
  for (std::string& p : partial) out->push_back(std::move(p));
  return Status::Ok();
}

std::string get(const Env& env, const std::string& key) {
  auto it = env.find(key);
  return it == env.end() ? "" : it->second;
}

Result<long long> number_of(const Env& env, const std::string& key, long long min) {
  const std::string v = get(env, key);
  const long long n = whole(v);
  if (v.empty())
    return Status::InvalidArgument("--rdzv-backend slurm: $" + key +
                                   " is not set (run cairn run inside srun or sbatch)");
  if (n < min)
    return Status::InvalidArgument("--rdzv-backend slurm: $" + key + " is '" + v +
                                   "', not a whole number >= " + std::to_string(min));
  return n;
}

}  // namespace

Result<std::vector<std::string>> expand_hostlist(const std::string& text) {
  std::vector<std::string> out;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    const char c = i < text.size() ? text[i] : ',';
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (depth < 0) return bad_list(text, "a ']' without its '['");
    if (depth > 1) return bad_list(text, "nested brackets");
    if (c == ',' && depth == 0) {
      const std::string name = text.substr(start, i - start);
      if (name.empty()) return bad_list(text, "an empty host name");
      if (name.find_first_of(" \t\n") != std::string::npos)
        return bad_list(text, "a host name with white space");
      CAIRN_RETURN_IF_ERROR(expand_name(name, text, &out));
      start = i + 1;
    }
  }
  if (depth != 0) return bad_list(text, "a '[' without its ']'");
  return out;
}

bool wants_slurm(const LaunchFlags& f, const Env& env) {
  if (f.rdzv_backend) return *f.rdzv_backend == "slurm";
  return !get(env, "SLURM_JOB_ID").empty() && !f.rdzv_endpoint && !f.master_addr && !f.standalone;
}

int slurm_master_port(long long job_id) { return 20000 + int(job_id % 9000); }

Result<LaunchFlags> slurm_launch_flags(LaunchFlags f, const Env& env) {
  if (f.node_rank)
    return Status::InvalidArgument("--node-rank " + *f.node_rank +
                                   ": under Slurm the nodes get their ranks from the master "
                                   "($SLURM_NODEID picks the one that runs it); drop it");
  if (f.standalone || f.master_addr)
    return Status::InvalidArgument(
        "--standalone and --master-addr do not go with --rdzv-backend slurm (give "
        "--rdzv-endpoint HOST:PORT to choose where the nodes meet)");
  CAIRN_ASSIGN_OR_RETURN(long long job, number_of(env, "SLURM_JOB_ID", 1));
  CAIRN_ASSIGN_OR_RETURN(long long nodes, number_of(env, "SLURM_NNODES", 1));
  CAIRN_ASSIGN_OR_RETURN(long long node, number_of(env, "SLURM_NODEID", 0));
  if (node >= nodes)
    return Status::InvalidArgument("--rdzv-backend slurm: $SLURM_NODEID " + std::to_string(node) +
                                   " is not below $SLURM_NNODES " + std::to_string(nodes));
  const std::string list = get(env, "SLURM_JOB_NODELIST");
  if (list.empty())
    return Status::InvalidArgument("--rdzv-backend slurm: $SLURM_JOB_NODELIST is not set");
  CAIRN_ASSIGN_OR_RETURN(std::vector<std::string> hosts, expand_hostlist(list));
  if (hosts.size() != size_t(nodes))
    return Status::InvalidArgument("--rdzv-backend slurm: $SLURM_JOB_NODELIST '" + list +
                                   "' names " + std::to_string(hosts.size()) +
                                   " hosts, $SLURM_NNODES says " + std::to_string(nodes));
  std::string name = get(env, "SLURMD_NODENAME");
  if (name.empty()) name = hosts[size_t(node)];
  f.rdzv_backend = "cairn";
  if (!f.nnodes) f.nnodes = std::to_string(nodes);
  if (!f.node_id) f.node_id = name;
  if (!f.rdzv_endpoint) f.rdzv_endpoint = hosts[0] + ":" + std::to_string(slurm_master_port(job));
  if (node == 0) f.embed_master = true;
  // One command line for every node: the master's flags only mean something on node 0.
  if (node != 0) f.tls_verify_clients = false;
  if (!f.rdzv_id) f.rdzv_id = "slurm-" + std::to_string(job);
  if (!f.run_dir) f.run_dir = "runs/slurm-" + std::to_string(job) + "/" + name;
  return f;
}

}  // namespace cairn::elastic
