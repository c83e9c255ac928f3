// Checkpoint format helpers: header, names, manifest validation, finding step directories.
// Torch-free (cairn_ckpt_base).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "cairn/ckpt/layout.h"
#include "cairn/core/fs.h"
#include "ckpt/format_impl.h"

namespace fs = std::filesystem;

namespace cairn::ckpt {

DataHeader make_data_header(int rank, int64_t payload_bytes) {
  DataHeader h;
  std::memset(&h, 0, sizeof(h));
  std::memcpy(h.magic, kDataMagic, sizeof(h.magic));
  h.version = kDataVersion;
  h.rank = uint32_t(rank);
  h.payload_bytes = uint64_t(payload_bytes);
  return h;
}

Status check_data_header(int fd, const std::string& path) {
  DataHeader h;
  ssize_t n = ::pread(fd, &h, sizeof(h), 0);
  if (n != ssize_t(sizeof(h)))
    return Status::Corrupt(path + ": data file is shorter than its header");
  if (std::memcmp(h.magic, kDataMagic, sizeof(h.magic)) != 0)
    return Status::Corrupt(path + ": not a cairn checkpoint data file (bad magic)");
  if (h.version > kDataVersion)
    return Status::Unsupported(path + ": data file version " + std::to_string(h.version) +
                               " is newer than this cairn reads (" + std::to_string(kDataVersion) +
                               ")");
  // The payload as the header says it, without adding to it: any 64-bit value may be there.
  off_t size = ::lseek(fd, 0, SEEK_END);
  if (size < kDataHeaderBytes || uint64_t(size - kDataHeaderBytes) < h.payload_bytes)
    return Status::Corrupt(path + ": truncated: " + std::to_string(size) + " bytes, header says " +
                           std::to_string(kDataHeaderBytes) + " + a payload of " +
                           std::to_string(h.payload_bytes));
  return Status::Ok();
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

namespace {
const std::pair<const char*, int64_t> kDtypeSizes[] = {
    {"float32", 4}, {"float64", 8}, {"float16", 2}, {"bfloat16", 2}, {"int64", 8},
    {"int32", 4},   {"int16", 2},   {"uint8", 1},   {"int8", 1},     {"bool", 1},
};
}  // namespace

int64_t dtype_itemsize(const std::string& name) {
  for (auto& [n, size] : kDtypeSizes)
    if (name == n) return size;
  return 0;
}

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step-%08lld", static_cast<long long>(step));
  return buf;
}

bool parse_step_dir_name(const std::string& name, int64_t* step) {
  if (name.size() < 6 || name.compare(0, 5, "step-") != 0) return false;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || v > (int64_t(1) << 55)) return false;
    v = v * 10 + (name[i] - '0');
  }
  *step = v;
  return true;
}

std::string data_file_name(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "rank-%05d.bin", rank);
  return buf;
}

std::string part_file_name(int rank) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "rank-%05d.part.json", rank);
  return buf;
}

std::string parts_dir_name(int64_t step) { return "." + step_dir_name(step).insert(0, "parts-"); }

Status validate_manifest(const nlohmann::json& j, const std::string& where) {
  auto bad = [&](const std::string& why) {
    return Status::Corrupt(where + "/manifest.json: " + why);
  };
  if (!j.is_object()) return bad("not a JSON object");
  if (!j.contains("format") || j["format"] != kFormatName) return bad("not a cairn checkpoint");
  if (!j.contains("format_version") || !j["format_version"].is_number_integer())
    return bad("missing format_version");
  const int64_t v = j["format_version"].get<int64_t>();
  if (v > kManifestVersion)
    return Status::Unsupported(where + "/manifest.json: format version " + std::to_string(v) +
                               " is newer than this cairn reads (" +
                               std::to_string(kManifestVersion) + "); upgrade cairn");
  if (v < 1) return bad("format_version " + std::to_string(v) + " is not valid");
  if (!j.contains("step") || !j["step"].is_number_integer() || j["step"].get<int64_t>() < 0)
    return bad("missing or negative step");
  if (!j.contains("tensors") || !j["tensors"].is_array()) return bad("missing tensor list");
  if (!j.contains("state") || !j["state"].is_object()) return bad("missing state object");
  return Status::Ok();
}

namespace {

// `v` as an int64: a JSON integer that fits (not a fraction, nor a number past 2^63 - 1).
bool int64_of(const nlohmann::json& v, int64_t* out) {
  if (!v.is_number_integer()) return false;
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) return false;
  *out = v.get<int64_t>();
  return true;
}

