// GPT-2 tokenizer: loading encoder.json + vocab.bpe, encoding with a shared piece cache,
// decoding.
#include "cairn/data/tokenizer.h"

#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "bpe_impl.h"
#include "cairn/core/fs.h"
#include "cairn/core/mutex.h"
#include "pretokenize_impl.h"

namespace cairn::data {
namespace internal {

// piece text -> ids, sharded so that threads encoding different text rarely contend.
// Each shard is cleared when it grows past kMaxPerShard entries, bounding memory.
class PieceCache {
 public:
  static constexpr size_t kMaxPieceBytes = 64;  // longer pieces are not cached

  // Appends the cached ids of `piece` to *out and returns true, or returns false.
  bool lookup(std::string_view piece, size_t hash, std::vector<int32_t>* out) {
    Shard& s = shard(hash);
    core::MutexLock lock(s.mu);
    auto it = s.map.find(std::string(piece));
    if (it == s.map.end()) return false;
    out->insert(out->end(), it->second.begin(), it->second.end());
    return true;
  }
  void insert(std::string_view piece, size_t hash, std::vector<int32_t> ids) {
    Shard& s = shard(hash);
    core::MutexLock lock(s.mu);
    if (s.map.size() >= kMaxPerShard) s.map.clear();
    s.map.emplace(std::string(piece), std::move(ids));
  }

 private:
  static constexpr size_t kShards = 64;
  static constexpr size_t kMaxPerShard = 16384;
  struct alignas(64) Shard {
    core::Mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>> map CAIRN_GUARDED_BY(mu);
  };
  Shard& shard(size_t hash) { return shards_[(hash >> 7) % kShards]; }
  Shard shards_[kShards];
};

}  // namespace internal

namespace {

// The reference's byte <-> character alphabet: printable Latin-1 bytes stand for
// themselves, the other 68 bytes for U+0100.. in byte order.
void byte_alphabet(char32_t byte_to_char[256]) {
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    byte_to_char[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
  }
}

void append_utf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    // The alphabet stays below U+0800; wider characters are never produced here.
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

Result<std::unique_ptr<Tokenizer>> Tokenizer::Open(const std::string& dir) {
  const std::string enc_path = dir + "/encoder.json";
  const std::string bpe_path = dir + "/vocab.bpe";
  const std::string hint = " (scripts/install-deps.sh fetches the GPT-2 tokenizer files)";
  auto enc_text = core::read_file(enc_path);
  if (!enc_text.ok()) {
    Status s = enc_text.status();
    return s.code() == StatusCode::kNotFound ? Status::NotFound(s.message() + hint) : s;
  }
  auto bpe_text = core::read_file(bpe_path);
  if (!bpe_text.ok()) {
    Status s = bpe_text.status();
    return s.code() == StatusCode::kNotFound ? Status::NotFound(s.message() + hint) : s;
  }

  char32_t byte_to_char[256];
  byte_alphabet(byte_to_char);
  int char_to_byte[0x144];
  std::fill(std::begin(char_to_byte), std::end(char_to_byte), -1);
  for (int b = 0; b < 256; ++b) char_to_byte[byte_to_char[b]] = b;

  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  tok->dir_ = dir;
  std::unordered_map<std::string, int32_t> id_of;
  {
    nlohmann::json j = nlohmann::json::parse(*enc_text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || j.empty()) {
      return Status::Corrupt(enc_path + ": not a JSON object of token -> id");
    }
    const size_t n = j.size();
    tok->token_bytes_.assign(n, std::string());
    std::vector<bool> seen(n, false);
    id_of.reserve(n);
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!it.value().is_number_integer()) {
        return Status::Corrupt(enc_path + ": id of token \"" + it.key() + "\" is not an integer");
      }
      int64_t id = it.value().get<int64_t>();
      if (id < 0 || id >= static_cast<int64_t>(n) || seen[id]) {
        return Status::Corrupt(enc_path + ": token \"" + it.key() + "\" has id " +
                               std::to_string(id) + "; ids must be distinct and in [0, " +
                               std::to_string(n) + ")");
      }
      seen[id] = true;
      std::string bytes;
      const std::string& text = it.key();
      for (size_t i = 0; i < text.size();) {
        size_t len;
        char32_t c = internal::decode_utf8(text, i, &len);
        if (c >= 0x144 || char_to_byte[c] < 0) {
          return Status::Corrupt(enc_path + ": token \"" + text +
                                 "\" has a character outside the byte alphabet");
        }
        bytes.push_back(static_cast<char>(char_to_byte[c]));
        i += len;
      }
      tok->token_bytes_[id] = std::move(bytes);
      id_of.emplace(text, static_cast<int32_t>(id));
    }
  }
  for (int b = 0; b < 256; ++b) {
    std::string text;
    append_utf8(byte_to_char[b], &text);
    auto it = id_of.find(text);
    if (it == id_of.end()) {
      return Status::Corrupt(enc_path + ": no token for byte " + std::to_string(b));
    }
    tok->byte_id_[b] = it->second;
  }
  auto eot = id_of.find("<|endoftext|>");
  if (eot == id_of.end()) return Status::Corrupt(enc_path + ": no \"<|endoftext|>\" token");
  tok->eot_id_ = eot->second;

