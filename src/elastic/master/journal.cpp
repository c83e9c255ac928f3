// The master's journal: checksummed JSON lines, replay with torn-tail recovery, fsynced appends.
#include "cairn/elastic/journal.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cinttypes>
#include <cstdio>
#include <filesystem>

#include "cairn/core/fs.h"
#include "elastic/master/journal_impl.h"

namespace cairn::elastic {
namespace {

constexpr size_t kHashChars = 16;

std::string hash_hex(std::string_view text) {
  char buf[kHashChars + 1];
  std::snprintf(buf, sizeof(buf), "%016" PRIx64, uint64_t(XXH3_64bits(text.data(), text.size())));
  return buf;
}

// Parses one line (without its '\n'); an empty string means "good".
std::string check_line(std::string_view line, nlohmann::json* out) {
  if (line.size() < kHashChars + 2 || line[kHashChars] != ' ')
    return "not '<16 hex digits> <json>'";
  std::string_view text = line.substr(kHashChars + 1);
  if (hash_hex(text) != line.substr(0, kHashChars)) return "checksum mismatch";
  *out = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (out->is_discarded()) return "checksum matches but the text is not JSON";
  if (!out->is_object()) return "not a JSON object";
  return "";
}

nlohmann::json header() {
  return {{"format", kJournalFormat}, {"format_version", kJournalFormatVersion}};
}

Status check_header(const std::string& path, const nlohmann::json& h) {
  if (h.value("format", std::string()) != kJournalFormat)
    return Status::Corrupt(path + ": not a cairn master journal (first record " + h.dump() + ")");
  const auto& v = h.find("format_version");
  if (v == h.end() || !v->is_number_integer())
    return Status::Corrupt(path + ": journal header has no integer format_version");
  if (v->get<int64_t>() != kJournalFormatVersion)
    return Status::Unsupported(path + ": journal format version " + v->dump() +
                               "; this cairn reads version " +
                               std::to_string(kJournalFormatVersion));
  return Status::Ok();
}

}  // namespace

std::string journal_line(const nlohmann::json& record) {
  std::string text = record.dump();
  return hash_hex(text) + " " + text;
}

Result<JournalReplay> replay_journal(std::string_view data, const std::string& path,
                                     const Journal::RecordFn& on_record) {
  // Every line must be good except possibly the last, which a crash may have torn.
  JournalReplay out;
  size_t pos = 0;
  int64_t number = 0;
  while (pos < data.size()) {
    const size_t nl = data.find('\n', pos);
    const bool last = nl == std::string::npos || nl + 1 == data.size();
    std::string_view line(data.data() + pos, (nl == std::string::npos ? data.size() : nl) - pos);
    nlohmann::json record;
    std::string why = nl == std::string::npos ? "no newline at the end" : check_line(line, &record);
    if (!why.empty()) {
      // Only a crash while creating the file leaves a damaged header: a prefix of the real one.
      const std::string first = journal_line(header()) + "\n";
      if (number == 0 && (data.size() >= first.size() || first.compare(0, data.size(), data) != 0))
        return Status::Corrupt(path + ": not a cairn master journal (its first line is not a " +
                               kJournalFormat + " header: " + why + ")");
      if (!last)
        return Status::Corrupt(path + ": record " + std::to_string(number) + " at byte " +
                               std::to_string(pos) + " is damaged (" + why + ") and " +
                               std::to_string(data.size() - nl - 1) +
                               " bytes of later records follow it: the journal is corrupt, not "
                               "torn by a crash; restore it or start a new job");
      out.torn = why;
      break;
    }
    if (number == 0) {
      CAIRN_RETURN_IF_ERROR(check_header(path, record));
    } else if (Status s = on_record(record); !s.ok()) {
      return s.WithContext(path + ": record " + std::to_string(number));
    } else {
      ++out.replayed;
    }
    ++number;
    pos = nl + 1;
  }
  out.good_bytes = pos;
  return out;
}

Result<std::unique_ptr<Journal>> Journal::Open(const std::string& path, const RecordFn& on_record) {
  std::string data;
  auto existing = core::read_file(path);
  if (existing.ok()) {
    data = std::move(existing).value();
  } else if (existing.status().code() != StatusCode::kNotFound) {
    return existing.status();
  }
  if (data.empty()) {
    const auto parent = std::filesystem::path(path).parent_path().string();
    if (!parent.empty()) CAIRN_RETURN_IF_ERROR(core::make_dirs(parent));
  }
  CAIRN_ASSIGN_OR_RETURN(JournalReplay replay, replay_journal(data, path, on_record));
  const size_t pos = replay.good_bytes;

  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return core::errno_status("cannot open journal", path);
  std::unique_ptr<Journal> j(new Journal(path, fd));
  j->replayed_ = replay.replayed;
  if (!replay.torn.empty()) {
    j->dropped_tail_bytes_ = int64_t(data.size() - pos);
    spdlog::warn(
        "journal {}: dropping a damaged last record ({} bytes at byte {}: {}), as left "
        "by a crash during a write",
        path, j->dropped_tail_bytes_, pos, replay.torn);
    if (::ftruncate(fd, off_t(pos)) != 0 || ::fsync(fd) != 0)
      return core::errno_status("cannot cut the torn record off journal", path);
  }
  j->size_ = int64_t(pos);
  if (pos == 0) {
    // New (or empty, or only a torn header): write the header and make the file durable.
    const std::string line = journal_line(header()) + "\n";
    CAIRN_RETURN_IF_ERROR(core::write_all(fd, line.data(), line.size(), path));
    if (::fsync(fd) != 0) return core::errno_status("cannot fsync journal", path);
    CAIRN_RETURN_IF_ERROR(core::fsync_dir(std::filesystem::path(path).parent_path().string()));
    j->size_ = int64_t(line.size());
  }
  return j;
}

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);
}

