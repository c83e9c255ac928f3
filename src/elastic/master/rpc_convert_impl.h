// Conversions between cairn.v1 protobuf messages and the elastic module's plain structs, shared
// by the master server and its client. Only gRPC-facing sources include this.
#pragma once

#include <grpcpp/support/status.h>

#include "cairn.pb.h"
#include "cairn/core/status.h"
#include "cairn/elastic/master_client.h"
#include "cairn/elastic/rdzv_state.h"
#include "cairn/elastic/shard_state.h"

namespace cairn::elastic::rpc {

void to_proto(const NodeInfo& in, v1::NodeSpec* out);
NodeInfo from_proto(const v1::NodeSpec& in);

void to_proto(const Round& in, v1::Round* out);
// The round as a reply to one member: its own entry only (`self`, none if null), the number of
// members, and a member whose nproc differs (see v1::JoinRequest.only_self).
void to_proto_only(const Round& in, const RoundMember* self, const std::string& nproc_differs,
                   v1::Round* out);
Round from_proto(const v1::Round& in);

void to_proto(const FailureReport& in, v1::ReportFailureRequest* out);
FailureReport from_proto(const v1::ReportFailureRequest& in);

void to_proto(const RdzvStatus& in, int64_t rejected_calls, v1::GetStatusResponse* out);
MasterStatus from_proto(const v1::GetStatusResponse& in);

void to_proto(const ShardParams& in, v1::DatasetParams* out);
ShardParams from_proto(const v1::DatasetParams& in);
void to_proto(const Shard& in, v1::ShardRef* out);
Shard from_proto(const v1::ShardRef& in);
// ShardState::snapshot()'s JSON and its typed form on the wire. from_proto never fails; the
// JSON's fields are checked by ShardState::restore.
Status to_proto(const nlohmann::json& in, v1::ShardSnapshot* out);
nlohmann::json from_proto(const v1::ShardSnapshot& in);

// What the server answers for a non-ok Status of the rendezvous state.
grpc::Status to_grpc(const Status& s);

// What the client returns for a failed call `what` to the master at `address`.
Status from_grpc(const grpc::Status& s, const std::string& what, const std::string& address);

}  // namespace cairn::elastic::rpc
