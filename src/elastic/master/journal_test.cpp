// Tests of the master's journal (records, torn tails, corruption, versions) and of the JSON
// codec of rendezvous events replayed through it.
#include "cairn/elastic/journal.h"

#include <gtest/gtest.h>

#include <fstream>

#include "cairn/elastic/rdzv_codec.h"
#include "elastic/master/master_testing_impl.h"
#include "elastic/testing_impl.h"

namespace cairn::elastic {
namespace {

using nlohmann::json;
using testing::CapturedLog;
using testing::ScratchDir;
using testing::slurp;

// Opens the journal at `path`, collecting every replayed record.
Result<std::unique_ptr<Journal>> open(const std::string& path, std::vector<json>* seen) {
  return Journal::Open(path, [seen](const json& r) {
    seen->push_back(r);
    return Status::Ok();
  });
}

void write_raw(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << data;
}

TEST(Journal, RecordsSurviveReopening) {
  ScratchDir dir("journal");
  const std::string path = dir / "sub/master.journal";
  std::vector<json> seen;
  {
    auto j = open(path, &seen);
    ASSERT_TRUE(j.ok()) << j.status().ToString();
    EXPECT_TRUE(seen.empty());
    ASSERT_TRUE((*j)->append({{{"a", 1}}, {{"b", "two"}}}).ok());
    ASSERT_TRUE((*j)->append({{{"c", 3.5}}}).ok());
    ASSERT_TRUE((*j)->append({}).ok());
  }
  auto j = open(path, &seen);
  ASSERT_TRUE(j.ok()) << j.status().ToString();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0]["a"], 1);
  EXPECT_EQ(seen[1]["b"], "two");
  EXPECT_EQ(seen[2]["c"], 3.5);
  EXPECT_EQ((*j)->replayed(), 3);
  // The first line is the versioned header.
  const std::string text = slurp(path);
  EXPECT_EQ(text.substr(0, text.find('\n')),
            journal_line({{"format", kJournalFormat}, {"format_version", 1}}));
}

TEST(Journal, RejectsNonObjectRecords) {
  ScratchDir dir("journal");
  std::vector<json> seen;
  auto j = open(dir / "j", &seen);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)->append({json::array({1, 2})}).code(), StatusCode::kInternal);
}

TEST(Journal, TornTailIsDroppedWithAWarningAndCutOff) {
  ScratchDir dir("journal");
  const std::string path = dir / "j";
  std::vector<json> seen;
  { ASSERT_TRUE(open(path, &seen).value()->append({{{"n", 1}}, {{"n", 2}}}).ok()); }
  const std::string good = slurp(path);
  // Half of a third record, as a crash during write() leaves it.
  const std::string third = journal_line({{"n", 3}});
  for (const std::string& tail :
       {third.substr(0, third.size() / 2), third.substr(0, 5),
        std::string("0123456789abcdef {\"n\": 3}\n"), std::string(40, '\0')}) {
    write_raw(path, good + tail);
    seen.clear();
    CapturedLog log;
    auto j = open(path, &seen);
    ASSERT_TRUE(j.ok()) << j.status().ToString();
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ((*j)->dropped_tail_bytes(), int64_t(tail.size()));
    EXPECT_NE(log.text().find("dropping a damaged last record"), std::string::npos) << log.text();
    EXPECT_EQ(slurp(path), good);  // cut off, so appends continue cleanly
    ASSERT_TRUE((*j)->append({{{"n", 4}}}).ok());
  }
  seen.clear();
  ASSERT_TRUE(open(path, &seen).ok());
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[2]["n"], 4);
}

TEST(Journal, TornHeaderStartsAFreshJournal) {
  ScratchDir dir("journal");
  const std::string path = dir / "j";
  const std::string h = journal_line({{"format", kJournalFormat}, {"format_version", 1}});
  write_raw(path, h.substr(0, 10));
  std::vector<json> seen;
  auto j = open(path, &seen);
  ASSERT_TRUE(j.ok()) << j.status().ToString();
  EXPECT_EQ(slurp(path), h + "\n");
}

TEST(Journal, CorruptMiddleRecordIsAnError) {
  ScratchDir dir("journal");
  const std::string path = dir / "j";
  std::vector<json> seen;
  { ASSERT_TRUE(open(path, &seen).value()->append({{{"n", 1}}, {{"n", 2}}, {{"n", 3}}}).ok()); }
  std::string text = slurp(path);
  const size_t at = text.find("\"n\":2");
  ASSERT_NE(at, std::string::npos);
  text[at + 4] = '7';  // flip the value of record 2: its checksum no longer matches
  write_raw(path, text);
  seen.clear();
  auto j = open(path, &seen);
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(j.status().message().find("record 2"), std::string::npos) << j.status().ToString();
  EXPECT_NE(j.status().message().find("checksum mismatch"), std::string::npos);
  EXPECT_NE(j.status().message().find("not torn"), std::string::npos);
  EXPECT_EQ(slurp(path), text);  // nothing cut
}