Status Journal::append(const std::vector<nlohmann::json>& records) {
  if (!broken_.ok())
    return Status::FailedPrecondition(
        "journal " + path_ + " refuses appends after a failed write: " + broken_.message());
  if (records.empty()) return Status::Ok();
  std::string buf;
  for (const auto& r : records) {
    if (!r.is_object())
      return Status::Internal("journal " + path_ + ": a record must be a JSON object, not " +
                              r.dump());
    buf += journal_line(r);
    buf += '\n';
  }
  Status s = core::write_all(fd_, buf.data(), buf.size(), path_);
  if (s.ok() && ::fsync(fd_) != 0) s = core::errno_status("cannot fsync journal", path_);
  if (!s.ok()) {
    // Best effort: cut what may have been half written, so a restart sees a clean end.
    if (::ftruncate(fd_, off_t(size_)) == 0) (void)::fsync(fd_);
    broken_ = s;
    return s;
  }
  size_ += int64_t(buf.size());
  return Status::Ok();
}

GroupCommit::GroupCommit(Journal* journal) : journal_(journal) {
  if (journal_) writer_ = std::thread([this] { writer_loop(); });
}

GroupCommit::~GroupCommit() {
  {
    core::MutexLock lock(mu_);
    stopping_ = true;
  }
  work_.notify_all();
  if (writer_.joinable()) writer_.join();
}

uint64_t GroupCommit::enqueue(std::vector<nlohmann::json> records) {
  if (records.empty()) return 0;
  uint64_t ticket = 0;
  {
    core::MutexLock lock(mu_);
    enqueued_ += records.size();
    ticket = enqueued_;
    if (!journal_) {
      durable_ = enqueued_;
      return ticket;
    }
    for (auto& r : records) pending_.push_back(std::move(r));
  }
  work_.notify_one();
  return ticket;
}

void GroupCommit::when_durable(uint64_t ticket, Done done) {
  Status s;
  {
    core::MutexLock lock(mu_);
    if (durable_ < ticket && error_.ok()) {
      waiting_.emplace(ticket, std::move(done));
      return;
    }
    s = durable_ >= ticket ? Status::Ok() : error_;
  }
  done(s);
}

Status GroupCommit::wait(uint64_t ticket) {
  core::MutexLock lock(mu_);
  durable_changed_.wait(mu_,
                        [&]() CAIRN_REQUIRES(mu_) { return durable_ >= ticket || !error_.ok(); });
  return durable_ >= ticket ? Status::Ok() : error_;
}

void GroupCommit::writer_loop() {
  core::MutexLock lock(mu_);
  for (;;) {
    work_.wait(mu_, [&]() CAIRN_REQUIRES(mu_) { return stopping_ || !pending_.empty(); });
    if (pending_.empty()) break;  // stopping, and everything is written
    // One group: everything queued since the last write.
    std::vector<nlohmann::json> group = std::exchange(pending_, {});
    const uint64_t upto = enqueued_;
    Status s;
    if (error_.ok()) {
      mu_.unlock();
      s = journal_->append(group);
      mu_.lock();
      if (s.ok()) {
        durable_ = upto;
        ++writes_;
      } else {
        error_ = s;
        spdlog::error(
            "{}; the records after the last durable one are refused, and so is every "
            "call waiting for them",
            s.ToString());
      }
    }
    durable_changed_.notify_all();
    // Complete the callers whose records are durable now (all of them after a failure).
    std::vector<std::pair<Done, Status>> ready;
    auto end = error_.ok() ? waiting_.upper_bound(durable_) : waiting_.end();
    for (auto it = waiting_.begin(); it != end; ++it)
      ready.emplace_back(std::move(it->second), it->first <= durable_ ? Status::Ok() : error_);
    waiting_.erase(waiting_.begin(), end);
    mu_.unlock();
    for (auto& [done, status] : ready) done(status);
    mu_.lock();
  }
}

Status GroupCommit::error() const {
  core::MutexLock lock(mu_);
  return error_;
}

int64_t GroupCommit::writes() const {
  core::MutexLock lock(mu_);
  return writes_;
}

int64_t GroupCommit::written() const {
  core::MutexLock lock(mu_);
  return int64_t(durable_);
}

}  // namespace cairn::elastic
