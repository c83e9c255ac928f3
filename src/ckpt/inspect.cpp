// Describing a checkpoint without trusting it: manifest and data files are validated the way
// the loader validates them; the model digest is computed from verified tensors only.
#include "cairn/ckpt/inspect.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>

#include "cairn/ckpt/checkpoint.h"
#include "cairn/core/fs.h"
#include "ckpt/format_impl.h"

namespace fs = std::filesystem;

namespace cairn::ckpt {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "model_digest hashes in-memory bytes as little-endian");

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
    TensorSummary t{e.name, dtype_name(e.dtype), e.shape, 0, int64_t(e.shards.size())};
    for (auto& sh : e.shards) t.bytes += sh.bytes;
    out.bytes += t.bytes;
    out.tensors.push_back(std::move(t));
  }
  if (o.verify || o.digest) {
    CAIRN_ASSIGN_OR_RETURN(LoadedCheckpoint loaded, load_checkpoint(dir));
    out.verified = true;
    if (o.digest) out.digest = model_digest(loaded.tensors);
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

std::string model_digest(const std::map<std::string, torch::Tensor>& tensors) {
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                 &XXH3_freeState);
  TORCH_CHECK(state, "model_digest: out of memory");
  XXH3_128bits_reset(state.get());
  auto put = [&](const void* p, size_t n) { XXH3_128bits_update(state.get(), p, n); };
  auto put_u64 = [&](uint64_t v) { put(&v, sizeof(v)); };
  auto put_text = [&](const std::string& s) {
    put_u64(s.size());
    put(s.data(), s.size());
  };
  for (auto& [name, tensor] : tensors) {
    if (name.compare(0, 6, "model.") != 0) continue;
    const torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    put_text(name);
    put_text(dtype_name(t.scalar_type()));
    put_u64(uint64_t(t.dim()));
    for (int64_t d : t.sizes()) put(&d, sizeof(d));
    put_u64(t.nbytes());
    put(t.data_ptr(), t.nbytes());
  }
  const XXH128_hash_t h = XXH3_128bits_digest(state.get());
  return "xxh3-128:" + hex64(h.high64) + hex64(h.low64);
}

}  // namespace cairn::ckpt
