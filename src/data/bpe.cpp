// Merge table parsing and rank-ordered merging of byte-level BPE symbols.
#include <algorithm>
#include <string>
#include <unordered_map>

#include "bpe_impl.h"

namespace cairn::data::internal {
namespace {

bool is_ascii_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

// Splits a line at ASCII white space, dropping empty parts.
std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_ascii_space(line[i])) ++i;
    size_t j = i;
    while (j < line.size() && !is_ascii_space(line[j])) ++j;
    if (j > i) parts.push_back(line.substr(i, j - i));
    i = j;
  }
  return parts;
}

}  // namespace

Result<std::unique_ptr<MergeTable>> MergeTable::Parse(
    std::string_view text, const std::function<int32_t(std::string_view)>& id_of) {
  // The reference splits at "\n" and drops the first line (the version) and the last one
  // (empty when the file ends with a newline).
  std::vector<std::string_view> lines;
  for (size_t i = 0;;) {
    size_t j = text.find('\n', i);
    if (j == std::string_view::npos) {
      lines.push_back(text.substr(i));
      break;
    }
    lines.push_back(text.substr(i, j - i));
    i = j + 1;
  }
  if (lines.size() < 2 || lines[0].substr(0, 9) != "#version:") {
    return Status::Corrupt("line 1 is not a \"#version:\" line");
  }
  auto table = std::make_unique<MergeTable>();
  table->num_lines_ = static_cast<int64_t>(lines.size()) - 2;
  // "left,right" -> rank of the last line with that text.
  std::unordered_map<std::string, int32_t> rank_of_key;
  rank_of_key.reserve(lines.size());
  for (size_t l = 1; l + 1 < lines.size(); ++l) {
    auto parts = split_fields(lines[l]);
    if (parts.size() != 2) {
      return Status::Corrupt("line " + std::to_string(l + 1) + " has " +
                             std::to_string(parts.size()) + " fields, expected 2 (\"left right\")");
    }
    std::string merged = std::string(parts[0]) + std::string(parts[1]);
    if (id_of(parts[0]) < 0 || id_of(parts[1]) < 0 || id_of(merged) < 0) {
      return Status::Corrupt("line " + std::to_string(l + 1) + ": merge \"" +
                             std::string(lines[l]) + "\" uses a token missing from encoder.json");
    }
    rank_of_key[std::string(parts[0]) + "," + std::string(parts[1])] = static_cast<int32_t>(l - 1);
  }
  // Every way of reading a key as "a,b" names a pair with that rank.
  for (const auto& [k, rank] : rank_of_key) {
    for (size_t c = k.find(','); c != std::string::npos; c = k.find(',', c + 1)) {
      std::string_view a = std::string_view(k).substr(0, c), b = std::string_view(k).substr(c + 1);
      int32_t ia = id_of(a), ib = id_of(b);
      if (ia < 0 || ib < 0) continue;
      int32_t im = id_of(std::string(a) + std::string(b));
      if (im < 0) continue;
      table->map_[key(ia, ib)] = Merge{rank, im};
    }
  }
  return table;
}

void MergeTable::apply(std::vector<int32_t>* symbols) const {
  std::vector<int32_t>& sym = *symbols;  // sym[i] < 0: node i was merged into its left
  const int32_t n = static_cast<int32_t>(sym.size());
  if (n < 2) return;
  std::vector<int32_t> next(n), prev(n);
  for (int32_t i = 0; i < n; ++i) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  // A candidate merge of node `pos` with its right neighbour; stale once either changes.
  struct Entry {
    int32_t rank, pos, left, right;
  };
  const auto later = [](const Entry& a, const Entry& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::vector<Entry> heap;
  const auto push = [&](int32_t pos) {
    if (pos < 0 || next[pos] < 0) return;
    const Merge* m = find(sym[pos], sym[next[pos]]);
    if (m == nullptr) return;
    heap.push_back({m->rank, pos, sym[pos], sym[next[pos]]});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  const auto valid = [&](const Entry& e) {
    return sym[e.pos] == e.left && next[e.pos] >= 0 && sym[next[e.pos]] == e.right;
  };
  const auto pop = [&] {
    std::pop_heap(heap.begin(), heap.end(), later);
    Entry e = heap.back();
    heap.pop_back();
    return e;
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);

  std::vector<Entry> round, others;
  while (!heap.empty()) {
    // All current pairs of the lowest rank.
    round.clear();
    const int32_t rank = heap.front().rank;
    while (!heap.empty() && heap.front().rank == rank) {
      Entry e = pop();
      if (valid(e)) round.push_back(e);
    }
    if (round.empty()) continue;
    auto chosen = std::max_element(round.begin(), round.end(),
                                   [](const Entry& a, const Entry& b) { return a.pos < b.pos; });
    const int32_t left = chosen->left, right = chosen->right;
    const int32_t merged = find(left, right)->merged;
    // Pairs of the same rank but another kind (possible only through shared keys) wait
    // for the next round.
    others.clear();
    for (const Entry& e : round) {
      if (e.left != left || e.right != right) others.push_back(e);
    }
    for (const Entry& e : others) {
      heap.push_back(e);
      std::push_heap(heap.begin(), heap.end(), later);
    }
    std::sort(round.begin(), round.end(),
              [](const Entry& a, const Entry& b) { return a.pos < b.pos; });
    for (const Entry& e : round) {
      if (e.left != left || e.right != right || !valid(e)) continue;
      const int32_t q = next[e.pos];
      sym[e.pos] = merged;
      sym[q] = -1;
      next[e.pos] = next[q];
      if (next[q] >= 0) prev[next[q]] = e.pos;
      push(prev[e.pos]);
      push(e.pos);
    }
  }
  int32_t out = 0;
  for (int32_t i = 0; i >= 0; i = next[i]) sym[out++] = sym[i];
  sym.resize(out);
}

}  // namespace cairn::data::internal
