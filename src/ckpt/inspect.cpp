// Describing a checkpoint without trusting it: manifest and data files are validated the way
// the loader validates them, and with `verify` every shard's checksum is checked as loading
// checks it. Torch-free (cairn_ckpt_base).
#include "cairn/ckpt/inspect.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <vector>

#include "cairn/ckpt/layout.h"
#include "cairn/core/fs.h"
#include "ckpt/format_impl.h"

namespace fs = std::filesystem;

namespace cairn::ckpt {
namespace {

// Checks one data file's header and that it holds every shard the manifest places in it.
// Returns its size.
Result<int64_t> check_data_file(const std::string& dir, const std::string& file,
                                const std::vector<TensorEntry>& entries) {
  const std::string path = dir + "/" + file;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return Status::Corrupt(path + ": data file is missing (" + std::strerror(errno) + ")");
  Status s = check_data_header(fd, path);
  struct stat st {};
  if (s.ok() && ::fstat(fd, &st) != 0) s = core::errno_status("cannot stat", path);
  ::close(fd);
  if (!s.ok()) return s;
  const int64_t size = int64_t(st.st_size);
  for (auto& e : entries)
    for (auto& sh : e.shards)
      if (sh.file == file && sh.offset + sh.bytes > size)
        return Status::Corrupt(path + ": truncated: tensor '" + e.name + "' ends at byte " +
                               std::to_string(sh.offset + sh.bytes) + " of a " +
                               std::to_string(size) + "-byte file");
  return size;
}

// The checkpoint's data files, each opened once (links not followed) and closed at the end.
class DataFiles {
 public:
  explicit DataFiles(std::string dir) : dir_(std::move(dir)) {}
  ~DataFiles() {
    for (auto& [file, fd] : fds_) ::close(fd);
  }
  DataFiles(const DataFiles&) = delete;
  DataFiles& operator=(const DataFiles&) = delete;
  std::string path(const std::string& file) const { return dir_ + "/" + file; }
  Result<int> open(const std::string& file) {
    if (auto it = fds_.find(file); it != fds_.end()) return it->second;
    const std::string p = path(file);
    const int fd = ::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ELOOP)
      return Status::Corrupt(p + ": a symbolic link, not a data file (links are not followed)");
    if (fd < 0) return Status::Corrupt(p + ": data file is missing (" + std::strerror(errno) + ")");
    fds_.emplace(file, fd);
    return fd;
  }

 private:
  std::string dir_;
  std::map<std::string, int> fds_;
};

// Reads one shard and checks its checksum, with load_checkpoint()'s error for a mismatch.
// `buf` is reused between shards.
Status verify_shard(DataFiles& files, const TensorEntry& e, const ShardEntry& sh,
                    std::vector<char>& buf) {
  CAIRN_ASSIGN_OR_RETURN(const int fd, files.open(sh.file));
  const std::string path = files.path(sh.file);
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                 &XXH3_freeState);
  if (!state) return Status::Internal("cannot allocate a checksum state");
  XXH3_64bits_reset(state.get());
  constexpr int64_t kChunk = 8 << 20;
  const size_t need = size_t(std::min(kChunk, std::max<int64_t>(sh.bytes, 1)));
  if (buf.size() < need) buf.resize(need);
  for (int64_t done = 0; done < sh.bytes;) {
    const int64_t want = std::min<int64_t>(int64_t(buf.size()), sh.bytes - done);
    const ssize_t n = ::pread(fd, buf.data(), size_t(want), off_t(sh.offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return core::errno_status("cannot read", path);
    if (n == 0) return Status::Corrupt(path + ": truncated in tensor '" + e.name + "'");
    XXH3_64bits_update(state.get(), buf.data(), size_t(n));
    done += n;
  }
  if (hex64(XXH3_64bits_digest(state.get())) != sh.xxh3)
    return Status::Corrupt(path + ": checksum mismatch in tensor '" + e.name + "'");
  return Status::Ok();
}

Result<CheckpointSummary> describe(const std::string& dir, const InspectOptions& o) {
  CAIRN_ASSIGN_OR_RETURN(nlohmann::json manifest, read_manifest(dir));
  CAIRN_ASSIGN_OR_RETURN(std::vector<TensorEntry> entries, parse_entries(manifest, dir));
  CheckpointSummary out;
  out.path = dir;
  out.format_version = manifest["format_version"].get<int>();
  out.step = manifest["step"].get<int64_t>();
  if (manifest.contains("created") && manifest["created"].is_number())
    out.created = manifest["created"].get<double>();
  out.mesh = manifest.value("mesh", nlohmann::json::object());
  out.state = manifest["state"];
  std::vector<std::string> files;
  for (auto& e : entries)
    for (auto& sh : e.shards)
      if (std::find(files.begin(), files.end(), sh.file) == files.end()) files.push_back(sh.file);
  for (auto& f : files) {
    CAIRN_ASSIGN_OR_RETURN(int64_t size, check_data_file(dir, f, entries));
    out.files.push_back(f);
    out.file_bytes.push_back(size);
  }
  for (auto& e : entries) {
    TensorSummary t{e.name, e.dtype, e.shape, 0, int64_t(e.shards.size())};
    for (auto& sh : e.shards) t.bytes += sh.bytes;
    out.bytes += t.bytes;
    out.tensors.push_back(std::move(t));
  }
  if (o.verify) {
    DataFiles files(dir);
    std::vector<char> buf;
    for (auto& e : entries)
      for (auto& sh : e.shards) CAIRN_RETURN_IF_ERROR(verify_shard(files, e, sh, buf));
    out.verified = true;
  }
  return out;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

Result<CheckpointSummary> inspect_checkpoint(const std::string& path, const InspectOptions& o,
                                             std::vector<std::string>* skipped) {
  if (fs::exists(path + "/manifest.json")) return describe(path, o);
  if (!fs::is_directory(path)) return Status::NotFound(path + ": no checkpoint directory");
  const std::vector<int64_t> steps = list_steps(path);
  std::string latest;
  if (auto text = core::read_file(path + "/latest"); text.ok()) latest = trim(*text);
  std::vector<std::string> candidates;
  int64_t latest_step = -1;
  if (!latest.empty()) {
    if (parse_step_dir_name(latest, &latest_step))
      candidates.push_back(latest);
    else if (skipped)
      skipped->push_back(path + "/latest: does not name a step directory");
  }
  for (auto it = steps.rbegin(); it != steps.rend(); ++it)
    if (*it != latest_step) candidates.push_back(step_dir_name(*it));
  if (candidates.empty())
    return Status::NotFound(path +
                            ": no checkpoint (neither a manifest.json nor step-* "
                            "directories)");
  for (auto& c : candidates) {
    auto r = describe(path + "/" + c, o);
    if (r.ok()) {
      r->root = path;
      r->steps = steps;
      r->latest = latest;
      return r;
    }
    if (skipped) skipped->push_back(r.status().ToString());
  }
  return Status::NotFound(path + ": no complete checkpoint");
}

}  // namespace cairn::ckpt
