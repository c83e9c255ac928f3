// safetensors encoding and strict decoding: every header field is checked before any tensor
// is built, so a damaged or hostile file yields a Status, never a crash or a partial result.
#include "cairn/ckpt/safetensors.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "cairn/core/fs.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian and is copied without byte swapping");

namespace cairn::ckpt {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the format's own limit
constexpr const char* kMetadataKey = "__metadata__";

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  int64_t itemsize;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kDouble, 8},    {"F32", torch::kFloat, 4}, {"F16", torch::kHalf, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kLong, 8},  {"I32", torch::kInt, 4},
    {"I16", torch::kShort, 2},     {"I8", torch::kChar, 1},   {"U8", torch::kByte, 1},
    {"BOOL", torch::kBool, 1},
};
// Names the format defines that have no libtorch 1.13 dtype.
constexpr const char* kKnownUnsupported[] = {"U16", "U32", "U64", "F8_E4M3", "F8_E5M2"};

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeInfo* dtype_by_type(torch::ScalarType t) {
  for (const auto& d : kDtypes)
    if (t == d.type) return &d;
  return nullptr;
}

// A JSON value as a non-negative int64, or nullopt.
std::optional<int64_t> as_count(const json& v) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return v.get<int64_t>();
  return std::nullopt;
}

struct Entry {
  std::string name;
  const DtypeInfo* dtype;
  std::vector<int64_t> shape;
  int64_t begin, end;
};

// Validates one tensor entry of the header against a data section of `data_size` bytes.
Result<Entry> parse_entry(const std::string& name, const json& v, int64_t data_size) {
  auto bad = [&](const std::string& why) {
    return Status::Corrupt("tensor '" + name + "': " + why);
  };
  if (!v.is_object()) return bad("header entry is not an object");
  auto dt = v.find("dtype");
  auto sh = v.find("shape");
  auto off = v.find("data_offsets");
  if (dt == v.end() || sh == v.end() || off == v.end())
    return bad("header entry lacks one of dtype, shape, data_offsets");
  if (!dt->is_string()) return bad("dtype is not a string");
  const std::string dname = dt->get<std::string>();
  Entry e{name, dtype_by_name(dname), {}, 0, 0};
  if (e.dtype == nullptr) {
    for (const char* u : kKnownUnsupported)
      if (dname == u)
        return Status::Unsupported("tensor '" + name + "': dtype " + dname +
                                   " has no libtorch equivalent");
    return bad("unknown dtype '" + dname + "'");
  }
  if (!sh->is_array()) return bad("shape is not an array");
  // Product of dims, saturating: anything above the data size is already wrong.
  int64_t numel = 1;
  bool too_big = false;
  for (const auto& d : *sh) {
    auto n = as_count(d);
    if (!n) return bad("shape " + sh->dump() + " has a dimension that is not a count");
    e.shape.push_back(*n);
    if (*n != 0 && numel > data_size / *n) too_big = true;
    numel = too_big ? 0 : numel * *n;
  }
  if (!off->is_array() || off->size() != 2) return bad("data_offsets is not [begin, end]");
  auto b = as_count((*off)[0]), en = as_count((*off)[1]);
  if (!b || !en || *b > *en) return bad("data_offsets " + off->dump() + " is not a range");
  if (*en > data_size)
    return bad("data_offsets " + off->dump() + " end past the " + std::to_string(data_size) +
               "-byte data section");
  e.begin = *b;
  e.end = *en;
  const bool empty = std::find(e.shape.begin(), e.shape.end(), 0) != e.shape.end();
  if (too_big && !empty) return bad("shape " + sh->dump() + " holds more bytes than the file");
  const int64_t want = empty ? 0 : numel * e.dtype->itemsize;
  if (want > data_size || want != e.end - e.begin)
    return bad("shape " + sh->dump() + " of " + dname + " needs " + std::to_string(want) +
               " bytes but data_offsets " + off->dump() + " span " +
               std::to_string(e.end - e.begin));
  return e;
}

}  // namespace