  auto merges = internal::MergeTable::Parse(*bpe_text, [&](std::string_view t) {
    auto it = id_of.find(std::string(t));
    return it == id_of.end() ? int32_t{-1} : it->second;
  });
  if (!merges.ok()) return merges.status().WithContext(bpe_path);
  tok->merges_ = std::move(merges).value();
  tok->classifier_ = std::make_unique<internal::CharClassifier>();
  tok->cache_ = std::make_unique<internal::PieceCache>();
  return tok;
}

void Tokenizer::encode_piece(std::string_view piece, std::vector<int32_t>* out) const {
  if (piece.size() == 1) {
    out->push_back(byte_id_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  const bool cacheable = piece.size() <= internal::PieceCache::kMaxPieceBytes;
  size_t hash = 0;
  if (cacheable) {
    hash = std::hash<std::string_view>()(piece);
    if (cache_->lookup(piece, hash, out)) return;
  }
  std::vector<int32_t> ids(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) ids[i] = byte_id_[static_cast<unsigned char>(piece[i])];
  merges_->apply(&ids);
  out->insert(out->end(), ids.begin(), ids.end());
  if (cacheable) cache_->insert(piece, hash, std::move(ids));
}

void Tokenizer::encode_append(std::string_view utf8, std::vector<int32_t>* out) const {
  std::string clean;
  if (internal::find_invalid_utf8(utf8) != utf8.size()) {
    clean = internal::sanitize_utf8(utf8);
    utf8 = clean;
  }
  internal::for_each_piece(utf8, *classifier_,
                           [&](std::string_view piece) { encode_piece(piece, out); });
}

std::vector<int32_t> Tokenizer::encode(std::string_view utf8) const {
  std::vector<int32_t> ids;
  ids.reserve(utf8.size() / 3 + 1);
  encode_append(utf8, &ids);
  return ids;
}

Result<std::string> Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  out.reserve(ids.size() * 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    int32_t id = ids[i];
    if (id < 0 || id >= vocab_size()) {
      return Status::InvalidArgument("token id " + std::to_string(id) + " at position " +
                                     std::to_string(i) + " is outside the vocabulary [0, " +
                                     std::to_string(vocab_size()) + ")");
    }
    out += token_bytes_[id];
  }
  return out;
}

std::string resolve_tokenizer_dir(const std::string& name) {
  if (!name.empty() && name != "gpt2") return name;
  const char* env = std::getenv("CAIRN_TOKENIZER_DIR");
  if (env != nullptr && *env != '\0') return env;
  return std::string(CAIRN_SOURCE_DIR) + "/.cache/gpt2";
}

}  // namespace cairn::data
