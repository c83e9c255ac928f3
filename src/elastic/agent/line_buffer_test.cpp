#include <gtest/gtest.h>

#include "elastic/agent/line_buffer_impl.h"

namespace cairn::elastic {
namespace {

struct Collector {
  std::vector<std::string> lines;
  std::function<void(std::string_view)> fn() {
    return [this](std::string_view l) { lines.emplace_back(l); };
  }
};

TEST(LineBuffer, SplitsLinesAcrossFeeds) {
  LineBuffer b;
  Collector c;
  b.feed("hel", c.fn());
  EXPECT_TRUE(c.lines.empty());
  EXPECT_FALSE(b.empty());
  b.feed("lo\nwor", c.fn());
  b.feed("ld\n\nlast", c.fn());
  EXPECT_EQ(c.lines, (std::vector<std::string>{"hello", "world", ""}));
  b.flush(c.fn());
  EXPECT_EQ(c.lines.back(), "last");
  EXPECT_TRUE(b.empty());
  b.flush(c.fn());  // nothing pending: no empty line
  EXPECT_EQ(c.lines.size(), 4u);
}

TEST(LineBuffer, ManyLinesInOneFeedAndCarriageReturnsKept) {
  LineBuffer b;
  Collector c;
  b.feed("a\nb\r\nc\n", c.fn());
  EXPECT_EQ(c.lines, (std::vector<std::string>{"a", "b\r", "c"}));
  EXPECT_TRUE(b.empty());
}

TEST(LineBuffer, LongLinesComeInBoundedPieces) {
  LineBuffer b(4);
  Collector c;
  b.feed("abcd\n", c.fn());  // exactly max_line: one line
  b.feed("efghij", c.fn());  // over: a piece of 4, "ij" pending
  b.feed("kl", c.fn());      // pending reaches 4: still waiting for '\n'
  b.feed("m\n", c.fn());
  b.feed("0123456789\n", c.fn());
  EXPECT_EQ(c.lines, (std::vector<std::string>{"abcd", "efgh", "ijkl", "m", "0123", "4567", "89"}));
}

TEST(LineBuffer, ByteAtATime) {
  LineBuffer b(8);
  Collector c;
  for (char ch : std::string("one\ntwo\n")) b.feed(std::string_view(&ch, 1), c.fn());
  EXPECT_EQ(c.lines, (std::vector<std::string>{"one", "two"}));
}

TEST(LineTail, KeepsTheLastLines) {
  LineTail t(2);
  t.push("1");
  EXPECT_EQ(t.lines(), (std::vector<std::string>{"1"}));
  t.push("2");
  t.push("3");
  EXPECT_EQ(t.lines(), (std::vector<std::string>{"2", "3"}));
  t.clear();
  EXPECT_TRUE(t.lines().empty());
  LineTail none(0);
  none.push("x");
  EXPECT_TRUE(none.lines().empty());
}

}  // namespace
}  // namespace cairn::elastic
