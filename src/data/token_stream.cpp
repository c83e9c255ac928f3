// TokenStream: reading a token file that is still being written.
#include "cairn/data/token_stream.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "cairn/core/fs.h"

namespace cairn::data {

Result<std::unique_ptr<TokenStream>> TokenStream::Open(const std::string& dir, int32_t vocab) {
  const std::string path = dir + "/" + kStreamFile;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return Status::NotFound(path + " does not exist (start `cairn data stream --out " + dir +
                              "` first)");
    return core::errno_status("open", path);
  }
  return std::unique_ptr<TokenStream>(new TokenStream(dir, fd, vocab));
}

TokenStream::~TokenStream() { ::close(fd_); }

Result<int64_t> TokenStream::tokens() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return core::errno_status("stat", dir_ + "/" + kStreamFile);
  return int64_t(st.st_size) / 4;
}

Result<int64_t> TokenStream::samples(int64_t seq_len) const {
  CAIRN_ASSIGN_OR_RETURN(int64_t n, tokens());
  return n > seq_len ? (n - 1) / seq_len : 0;
}

Result<bool> TokenStream::closed() const {
  const std::string marker = dir_ + "/" + kStreamDoneFile;
  if (::access(marker.c_str(), F_OK) != 0) return false;
  auto text = core::read_file(marker);
  if (!text.ok()) return text.status();
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (!j.is_object() || j.value("format", "") != "cairn-token-stream" || !j.contains("tokens"))
    return Status::Corrupt(marker + " is not a token stream's end marker");
  CAIRN_ASSIGN_OR_RETURN(int64_t n, tokens());
  if (j["tokens"].get<int64_t>() != n)
    return Status::Corrupt(marker + " says the stream ended at " +
                           std::to_string(j["tokens"].get<int64_t>()) + " tokens, the file holds " +
                           std::to_string(n));
  return true;
}

Status TokenStream::fill(int64_t sample, int64_t seq_len, int64_t* inputs, int64_t* targets) const {
  std::vector<uint32_t> buf(size_t(seq_len + 1));
  const off_t at = off_t(sample * seq_len) * 4;
  const size_t want = buf.size() * 4;
  ssize_t got = ::pread(fd_, buf.data(), want, at);
  if (got < 0) return core::errno_status("read", dir_ + "/" + kStreamFile);
  if (size_t(got) != want)
    return Status::FailedPrecondition("sample " + std::to_string(sample) +
                                      " lies beyond the stream's " +
                                      std::to_string(int64_t(at + got) / 4) + " tokens");
  for (int64_t i = 0; i <= seq_len; ++i)
    if (buf[size_t(i)] >= uint32_t(vocab_))
      return Status::Corrupt(dir_ + "/" + kStreamFile + ": id " + std::to_string(buf[size_t(i)]) +
                             " at token " + std::to_string(sample * seq_len + i) +
                             " is not below the vocabulary size " + std::to_string(vocab_));
  for (int64_t i = 0; i < seq_len; ++i) {
    inputs[i] = buf[size_t(i)];
    targets[i] = buf[size_t(i + 1)];
  }
  return Status::Ok();
}

Result<std::unique_ptr<TokenStreamWriter>> TokenStreamWriter::Create(const std::string& dir) {
  CAIRN_RETURN_IF_ERROR(core::make_dirs(dir));
  ::unlink((dir + "/" + kStreamDoneFile).c_str());
  const std::string path = dir + "/" + kStreamFile;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return core::errno_status("create", path);
  return std::unique_ptr<TokenStreamWriter>(new TokenStreamWriter(dir, fd));
}

TokenStreamWriter::~TokenStreamWriter() {
  if (fd_ >= 0) ::close(fd_);
}

Status TokenStreamWriter::append(const int32_t* ids, size_t n) {
  std::vector<uint32_t> le(ids, ids + n);  // little-endian on every machine cairn runs on
  CAIRN_RETURN_IF_ERROR(core::write_all(fd_, le.data(), le.size() * 4, dir_ + "/" + kStreamFile));
  tokens_ += int64_t(n);
  return Status::Ok();
}

Status TokenStreamWriter::close() {
  if (::fsync(fd_) != 0) return core::errno_status("fsync", dir_ + "/" + kStreamFile);
  ::close(fd_);
  fd_ = -1;
  nlohmann::json j = {{"format", "cairn-token-stream"}, {"version", 1}, {"tokens", tokens_}};
  return core::write_file_atomic(dir_ + "/" + kStreamDoneFile, j.dump() + "\n");
}

}  // namespace cairn::data
