// Token files: atomic writing and validated memory-mapped reading.
#include "cairn/data/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "cairn/core/fs.h"

namespace cairn::data {
namespace {

constexpr char kMagic[8] = {'C', 'A', 'I', 'R', 'N', 'T', 'O', 'K'};
constexpr size_t kVersionAt = 8, kVocabAt = 12, kDtypeAt = 16, kCountAt = 20, kHashAt = 28,
                 kPaddingAt = 36;

void put_le(unsigned char* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint64_t get_le(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

using core::errno_status;
using core::write_all;

// Owns a temporary file until it is renamed into place; removes it otherwise.
class TempFile {
 public:
  explicit TempFile(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  }
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  Status Commit(const std::string& target) {
    if (::fsync(fd_) != 0) return errno_status("cannot fsync", path_);
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return errno_status("cannot close", path_);
    if (::rename(path_.c_str(), target.c_str()) != 0)
      return errno_status("cannot rename to", target);
    committed_ = true;
    return core::fsync_dir(std::filesystem::path(target).parent_path().string());
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace

Status write_token_file(const std::string& path, const std::vector<int32_t>& ids,
                        int32_t vocab_size) {
  if (vocab_size <= 0) {
    return Status::InvalidArgument("vocab size " + std::to_string(vocab_size) + " is not positive");
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return Status::InvalidArgument(path + ": token id " + std::to_string(ids[i]) + " at index " +
                                     std::to_string(i) + " is outside [0, " +
                                     std::to_string(vocab_size) + ")");
    }
  }
  const int dtype = vocab_size <= 65536 ? 2 : 4;
  TempFile tmp(path + ".tmp." + std::to_string(::getpid()));
  if (tmp.fd() < 0) return errno_status("cannot create", tmp.path());
  unsigned char header[kTokenFileHeaderBytes] = {};
  CAIRN_RETURN_IF_ERROR(write_all(tmp.fd(), header, sizeof(header), tmp.path()));

  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                 &XXH3_freeState);
  if (!state || XXH3_64bits_reset(state.get()) != XXH_OK) return Status::Internal("xxh3 init");
  constexpr size_t kChunk = 1 << 18;
  std::vector<unsigned char> buf(kChunk * dtype);
  for (size_t start = 0; start < ids.size(); start += kChunk) {
    const size_t n = std::min(kChunk, ids.size() - start);
    for (size_t i = 0; i < n; ++i)
      put_le(&buf[i * dtype], static_cast<uint32_t>(ids[start + i]), dtype);
    XXH3_64bits_update(state.get(), buf.data(), n * dtype);
    CAIRN_RETURN_IF_ERROR(write_all(tmp.fd(), buf.data(), n * dtype, tmp.path()));
  }
  std::memcpy(header, kMagic, sizeof(kMagic));
  put_le(header + kVersionAt, kTokenFileVersion, 4);
  put_le(header + kVocabAt, static_cast<uint32_t>(vocab_size), 4);
  put_le(header + kDtypeAt, dtype, 4);
  put_le(header + kCountAt, ids.size(), 8);
  put_le(header + kHashAt, XXH3_64bits_digest(state.get()), 8);
  if (::pwrite(tmp.fd(), header, sizeof(header), 0) != static_cast<ssize_t>(sizeof(header))) {
    return errno_status("cannot write header of", tmp.path());
  }
  return tmp.Commit(path);
}

Result<std::unique_ptr<TokenFile>> TokenFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound(path + ": no such token file");
    return errno_status("cannot open", path);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    Status s = errno_status("cannot stat", path);
    ::close(fd);
    return s;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::InvalidArgument(path + ": not a regular file");
  }
  const size_t bytes = static_cast<size_t>(st.st_size);
  if (bytes < kTokenFileHeaderBytes) {
    ::close(fd);
    return Status::Corrupt(path + ": truncated: " + std::to_string(bytes) +
                           " bytes, shorter than the " + std::to_string(kTokenFileHeaderBytes) +
                           "-byte header");
  }
  void* map = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return errno_status("cannot map", path);
  std::unique_ptr<TokenFile> f(new TokenFile());  // owns the mapping from here on
  f->path_ = path;
  f->map_ = map;
  f->map_bytes_ = bytes;
  const auto* h = static_cast<const unsigned char*>(map);

  if (std::memcmp(h, kMagic, sizeof(kMagic)) != 0) {
    return Status::Corrupt(path + ": bad magic; not a cairn token file");
  }
  const uint64_t version = get_le(h + kVersionAt, 4);
  if (version != kTokenFileVersion) {
    return Status::Unsupported(path + ": token file version " + std::to_string(version) +
                               "; this build reads version " + std::to_string(kTokenFileVersion));
  }
  const uint64_t vocab = get_le(h + kVocabAt, 4), dtype = get_le(h + kDtypeAt, 4);
  const uint64_t count = get_le(h + kCountAt, 8), hash = get_le(h + kHashAt, 8);
  if (dtype != 2 && dtype != 4) {
    return Status::Unsupported(path + ": dtype " + std::to_string(dtype) +
                               " (bytes per id); this build reads 2 or 4");
  }
  if (vocab == 0 || vocab > 0x7FFFFFFF || (dtype == 2 && vocab > 65536)) {
    return Status::Corrupt(path + ": vocab size " + std::to_string(vocab) + " does not fit dtype " +
                           std::to_string(dtype));
  }
  for (size_t i = kPaddingAt; i < kTokenFileHeaderBytes; ++i) {
    if (h[i] != 0) return Status::Corrupt(path + ": header padding is not zero");
  }
  const uint64_t payload = bytes - kTokenFileHeaderBytes;
  if (count > payload / dtype) {
    return Status::Corrupt(path + ": truncated: header says " + std::to_string(count) +
                           " ids but the file holds " + std::to_string(payload) +
                           " payload bytes (room for " + std::to_string(payload / dtype) + ")");
  }
  if (count * dtype != payload) {
    return Status::Corrupt(path + ": " + std::to_string(payload - count * dtype) +
                           " bytes after the " + std::to_string(count) + " ids the header says");
  }
  const unsigned char* p = h + kTokenFileHeaderBytes;
  const uint64_t actual = XXH3_64bits(p, payload);
  if (actual != hash) {
    char msg[96];
    std::snprintf(msg, sizeof(msg), ": checksum mismatch (header %016llx, payload %016llx)",
                  static_cast<unsigned long long>(hash), static_cast<unsigned long long>(actual));
    return Status::Corrupt(path + msg);
  }
  f->payload_ = p;
  f->count_ = static_cast<int64_t>(count);
  f->vocab_size_ = static_cast<int32_t>(vocab);
  f->dtype_ = static_cast<uint32_t>(dtype);
  for (int64_t i = 0; i < f->count_; ++i) {
    const int64_t id = static_cast<int64_t>(get_le(p + i * dtype, static_cast<int>(dtype)));
    if (id >= f->vocab_size_) {
      return Status::Corrupt(path + ": token id " + std::to_string(id) + " at index " +
                             std::to_string(i) + " is not below the vocab size " +
                             std::to_string(vocab));
    }
  }
  return f;
}

TokenFile::~TokenFile() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

int32_t TokenFile::at(int64_t i) const {
  if (i < 0 || i >= count_) {
    throw std::out_of_range("TokenFile::at(" + std::to_string(i) + ") outside [0, " +
                            std::to_string(count_) + ") of " + path_);
  }
  return static_cast<int32_t>(get_le(payload_ + i * dtype_, static_cast<int>(dtype_)));
}

void TokenFile::copy_to(int64_t start, int64_t n, int64_t* out) const {
  if (start < 0 || n < 0 || start > count_ || n > count_ - start) {
    throw std::out_of_range("TokenFile::copy_to(" + std::to_string(start) + ", " +
                            std::to_string(n) + ") outside [0, " + std::to_string(count_) +
                            ") of " + path_);
  }
  const unsigned char* p = payload_ + start * dtype_;
  if (dtype_ == 2) {
    for (int64_t i = 0; i < n; ++i) out[i] = p[2 * i] | (p[2 * i + 1] << 8);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int64_t>(get_le(p + 4 * i, 4));
  }
}

}  // namespace cairn::data