Result<std::string> encode_safetensors(
    const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
    const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  std::vector<torch::Tensor> data;
  int64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty() || name == kMetadataKey)
      return Status::InvalidArgument("safetensors: tensor name '" + name + "' is not allowed");
    if (header.contains(name))
      return Status::InvalidArgument("safetensors: tensor name '" + name + "' appears twice");
    if (!tensor.defined())
      return Status::InvalidArgument("safetensors: tensor '" + name + "' is undefined");
    const DtypeInfo* d = dtype_by_type(tensor.scalar_type());
    if (d == nullptr)
      return Status::InvalidArgument("safetensors: tensor '" + name + "' has dtype " +
                                     std::string(c10::toString(tensor.scalar_type())) +
                                     ", which the format cannot store");
    auto t = tensor.detach().to(torch::kCPU).contiguous();
    const int64_t bytes = t.numel() * d->itemsize;
    header[name] = {
        {"dtype", d->name}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(t);
  }
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = text.size();
  std::memcpy(out.data(), &n, 8);
  out.reserve(8 + text.size() + static_cast<size_t>(offset));
  out += text;
  for (const auto& t : data)
    out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  return out;
}

Status write_safetensors(const std::string& path,
                         const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  CAIRN_ASSIGN_OR_RETURN(std::string bytes, encode_safetensors(tensors, metadata));
  return core::write_file_atomic(path, bytes);
}

Result<SafetensorsContents> decode_safetensors(std::string_view bytes, const std::string& origin) {
  auto bad = [&](const std::string& why) { return Status::Corrupt(origin + ": " + why); };
  if (bytes.size() < 8)
    return bad("file is " + std::to_string(bytes.size()) +
               " bytes, shorter than its 8-byte header length");
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  if (n == 0 || n > kMaxHeaderBytes || n > bytes.size() - 8)
    return bad("header length " + std::to_string(n) + " does not fit a file of " +
               std::to_string(bytes.size()) + " bytes (limit " + std::to_string(kMaxHeaderBytes) +
               ")");
  const std::string_view text = bytes.substr(8, n);
  const json header = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return bad("header is not valid JSON");
  if (!header.is_object()) return bad("header is not a JSON object");
  const std::string_view data = bytes.substr(8 + n);
  const auto data_size = static_cast<int64_t>(data.size());

  SafetensorsContents out;
  std::vector<Entry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      if (!value.is_object()) return bad("__metadata__ is not an object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) return bad("__metadata__ value of '" + k + "' is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    if (name.empty()) return bad("a tensor has an empty name");
    auto e = parse_entry(name, value, data_size);
    if (!e.ok()) return e.status().WithContext(origin);
    entries.push_back(std::move(e).value());
  }
  std::vector<const Entry*> by_offset;
  for (const auto& e : entries)
    if (e.end > e.begin) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      return bad("tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name +
                 "' overlap in the data section");
  try {
    for (const auto& e : entries) {
      auto t = torch::empty(e.shape, torch::dtype(e.dtype->type));
      if (e.end > e.begin) std::memcpy(t.data_ptr(), data.data() + e.begin, e.end - e.begin);
      out.tensors.emplace(e.name, std::move(t));
    }
  } catch (const std::exception& ex) {
    return Status::Internal(origin + ": cannot allocate tensors: " + ex.what());
  }
  return out;
}

Result<SafetensorsContents> read_safetensors_file(const std::string& path) {
  CAIRN_ASSIGN_OR_RETURN(std::string bytes, core::read_file(path));
  return decode_safetensors(bytes, path);
}

Result<std::map<std::string, torch::Tensor>> read_safetensors(const std::string& path) {
  CAIRN_ASSIGN_OR_RETURN(SafetensorsContents c, read_safetensors_file(path));
  return std::move(c.tensors);
}

}  // namespace cairn::ckpt
