// An append-only, fsynced journal of JSON records: what the elastic master writes before it
// answers a call that changed its state, and replays on start.
//
// File format (text, one record per line):
//   <xxh3-64 of the JSON text, 16 lowercase hex digits> <JSON object>\n
// The first record is the header {"format": "cairn-master-journal", "format_version": 1}.
// A damaged last record (a write torn by a crash: no newline, bad checksum or bad JSON) is dropped
// with a warning and cut off the file; a damaged record with more records after it means the
// file is corrupt and Open fails.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cairn/core/mutex.h"
#include "cairn/core/status.h"

namespace cairn::elastic {

inline constexpr char kJournalFormat[] = "cairn-master-journal";
inline constexpr int kJournalFormatVersion = 1;

// Owns the open file. Thread-compatible: the master serializes appends.
class Journal {
 public:
  using RecordFn = std::function<Status(const nlohmann::json& record)>;

  // Opens `path`, creating it (with its header, durably) when absent or empty, and calls
  // `on_record` for every record after the header, in order; its first error stops the replay
  // and is returned with the record's number. Errors: kCorrupt (damage before the last record,
  // or not a journal), kUnsupported (another format version), kIoError.
  static Result<std::unique_ptr<Journal>> Open(const std::string& path, const RecordFn& on_record);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Appends the records (JSON objects) with one write and fsyncs the file. After a failed append
  // the journal refuses further appends (kFailedPrecondition): what is on disk is then only known
  // to be a prefix of what was meant, and a master must not go on answering from memory alone.
  Status append(const std::vector<nlohmann::json>& records);

  const std::string& path() const { return path_; }
  int64_t replayed() const { return replayed_; }  // records given to on_record by Open
  int64_t dropped_tail_bytes() const { return dropped_tail_bytes_; }  // cut off by Open

 private:
  Journal(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}

  std::string path_;
  int fd_ = -1;
  int64_t size_ = 0;  // bytes known durable
  int64_t replayed_ = 0;
  int64_t dropped_tail_bytes_ = 0;
  Status broken_;  // the first failed append
};

// "<hash> <json>" for one record; exposed for tests that build damaged files.
std::string journal_line(const nlohmann::json& record);

// Group commit: many threads' records share one write and one fsync. A caller enqueues its
// records where it made the change they record (under its own lock, so the records keep the
// changes' order) and gets a ticket; wait(ticket) returns once every record up to that ticket is
// on disk. The first waiter finding no write under way writes everything queued so far, while
// later ones queue behind it and are served by the next write: N concurrent callers cost far
// fewer than N fsyncs, and no caller returns before its records are durable. Thread-safe.
class GroupCommit {
 public:
  // `journal` may be null: nothing is written and every ticket is durable at once. The journal
  // must outlive this.
  explicit GroupCommit(Journal* journal) : journal_(journal) {}

  // Queues `records` (in order, after everything queued before) and returns the ticket that
  // covers them and everything before them. No records: the newest ticket.
  uint64_t enqueue(std::vector<nlohmann::json> records) CAIRN_EXCLUDES(mu_);

  // Ok once every record up to `ticket` is durable. After a failed write, the journal's error
  // for every ticket not yet durable (and every later one): the master must stop answering.
  Status wait(uint64_t ticket) CAIRN_EXCLUDES(mu_);

  Status error() const CAIRN_EXCLUDES(mu_);
  int64_t writes() const CAIRN_EXCLUDES(mu_);   // writes (and fsyncs) so far
  int64_t written() const CAIRN_EXCLUDES(mu_);  // records written so far

 private:
  Journal* const journal_;
  mutable core::Mutex mu_;
  core::CondVar cv_;
  std::vector<nlohmann::json> pending_ CAIRN_GUARDED_BY(mu_);
  uint64_t enqueued_ CAIRN_GUARDED_BY(mu_) = 0;  // tickets: one per record
  uint64_t durable_ CAIRN_GUARDED_BY(mu_) = 0;
  bool writing_ CAIRN_GUARDED_BY(mu_) = false;
  Status error_ CAIRN_GUARDED_BY(mu_);
  int64_t writes_ CAIRN_GUARDED_BY(mu_) = 0;
};

}  // namespace cairn::elastic
