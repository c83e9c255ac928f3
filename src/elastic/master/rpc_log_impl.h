// gRPC's log lines go to cairn's log (debug level) instead of raw lines on stderr.
#pragma once

namespace cairn::elastic::rpc {

// Idempotent; call before the first gRPC object is made.
void route_grpc_logs();

}  // namespace cairn::elastic::rpc
