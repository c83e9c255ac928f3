// The in-memory half of Journal::Open: the replay of a journal file's bytes, apart from the
// file. Shared by Journal::Open and the fuzz target (fuzz/journal_fuzz.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "cairn/core/status.h"
#include "cairn/elastic/journal.h"

namespace cairn::elastic {

struct JournalReplay {
  size_t good_bytes = 0;  // the whole lines that replayed, header included; what is kept
  int64_t replayed = 0;   // records given to on_record (the header is not one)
  std::string torn;       // why the last line was dropped; empty when none was
};

// Checks the header line and gives every record after it to `on_record`, in order. A damaged
// last line is dropped (`torn` says why); anything else damaged, a foreign header or on_record's
// first error fails, as Journal::Open documents. `path` names the journal in messages.
Result<JournalReplay> replay_journal(std::string_view data, const std::string& path,
                                     const Journal::RecordFn& on_record);

}  // namespace cairn::elastic
