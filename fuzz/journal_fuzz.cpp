// The elastic master's journal as it replays it after a restart: the lines (replay_journal),
// each record decoded (event_from_json) and applied to the rendezvous state (RdzvState::replay),
// which then goes on serving. A decoded event encodes to JSON that decodes to the same event.
//
// Input, two forms:
//   a journal file as it is on disk ("<xxh3> <json>\n" lines from the header on), when it starts
//     with a hex digit: the checksums and framing are what is tested;
//   otherwise JSON record texts, one a line: the target writes the header and each line's
//     checksum, so that the decoding and the state machine are what is tested (a last line
//     without '\n' is a torn tail).
#include <spdlog/spdlog.h>
#include <xxhash.h>

#include <cctype>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "cairn/elastic/journal.h"
#include "cairn/elastic/rdzv_codec.h"
#include "cairn/elastic/rdzv_state.h"
#include "elastic/master/journal_impl.h"
#include "fuzz_check.h"

namespace {

using cairn::Status;
using namespace cairn::elastic;

std::string checksummed(std::string_view text) {
  char hash[17];
  std::snprintf(hash, sizeof(hash), "%016" PRIx64, uint64_t(XXH3_64bits(text.data(), text.size())));
  return std::string(hash) + " " + std::string(text);
}

// The journal of `records`: the header, then each line with its checksum.
std::string journal_of(std::string_view records) {
  std::string out =
      journal_line({{"format", kJournalFormat}, {"format_version", kJournalFormatVersion}}) + "\n";
  while (!records.empty()) {
    const size_t nl = records.find('\n');
    out += checksummed(records.substr(0, nl));
    if (nl == std::string_view::npos) break;
    out += '\n';
    records.remove_prefix(nl + 1);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // a torn tail is logged: once per input here
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const bool raw = !input.empty() && std::isxdigit(static_cast<unsigned char>(input[0]));
  const std::string journal = raw ? std::string(input) : journal_of(input);

  RdzvParams params;
  params.min_nodes = 1;
  params.max_nodes = 4;
  params.wait_s = 5;
  params.heartbeat_timeout_s = 30;
  RdzvState state(params);
  double now = 100;
  auto replay = replay_journal(journal, "master.journal", [&](const nlohmann::json& record) {
    auto event = event_from_json(record);
    if (!event.ok()) return event.status();
    const nlohmann::json encoded = event_to_json(*event);
    auto decoded = event_from_json(encoded);
    FUZZ_CHECK(decoded.ok(), decoded.status().ToString());
    FUZZ_CHECK(event_to_json(*decoded) == encoded, "an event changes through its JSON");
    now += 1;
    return state.replay(*event, now);
  });
  if (!replay.ok()) {
    FUZZ_CHECK(replay.status().message().find("master.journal") != std::string::npos,
               "error does not name the journal: " + replay.status().ToString());
    return 0;
  }
  FUZZ_CHECK(replay->good_bytes <= journal.size(), "kept more than the file");
  FUZZ_CHECK(replay->torn.empty() == (replay->good_bytes == journal.size()),
             "a torn tail and the kept bytes disagree");

  // The restored state serves on: a status, a new node, heartbeats, silence.
  (void)state.status(now);
  for (const auto& n : state.status(now).nodes)
    (void)state.heartbeat(n.node.node_id, state.round().number, 1, now);
  (void)state.join({"fuzz-node", "127.0.0.1", 1, 29500, 7}, state.round().number, now);
  state.tick(now + 10);
  state.tick(now + 1000);
  (void)state.take_events();
  return 0;
}