// "" when no two shards of `e` (slices inside its shape) share an element, else which two do.
// A sweep along the dimension whose shard starts are most varied: each shard is compared
// with the shards still open at its start there (few for the layouts cairn writes: a split
// along one or two dimensions).
std::string overlapping_shards(const TensorEntry& e) {
  const size_t n = e.shards.size(), rank = e.shape.size();
  if (n < 2 || rank == 0) return "";  // a 0-dimensional tensor's one element: one shard
  auto empty = [&](const ShardEntry& s) {
    for (auto& [b, en] : s.slice)
      if (b == en) return true;
    return false;
  };
  size_t dim = 0, most = 0;
  for (size_t d = 0; d < rank; ++d) {
    std::vector<int64_t> starts;
    for (auto& s : e.shards) starts.push_back(s.slice[d].first);
    std::sort(starts.begin(), starts.end());
    const size_t distinct = size_t(std::unique(starts.begin(), starts.end()) - starts.begin());
    if (distinct > most) most = distinct, dim = d;
  }
  std::vector<size_t> order;
  for (size_t i = 0; i < n; ++i)
    if (!empty(e.shards[i])) order.push_back(i);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return e.shards[a].slice[dim].first < e.shards[b].slice[dim].first;
  });
  std::vector<size_t> open;
  for (size_t i : order) {
    const ShardEntry& s = e.shards[i];
    open.erase(std::remove_if(
                   open.begin(), open.end(),
                   [&](size_t j) { return e.shards[j].slice[dim].second <= s.slice[dim].first; }),
               open.end());
    for (size_t j : open) {
      bool shared = true;
      for (size_t d = 0; d < rank && shared; ++d)
        shared = std::max(s.slice[d].first, e.shards[j].slice[d].first) <
                 std::min(s.slice[d].second, e.shards[j].slice[d].second);
      if (shared) return "shards " + std::to_string(j) + " and " + std::to_string(i) + " overlap";
    }
    open.push_back(i);
  }
  return "";
}

}  // namespace

Result<std::vector<TensorEntry>> parse_entries(const nlohmann::json& j, const std::string& where) {
  std::vector<TensorEntry> out;
  std::string ctx = where + "/manifest.json";
  try {
    for (auto& t : j["tensors"]) {
      TensorEntry e;
      e.name = t.at("name").get<std::string>();
      auto bad = [&](const std::string& why) {
        return Status::Corrupt(ctx + ": tensor '" + e.name + "': " + why);
      };
      e.dtype = t.at("dtype").get<std::string>();
      e.itemsize = dtype_itemsize(e.dtype);
      if (e.itemsize == 0) return bad("unknown dtype '" + e.dtype + "'");
      const auto& shape = t.at("shape");
      if (!shape.is_array()) return bad("shape is not a list");
      // The tensor's bytes must fit an int64 (the loader allocates them): so must every
      // partial product of its dimensions, and then every shard's.
      const int64_t item = e.itemsize;
      int64_t numel = 1, bytes = 0;
      for (const auto& v : shape) {
        int64_t d = 0;
        if (!int64_of(v, &d) || d < 0 || d > (int64_t(1) << 40))
          return bad("bad dimension " + v.dump());
        if (__builtin_mul_overflow(numel, d, &numel)) return bad("shape too large");
        e.shape.push_back(d);
      }
      if (__builtin_mul_overflow(numel, item, &bytes)) return bad("shape too large");
      int64_t covered = 0;
      for (auto& s : t.at("shards")) {
        ShardEntry sh;
        sh.file = s.at("file").get<std::string>();
        if (sh.file.empty() || sh.file.find('/') != std::string::npos || sh.file[0] == '.')
          return bad("bad file name '" + sh.file + "'");
        if (!int64_of(s.at("offset"), &sh.offset) || !int64_of(s.at("bytes"), &sh.bytes))
          return bad("shard offset or size is not an integer");
        sh.xxh3 = s.at("xxh3").get<std::string>();
        auto slice = s.at("slice");
        if (!slice.is_array() || slice.size() != e.shape.size())
          return bad("slice rank differs from shape");
        int64_t n = 1;  // at most numel: each extent is at most its dimension
        for (size_t d = 0; d < slice.size(); ++d) {
          int64_t b = 0, en = 0;
          if (!slice[d].is_array() || slice[d].size() != 2 || !int64_of(slice[d][0], &b) ||
              !int64_of(slice[d][1], &en))
            return bad("slice " + slice[d].dump() + " is not [begin, end]");
          if (b < 0 || en < b || en > e.shape[d]) return bad("slice outside the shape");
          sh.slice.emplace_back(b, en);
          n *= en - b;
        }
        if (sh.offset < kDataHeaderBytes || n * item != sh.bytes ||
            sh.offset > INT64_MAX - sh.bytes)
          return bad("shard size or offset is wrong");
        if (n > numel - covered) return bad("shards cover more than the tensor");
        covered += n;
        e.shards.push_back(std::move(sh));
      }
      if (covered != numel) return bad("shards do not cover the tensor");
      // As many elements as the tensor and no two shards sharing one: each element once.
      if (const std::string overlap = overlapping_shards(e); !overlap.empty()) return bad(overlap);
      out.push_back(std::move(e));
    }
  } catch (const nlohmann::json::exception& ex) {
    return Status::Corrupt(ctx + ": malformed tensor entry: " + ex.what());
  }
  return out;
}

Result<nlohmann::json> read_manifest(const std::string& step_dir) {
  // Nothing inside a checkpoint is read through a link: its directory may be shared storage.
  auto text = core::read_file_under(step_dir, "manifest.json");
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound)
      return Status::Corrupt(step_dir + ": no manifest.json (incomplete checkpoint)");
    return text.status();
  }
  auto j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::Corrupt(step_dir + "/manifest.json: not valid JSON");
  CAIRN_RETURN_IF_ERROR(validate_manifest(j, step_dir));
  return j;
}

std::vector<int64_t> list_steps(const std::string& root) {
  std::vector<int64_t> steps;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(root, ec)) {
    int64_t step = 0;
    if (e.is_directory() && parse_step_dir_name(e.path().filename().string(), &step))
      steps.push_back(step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

int64_t read_latest_step(const std::string& root) {
  auto latest = core::read_file(root + "/latest");
  if (!latest.ok()) return -1;
  std::string name = *latest;
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  int64_t step = -1;
  return parse_step_dir_name(name, &step) ? step : -1;
}

}  // namespace cairn::ckpt
