// Validation of `cairn run` flags (registered with the CLI in tools/cairn/launch_flags.cpp).
#include "cairn/elastic/launch_options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace cairn::elastic {
namespace {

Status bad_flag(const std::string& flag, const std::string& value, const std::string& allowed) {
  return Status::InvalidArgument(flag + " '" + value + "': " + allowed);
}

// Whole-string base-10 integer in [min, max].
Result<int> parse_int(const std::string& flag, const std::string& text, int min, int max) {
  const std::string allowed =
      "expected an integer from " + std::to_string(min) + " to " + std::to_string(max);
  if (text.empty() || text.find_first_not_of("0123456789-+") != std::string::npos)
    return bad_flag(flag, text, allowed);
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end != text.c_str() + text.size() || v < min || v > max)
    return bad_flag(flag, text, allowed);
  return static_cast<int>(v);
}

// Whole-string decimal number of seconds in [min, max].
Result<double> parse_seconds(const std::string& flag, const std::string& text, double min,
                             double max) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "expected seconds from %g to %g", min, max);
  if (text.empty() || text.find_first_not_of("0123456789.eE+-") != std::string::npos)
    return bad_flag(flag, text, buf);
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (errno != 0 || end != text.c_str() + text.size() || !std::isfinite(v) || v < min || v > max)
    return bad_flag(flag, text, buf);
  return v;
}

}  // namespace

Result<std::pair<int, int>> parse_nnodes(const std::string& text) {
  const std::string allowed =
      "expected N or MIN:MAX with 1 <= MIN <= MAX <= " + std::to_string(kMaxNodes);
  size_t colon = text.find(':');
  if (colon == std::string::npos) {
    auto n = parse_int("--nnodes", text, 1, kMaxNodes);
    if (!n.ok()) return bad_flag("--nnodes", text, allowed);
    return std::make_pair(*n, *n);
  }
  auto lo = parse_int("--nnodes", text.substr(0, colon), 1, kMaxNodes);
  auto hi = parse_int("--nnodes", text.substr(colon + 1), 1, kMaxNodes);
  if (!lo.ok() || !hi.ok() || *lo > *hi) return bad_flag("--nnodes", text, allowed);
  return std::make_pair(*lo, *hi);
}

Result<std::pair<std::string, int>> parse_endpoint(const std::string& text, int default_port) {
  const std::string allowed = "expected HOST, HOST:PORT or [IPV6]:PORT with PORT in 1..65535";
  std::string host, port;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos) return bad_flag("--rdzv-endpoint", text, allowed);
    host = text.substr(1, close - 1);
    std::string rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return bad_flag("--rdzv-endpoint", text, allowed);
      port = rest.substr(1);
      if (port.empty()) return bad_flag("--rdzv-endpoint", text, allowed);
    }
  } else {
    size_t colon = text.find(':');
    if (colon != std::string::npos && text.find(':', colon + 1) != std::string::npos)
      return bad_flag("--rdzv-endpoint", text, allowed + " (write IPv6 addresses in brackets)");
    host = text.substr(0, colon);
    if (colon != std::string::npos) {
      port = text.substr(colon + 1);
      if (port.empty()) return bad_flag("--rdzv-endpoint", text, allowed);
    }
  }
  if (host.empty() || host.find_first_of(" \t/") != std::string::npos)
    return bad_flag("--rdzv-endpoint", text, allowed);
  int p = default_port;
  if (!port.empty()) {
    auto parsed = parse_int("--rdzv-endpoint", port, 1, 65535);
    if (!parsed.ok()) return bad_flag("--rdzv-endpoint", text, allowed);
    p = *parsed;
  }
  return std::make_pair(host, p);
}

