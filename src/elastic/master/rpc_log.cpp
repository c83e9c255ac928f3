// gRPC's own log lines, routed into cairn's log.
#include <grpc/support/log.h>
#include <spdlog/spdlog.h>

#include <mutex>

#include "elastic/master/rpc_log_impl.h"

namespace cairn::elastic::rpc {
namespace {

void to_spdlog(gpr_log_func_args* a) {
  // gRPC reports what cairn also reports in its own words (a port in use, a peer gone): its
  // lines are details, shown with --log-level debug.
  spdlog::debug("grpc {}:{}: {}", a->file ? a->file : "?", a->line, a->message ? a->message : "");
}

}  // namespace

void route_grpc_logs() {
  static std::once_flag once;
  std::call_once(once, [] { gpr_set_log_function(to_spdlog); });
}

}  // namespace cairn::elastic::rpc
