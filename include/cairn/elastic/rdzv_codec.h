// RdzvEvent <-> JSON: how rendezvous events are stored in the master's journal. Every record has
// a "type" ("node_joined", "node_removed", "round_opened", "round_completed", "failure");
// unknown extra fields (e.g. the writer's "at" timestamp) are ignored on read.
#pragma once

#include <nlohmann/json.hpp>

#include "cairn/core/status.h"
#include "cairn/elastic/rdzv_state.h"

namespace cairn::elastic {

nlohmann::json event_to_json(const RdzvEvent& event);
// kCorrupt naming the record type and the missing or mistyped field.
Result<RdzvEvent> event_from_json(const nlohmann::json& record);

}  // namespace cairn::elastic
