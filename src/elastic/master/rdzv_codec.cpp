// JSON encoding of rendezvous events for the journal.
#include "cairn/elastic/rdzv_codec.h"

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace cairn::elastic {
namespace {

using nlohmann::json;

// A field that is not what the record needs: named by what() and returned as kCorrupt.
struct BadField : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// j[key] as T: a JSON integer within T's range (a fraction, a string or a number out of range
// throws BadField rather than being cut to fit).
template <class T>
T int_at(const json& j, const char* key) {
  const json& v = j.at(key);
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u <= uint64_t(std::numeric_limits<T>::max())) return T(u);
  } else if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i >= int64_t(std::numeric_limits<T>::min()) &&
        (i < 0 || uint64_t(i) <= uint64_t(std::numeric_limits<T>::max())))
      return T(i);
  }
  throw BadField(std::string("'") + key + "' is " + v.dump() + ", not an integer in [" +
                 std::to_string(std::numeric_limits<T>::min()) + ", " +
                 std::to_string(std::numeric_limits<T>::max()) + "]");
}

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

json node_json(const NodeInfo& n) {
  return {{"id", n.node_id},
          {"host", n.host},
          {"nproc", n.nproc},
          {"store_port", n.store_port},
          {"incarnation", n.incarnation}};
}

NodeInfo node_from(const json& j) {
  NodeInfo n;
  n.node_id = j.at("id").get<std::string>();
  n.host = j.at("host").get<std::string>();
  n.nproc = int_at<int>(j, "nproc");
  n.store_port = int_at<int>(j, "store_port");
  n.incarnation = int_at<uint64_t>(j, "incarnation");
  return n;
}

json round_json(const Round& r) {
  json members = json::array();
  for (const auto& m : r.members)
    members.push_back({{"id", m.node_id},
                       {"host", m.host},
                       {"nproc", m.nproc},
                       {"node_rank", m.node_rank},
                       {"rank_base", m.rank_base}});
  return {{"number", r.number},
          {"members", members},
          {"world_size", r.world_size},
          {"master_addr", r.master_addr},
          {"master_port", r.master_port}};
}

Round round_from(const json& j) {
  Round r;
  r.number = int_at<int64_t>(j, "number");
  for (const auto& m : j.at("members"))
    r.members.push_back({m.at("id").get<std::string>(), m.at("host").get<std::string>(),
                         int_at<int>(m, "nproc"), int_at<int>(m, "node_rank"),
                         int_at<int>(m, "rank_base")});
  r.world_size = int_at<int>(j, "world_size");
  r.master_addr = j.at("master_addr").get<std::string>();
  r.master_port = int_at<int>(j, "master_port");
  return r;
}

}  // namespace

json event_to_json(const RdzvEvent& event) {
  return std::visit(
      Overloaded{
          [](const NodeJoined& e) -> json {
            return {{"type", "node_joined"}, {"node", node_json(e.node)}};
          },
          [](const NodeRemoved& e) -> json {
            return {{"type", "node_removed"},
                    {"node_id", e.node_id},
                    {"reason", e.reason == RemoveReason::kLeft      ? "left"
                               : e.reason == RemoveReason::kDropped ? "dropped"
                                                                    : "excluded"}};
          },
          [](const RoundOpened& e) -> json {
            return {{"type", "round_opened"},
                    {"number", e.number},
                    {"restart", e.restart},
                    {"reason", e.reason}};
          },
          [](const RoundCompleted& e) -> json {
            return {{"type", "round_completed"}, {"round", round_json(e.round)}};
          },
          [](const FailureReported& e) -> json {
            return {{"type", "failure"},          {"node_id", e.report.node_id},
                    {"rank", e.report.rank},      {"signaled", e.report.exit.signaled},
                    {"code", e.report.exit.code}, {"diagnosis", e.report.diagnosis}};
          },
          [](const NodeExcluded& e) -> json {
            return {{"type", "node_excluded"}, {"node_id", e.node_id}, {"reason", e.reason}};
          },
      },
      event);
}

Result<RdzvEvent> event_from_json(const json& j) {
  std::string type = "(none)";
  try {
    type = j.at("type").get<std::string>();
    if (type == "node_joined") return RdzvEvent(NodeJoined{node_from(j.at("node"))});
    if (type == "node_removed") {
      const std::string reason = j.at("reason").get<std::string>();
      if (reason != "left" && reason != "dropped" && reason != "excluded")
        return Status::Corrupt("node_removed record: reason '" + reason +
                               "' is not 'left', 'dropped' or 'excluded'");
      return RdzvEvent(NodeRemoved{j.at("node_id").get<std::string>(),
                                   reason == "left"      ? RemoveReason::kLeft
                                   : reason == "dropped" ? RemoveReason::kDropped
                                                         : RemoveReason::kExcluded});
    }
    if (type == "round_opened")
      return RdzvEvent(RoundOpened{int_at<int64_t>(j, "number"), j.at("restart").get<bool>(),
                                   j.at("reason").get<std::string>()});
    if (type == "round_completed") return RdzvEvent(RoundCompleted{round_from(j.at("round"))});
    if (type == "failure") {
      FailureReport f;
      f.node_id = j.at("node_id").get<std::string>();
      f.rank = int_at<int>(j, "rank");
      f.exit.signaled = j.at("signaled").get<bool>();
      f.exit.code = int_at<int>(j, "code");
      f.diagnosis = j.at("diagnosis").get<std::string>();
      return RdzvEvent(FailureReported{std::move(f)});
    }
    if (type == "node_excluded")
      return RdzvEvent(
          NodeExcluded{j.at("node_id").get<std::string>(), j.at("reason").get<std::string>()});
  } catch (const json::exception& e) {
    return Status::Corrupt(type + " record " + j.dump() + ": " + e.what());
  } catch (const BadField& e) {
    return Status::Corrupt(type + " record " + j.dump() + ": " + e.what());
  }
  return Status::Corrupt("record of unknown type '" + type +
                         "'; known: node_joined, node_removed, round_opened, round_completed, "
                         "failure, node_excluded");
}

}  // namespace cairn::elastic
