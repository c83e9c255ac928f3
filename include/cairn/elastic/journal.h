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
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
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

// Group commit: many callers' records share one write and one fsync. A caller enqueues its
// records where it made the change they record (under its own lock, so the records keep the
// changes' order) and gets a ticket; when_durable(ticket, done) runs `done` once every record up
// to that ticket is on disk (wait() blocks instead). A writer thread writes everything queued
// since its last write in one group, so N concurrent callers cost far fewer than N fsyncs, and
// no caller hears "done" before its records are durable (leveldb's write path, with the waiting
// callers completed by the writer instead of blocking threads). Thread-safe.
class GroupCommit {
 public:
  using Done = std::function<void(const Status&)>;

  // `journal` may be null: nothing is written and every ticket is durable at once. The journal
  // must outlive this.
  explicit GroupCommit(Journal* journal);
  // Writes what is queued and completes every caller before returning.
  ~GroupCommit();
  GroupCommit(const GroupCommit&) = delete;
  GroupCommit& operator=(const GroupCommit&) = delete;

  // Queues `records` (in order, after everything queued before) and returns the ticket that
  // covers them and everything before them. No records: 0, which is always durable.
  uint64_t enqueue(std::vector<nlohmann::json> records) CAIRN_EXCLUDES(mu_);

  // Runs `done` with Ok once every record up to `ticket` is durable: at once (on this thread)
  // when it is already, else on the writer's thread. After a failed write, `done` gets the
  // journal's error for every ticket not yet durable, and for every later one: the master must
  // stop answering.
  void when_durable(uint64_t ticket, Done done) CAIRN_EXCLUDES(mu_);
  // Blocks until when_durable would run `done`; returns what it would get.
  Status wait(uint64_t ticket) CAIRN_EXCLUDES(mu_);

  Status error() const CAIRN_EXCLUDES(mu_);
  int64_t writes() const CAIRN_EXCLUDES(mu_);   // writes (and fsyncs) so far
  int64_t written() const CAIRN_EXCLUDES(mu_);  // records written so far

 private:
  void writer_loop() CAIRN_EXCLUDES(mu_);

  Journal* const journal_;
  mutable core::Mutex mu_;
  core::CondVar work_;  // records queued, or stopping
  core::CondVar durable_changed_;
  std::vector<nlohmann::json> pending_ CAIRN_GUARDED_BY(mu_);
  std::multimap<uint64_t, Done> waiting_ CAIRN_GUARDED_BY(mu_);  // by ticket
  uint64_t enqueued_ CAIRN_GUARDED_BY(mu_) = 0;                  // tickets: one per record
  uint64_t durable_ CAIRN_GUARDED_BY(mu_) = 0;
  Status error_ CAIRN_GUARDED_BY(mu_);
  int64_t writes_ CAIRN_GUARDED_BY(mu_) = 0;
  bool stopping_ CAIRN_GUARDED_BY(mu_) = false;
  std::thread writer_;  // with a journal
};

}  // namespace cairn::elastic