TEST(Journal, ForeignFilesAndOtherVersionsAreRefused) {
  ScratchDir dir("journal");
  std::vector<json> seen;
  write_raw(dir / "notes", "hello world\n");
  auto a = open(dir / "notes", &seen);
  EXPECT_EQ(a.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(a.status().message().find("not a cairn master journal"), std::string::npos);
  EXPECT_EQ(slurp(dir / "notes"), "hello world\n");  // never truncated
  write_raw(dir / "other", journal_line({{"format", "something-else"}}) + "\n");
  EXPECT_EQ(open(dir / "other", &seen).status().code(), StatusCode::kCorrupt);
  write_raw(dir / "v2", journal_line({{"format", kJournalFormat}, {"format_version", 2}}) + "\n");
  auto v2 = open(dir / "v2", &seen);
  EXPECT_EQ(v2.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(v2.status().message().find("version 2"), std::string::npos);
}

TEST(Journal, ReplayErrorsNameTheRecord) {
  ScratchDir dir("journal");
  std::vector<json> seen;
  { ASSERT_TRUE(open(dir / "j", &seen).value()->append({{{"n", 1}}, {{"n", 2}}}).ok()); }
  auto j = Journal::Open(dir / "j", [](const json& r) {
    return r["n"] == 2 ? Status::Corrupt("bad n") : Status::Ok();
  });
  ASSERT_FALSE(j.ok());
  EXPECT_NE(j.status().message().find("record 2: bad n"), std::string::npos)
      << j.status().ToString();
}

TEST(JournalCodec, EventsRoundTrip) {
  Round r;
  r.number = 3;
  r.members = {{"a", "ha", 2, 0, 0}, {"b", "hb", 4, 1, 2}};
  r.world_size = 6;
  r.master_addr = "ha";
  r.master_port = 29411;
  const std::vector<RdzvEvent> events = {
      NodeJoined{{"a", "ha", 2, 29411, 0xfedcba9876543210ull}},
      NodeRemoved{"b", RemoveReason::kDropped},
      NodeRemoved{"c", RemoveReason::kLeft},
      NodeRemoved{"d", RemoveReason::kExcluded},
      RoundOpened{3, true, "member a joined again"},
      RoundCompleted{r},
      FailureReported{{"a", 1, ExitStatus::Signaled(9), "killed"}},
      NodeExcluded{"c", "failed the node check"},
  };
  for (const auto& e : events) {
    const json j = event_to_json(e);
    auto back = event_from_json(json::parse(j.dump()));
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(event_to_json(*back), j);
  }
  auto node = std::get<NodeJoined>(*event_from_json(event_to_json(events[0])));
  EXPECT_EQ(node.node.incarnation, 0xfedcba9876543210ull);
}

TEST(JournalCodec, BadRecordsAreCorrupt) {
  auto a = event_from_json({{"type", "node_joined"}, {"node", {{"id", "a"}}}});
  EXPECT_EQ(a.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(a.status().message().find("node_joined"), std::string::npos);
  auto b = event_from_json({{"type", "teleported"}});
  EXPECT_NE(b.status().message().find("unknown type 'teleported'"), std::string::npos);
  EXPECT_FALSE(event_from_json({{"type", "node_removed"}, {"node_id", "a"}, {"reason", "x"}}).ok());
  EXPECT_FALSE(event_from_json(json::object()).ok());
}

// Found by fuzz/journal_fuzz: a fraction or an out-of-range number where an integer field was
// expected was converted anyway (undefined behaviour for 1.8e58 as uint64_t).
TEST(JournalCodec, NumbersThatDoNotFitTheFieldAreCorrupt) {
  const json node = {
      {"id", "a"}, {"host", "ha"}, {"nproc", 2}, {"store_port", 29411}, {"incarnation", 1}};
  ASSERT_TRUE(event_from_json({{"type", "node_joined"}, {"node", node}}).ok());
  for (const auto& [field, value] :
       std::vector<std::pair<const char*, json>>{{"incarnation", 1.8e58},
                                                 {"incarnation", -1},
                                                 {"nproc", 1e300},
                                                 {"nproc", 2.5},
                                                 {"nproc", int64_t{1} << 40},
                                                 {"store_port", "29411"}}) {
    json bad = node;
    bad[field] = value;
    auto e = event_from_json({{"type", "node_joined"}, {"node", bad}});
    ASSERT_FALSE(e.ok()) << field << " " << value.dump();
    EXPECT_EQ(e.status().code(), StatusCode::kCorrupt);
    EXPECT_NE(e.status().message().find(std::string("'") + field + "'"), std::string::npos)
        << e.status().message();
  }
  auto opened = event_from_json(
      {{"type", "round_opened"}, {"number", 1e19}, {"restart", false}, {"reason", "r"}});
  EXPECT_EQ(opened.status().code(), StatusCode::kCorrupt);
  auto failure = event_from_json({{"type", "failure"},
                                  {"node_id", "a"},
                                  {"rank", -1},
                                  {"signaled", true},
                                  {"code", 4294967305.0},
                                  {"diagnosis", "crash"}});
  EXPECT_EQ(failure.status().code(), StatusCode::kCorrupt);
}

TEST(JournalCodec, StateSurvivesTheJournal) {
  ScratchDir dir("journal");
  const std::string path = dir / "j";
  RdzvParams p{2, 3, 1, 0, 5};
  RdzvState s(p);
  {
    std::vector<json> seen;
    auto j = open(path, &seen).value();
    for (auto id : {"b", "a"}) {
      ASSERT_TRUE(s.join({id, std::string("h") + id, 2, 30000, 1}, 0, 0).ok());
      std::vector<json> records;
      for (const auto& e : s.take_events()) records.push_back(event_to_json(e));
      ASSERT_TRUE(j->append(records).ok());
    }
  }
  ASSERT_EQ(s.round().number, 1);
  RdzvState r(p);
  auto j = Journal::Open(path, [&](const json& rec) -> Status {
    CAIRN_ASSIGN_OR_RETURN(RdzvEvent e, event_from_json(rec));
    return r.replay(e, 0);
  });
  ASSERT_TRUE(j.ok()) << j.status().ToString();
  EXPECT_EQ(r.round().number, 1);
  ASSERT_EQ(r.round().members.size(), 2u);
  EXPECT_EQ(r.round().members[0].node_id, "a");
  EXPECT_EQ(r.round().world_size, 4);
  EXPECT_FALSE(r.open());
}

}  // namespace
}  // namespace cairn::elastic
