// The GPT-2 tokenizer on arbitrary bytes: encode() accepts anything, every id is in the
// vocabulary, and decode() gives back the text (with invalid UTF-8 replaced, as encode() does).
// The GPT-2 files come from where `cairn data prepare` finds them (resolve_tokenizer_dir:
// $CAIRN_TOKENIZER_DIR, else .cache/gpt2 of the source tree, which scripts/install-deps.sh
// fills).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "cairn/data/tokenizer.h"
#include "data/pretokenize_impl.h"
#include "fuzz_check.h"

namespace {

std::unique_ptr<cairn::data::Tokenizer> tokenizer;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  auto t = cairn::data::Tokenizer::Open(cairn::data::resolve_tokenizer_dir("gpt2"));
  if (!t.ok()) {
    std::fprintf(stderr, "tokenizer_fuzz: %s\n", t.status().ToString().c_str());
    std::exit(1);
  }
  tokenizer = std::move(t).value();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto ids = tokenizer->encode(text);
  FUZZ_CHECK(text.empty() == ids.empty(), "empty text and empty ids go together");
  for (int32_t id : ids)
    FUZZ_CHECK(id >= 0 && id < tokenizer->vocab_size(), "id " + std::to_string(id));
  auto back = tokenizer->decode(ids);
  FUZZ_CHECK(back.ok(), back.status().ToString());
  const bool valid = cairn::data::internal::find_invalid_utf8(text) == text.size();
  const std::string want = valid ? std::string(text) : cairn::data::internal::sanitize_utf8(text);
  FUZZ_CHECK(*back == want, "decode(encode(text)) is not the text");
  return 0;
}