namespace {

// --nnodes, --nproc-per-node, --node-rank.
Status resolve_nodes(const LaunchFlags& f, LaunchOptions* o) {
  if (f.nnodes) {
    CAIRN_ASSIGN_OR_RETURN(auto range, parse_nnodes(*f.nnodes));
    o->min_nodes = range.first;
    o->max_nodes = range.second;
  }
  if (f.nproc_per_node) {
    CAIRN_ASSIGN_OR_RETURN(o->nproc_per_node,
                           parse_int("--nproc-per-node", *f.nproc_per_node, 1, kMaxNprocPerNode));
  }
  if (f.node_rank) {
    auto rank = parse_int("--node-rank", *f.node_rank, 0, kMaxNodes - 1);
    if (!rank.ok() || *rank >= o->max_nodes)
      return bad_flag("--node-rank", *f.node_rank,
                      "expected 0 <= R < nnodes (" + std::to_string(o->max_nodes) + ")");
    o->node_rank = *rank;
  }
  return Status::Ok();
}

// The elastic backend's TLS flags (files are read when the connection is made, not here).
Status resolve_tls(const LaunchFlags& f, LaunchOptions* o) {
  for (const auto& [flag, value] :
       {std::pair{"--tls-ca", &f.tls_ca}, std::pair{"--tls-cert", &f.tls_cert},
        std::pair{"--tls-key", &f.tls_key}})
    if (*value && (*value)->empty()) return bad_flag(flag, "", "expected a PEM file");
  if (bool(f.tls_cert) != bool(f.tls_key))
    return Status::InvalidArgument(
        "--tls-cert and --tls-key go together (the certificate and "
        "its private key)");
  if (f.insecure && (f.tls_ca || f.tls_cert))
    return Status::InvalidArgument(
        "--insecure (plaintext) and --tls-ca / --tls-cert exclude "
        "each other");
  if (f.tls_cert && !f.tls_ca)
    return Status::InvalidArgument(
        "--tls-cert needs --tls-ca: the CA certificate that signs the master's certificate");
  if (f.tls_ca && f.embed_master && !f.tls_cert)
    return Status::InvalidArgument(
        "--tls-ca with --embed-master needs --tls-cert and --tls-key: the embedded master's "
        "certificate");
  if (f.tls_verify_clients && !(f.embed_master && f.tls_ca))
    return Status::InvalidArgument(
        "--tls-verify-clients configures the embedded master: use it with --embed-master, "
        "--tls-ca, --tls-cert and --tls-key (or pass --tls-client-ca to `cairn master`)");
  o->tls_ca_path = f.tls_ca.value_or("");
  o->tls_cert_path = f.tls_cert.value_or("");
  o->tls_key_path = f.tls_key.value_or("");
  o->tls_verify_clients = f.tls_verify_clients;
  o->insecure = f.insecure;
  return Status::Ok();
}

// --rdzv-backend and what the elastic one takes: node id and host, job token, embedded master and
// its node check.
Status resolve_rendezvous(const LaunchFlags& f, LaunchOptions* o) {
  if (f.rdzv_backend && *f.rdzv_backend != "static" && *f.rdzv_backend != "cairn")
    return bad_flag("--rdzv-backend", *f.rdzv_backend,
                    "'static' (nodes given by --node-rank and --rdzv-endpoint), 'cairn' (nodes "
                    "join the elastic master at --rdzv-endpoint) or 'slurm' (inside srun: the "
                    "allocation's nodes, node 0 running the master)");
  o->elastic = f.rdzv_backend && *f.rdzv_backend == "cairn";
  if (!o->elastic && (f.node_id || f.node_host || f.job_token || f.embed_master || f.rdzv_wait ||
                      f.heartbeat_timeout || f.tls_ca || f.tls_cert || f.tls_key ||
                      f.tls_verify_clients || f.insecure))
    return Status::InvalidArgument(
        "--node-id, --node-host, --job-token, --embed-master, --rdzv-wait, --heartbeat-timeout, "
        "--tls-ca, --tls-cert, --tls-key, --tls-verify-clients and --insecure need --rdzv-backend "
        "cairn");
  if (o->elastic) {
    if (!f.rdzv_endpoint)
      return Status::InvalidArgument(
          "--rdzv-backend cairn needs --rdzv-endpoint HOST:PORT of the elastic master");
    if (f.node_rank)
      return bad_flag("--node-rank", *f.node_rank,
                      "with --rdzv-backend cairn the master assigns node ranks; drop it");
    if (f.standalone)
      return Status::InvalidArgument("--standalone and --rdzv-backend cairn exclude each other");
    o->embed_master = f.embed_master;
    if (f.node_id) {
      if (f.node_id->empty()) return bad_flag("--node-id", "", "expected a non-empty name");
      o->node_id = *f.node_id;
    }
    if (f.node_host) o->node_host = *f.node_host;
    if (f.job_token) o->job_token = *f.job_token;
    CAIRN_RETURN_IF_ERROR(resolve_tls(f, o));
    if (f.rdzv_wait) {
      CAIRN_ASSIGN_OR_RETURN(o->rdzv_wait_s, parse_seconds("--rdzv-wait", *f.rdzv_wait, 0, 86400));
    }
    if (f.heartbeat_timeout) {
      CAIRN_ASSIGN_OR_RETURN(
          o->heartbeat_timeout_s,
          parse_seconds("--heartbeat-timeout", *f.heartbeat_timeout, 0.5, 86400));
    }
  }
  if ((f.network_check || f.exclude_straggler || f.network_check_timeout) &&
      !(o->elastic && o->embed_master))
    return Status::InvalidArgument(
        "--network-check, --exclude-straggler and --network-check-timeout configure the elastic "
        "master: use them with --rdzv-backend cairn --embed-master, or pass them to `cairn "
        "master`");
  if ((f.exclude_straggler || f.network_check_timeout) && !f.network_check)
    return Status::InvalidArgument(
        "--exclude-straggler and --network-check-timeout need --network-check");
  o->network_check = f.network_check;
  o->exclude_straggler = f.exclude_straggler;
  if (f.network_check_timeout) {
    CAIRN_ASSIGN_OR_RETURN(
        o->network_check_timeout_s,
        parse_seconds("--network-check-timeout", *f.network_check_timeout, 1, 86400));
  }
  return Status::Ok();
}

// Restarts, intervals, timeouts, the run directory, standbys, the run id.
Status resolve_supervision(const LaunchFlags& f, LaunchOptions* o) {
  if (f.max_restarts) {
    CAIRN_ASSIGN_OR_RETURN(o->max_restarts,
                           parse_int("--max-restarts", *f.max_restarts, 0, 1000000));
  }
  if (f.monitor_interval) {
    CAIRN_ASSIGN_OR_RETURN(o->monitor_interval_s,
                           parse_seconds("--monitor-interval", *f.monitor_interval, 0.001, 60));
  }
  if (f.hang_timeout) {
    CAIRN_ASSIGN_OR_RETURN(o->hang_timeout_s,
                           parse_seconds("--hang-timeout", *f.hang_timeout, 0, 7 * 24 * 3600));
  }
  if (f.rdzv_timeout) {
    CAIRN_ASSIGN_OR_RETURN(o->rdzv_timeout_s,
                           parse_seconds("--rdzv-timeout", *f.rdzv_timeout, 1, 7 * 24 * 3600));
  }
  if (f.grace_period) {
    CAIRN_ASSIGN_OR_RETURN(o->grace_period_s,
                           parse_seconds("--grace-period", *f.grace_period, 0, 3600));
  }
  if (f.run_dir) {
    if (f.run_dir->empty()) return bad_flag("--run-dir", "", "expected a directory");
    o->run_dir = *f.run_dir;
  }
  o->standby = !f.no_standby;
  if (f.rdzv_id) {
    if (f.rdzv_id->empty()) return bad_flag("--rdzv-id", "", "expected a non-empty id");
    o->run_id = *f.rdzv_id;
  }

  return Status::Ok();
}

// Where rank 0 serves the store: --rdzv-endpoint, or --master-addr/--master-port; --standalone.
Status resolve_master(const LaunchFlags& f, LaunchOptions* o) {
  // Where rank 0 serves the store: --rdzv-endpoint, or --master-addr/--master-port.
  if (f.master_port && !f.master_addr)
    return bad_flag("--master-port", *f.master_port, "needs --master-addr");
  if (f.rdzv_endpoint && f.master_addr)
    return Status::InvalidArgument(
        "--rdzv-endpoint and --master-addr both name the master; give one of them");
  const bool has_endpoint = f.rdzv_endpoint || f.master_addr;
  if (f.standalone) {
    if (o->max_nodes > 1)
      return bad_flag("--nnodes", f.nnodes.value_or(""), "--standalone runs exactly one node");
    if (has_endpoint)
      return Status::InvalidArgument(
          "--standalone chooses its own master address and port; drop --rdzv-endpoint / "
          "--master-addr");
  }
  if (f.rdzv_endpoint) {
    CAIRN_ASSIGN_OR_RETURN(auto ep, parse_endpoint(*f.rdzv_endpoint, kDefaultRdzvPort));
    o->master_host = ep.first;
    o->master_port = ep.second;
  } else if (f.master_addr) {
    // A bare host or address; IPv6 may come with or without brackets.
    std::string host = *f.master_addr;
    if (host.size() > 2 && host.front() == '[' && host.back() == ']')
      host = host.substr(1, host.size() - 2);
    if (host.empty() || host.find_first_of(" \t/[]") != std::string::npos)
      return bad_flag("--master-addr", *f.master_addr, "expected a host name or address");
    o->master_host = host;
    o->master_port = kDefaultMasterPort;
    if (f.master_port) {
      CAIRN_ASSIGN_OR_RETURN(o->master_port, parse_int("--master-port", *f.master_port, 1, 65535));
    }
  }
  if (o->max_nodes > 1 && !has_endpoint && !o->elastic)
    return Status::InvalidArgument(
        "--nnodes " + f.nnodes.value_or("") +
        " spans several nodes: give --rdzv-endpoint HOST:PORT of node 0 and --node-rank");
  return Status::Ok();
}

}  // namespace

Result<LaunchOptions> resolve_launch_options(const LaunchFlags& f) {
  LaunchOptions o;
  if (!f.unknown.empty()) {
    std::string list;
    for (const std::string& a : f.unknown) list += (list.empty() ? "" : " ") + a;
    return Status::InvalidArgument(
        "unknown argument(s) for cairn run: " + list +
        " (put the worker command after --: cairn run [flags] -- COMMAND ARGS...)");
  }
  if (f.command.empty())
    return Status::InvalidArgument(
        "no worker command: give it after --, e.g. cairn run --nproc-per-node 2 -- cairn train "
        "job.yaml");
  o.command = f.command;

  CAIRN_RETURN_IF_ERROR(resolve_nodes(f, &o));
  CAIRN_RETURN_IF_ERROR(resolve_rendezvous(f, &o));
  CAIRN_RETURN_IF_ERROR(resolve_supervision(f, &o));
  CAIRN_RETURN_IF_ERROR(resolve_master(f, &o));
  o.standalone = !(f.rdzv_endpoint || f.master_addr);
  return o;
}

}  // namespace cairn::elastic
