// Tests of the master's journal (records, torn tails, corruption, versions) and of the JSON
// codec of rendezvous events replayed through it.
#include "cairn/elastic/journal.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <future>
#include <mutex>
#include <numeric>
#include <thread>

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

// --- group commit ---------------------------------------------------------------------------

// The records' "seq" fields, in file order.
std::vector<int64_t> seqs_in(const std::string& path) {
  std::vector<json> seen;
  auto j = open(path, &seen);
  EXPECT_TRUE(j.ok()) << j.status().ToString();
  std::vector<int64_t> out;
  for (const auto& r : seen) out.push_back(r.value("seq", int64_t(-1)));
  return out;
}

// Threads make changes in one order under their own lock and enqueue their records there; each
// hears "durable" (wait or when_durable) only once its records are written, and the file keeps
// the changes' order. The writes are fewer than the records: concurrent callers share them.
TEST(GroupCommit, CallersHearOfDurableRecordsOnlyAndTheOrderIsKept) {
  ScratchDir dir("group_commit");
  const std::string path = dir / "journal";
  constexpr int kThreads = 8, kEach = 200;
  int64_t writes = 0;
  {
    std::vector<json> seen;
    auto j = open(path, &seen);
    ASSERT_TRUE(j.ok());
    GroupCommit commits(j->get());
    std::mutex state;  // the master's lock
    int64_t next = 0;
    std::atomic<int> early{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0; i < kEach; ++i) {
          uint64_t ticket = 0;
          {
            std::lock_guard<std::mutex> lock(state);
            ticket = commits.enqueue({json{{"seq", next++}}});
          }
          if (t % 2 == 0) {
            ASSERT_TRUE(commits.wait(ticket).ok());
            if (commits.written() < int64_t(ticket)) early.fetch_add(1);
          } else {
            std::promise<void> heard;
            commits.when_durable(ticket, [&](const Status& s) {
              EXPECT_TRUE(s.ok()) << s.ToString();
              if (commits.written() < int64_t(ticket)) early.fetch_add(1);
              heard.set_value();
            });
            heard.get_future().wait();
          }
        }
      });
    for (auto& th : threads) th.join();
    EXPECT_EQ(early.load(), 0);
    EXPECT_EQ(commits.written(), kThreads * kEach);
    writes = commits.writes();
    std::printf("%d records in %lld writes\n", kThreads * kEach, static_cast<long long>(writes));
  }
  std::vector<int64_t> expected(kThreads * kEach);
  std::iota(expected.begin(), expected.end(), 0);
  EXPECT_EQ(seqs_in(path), expected);
  EXPECT_GE(writes, 1);
  EXPECT_LT(writes, kThreads * kEach);
}

TEST(GroupCommit, WithoutAJournalEveryTicketIsDurableAtOnce) {
  GroupCommit commits(nullptr);
  EXPECT_EQ(commits.enqueue({}), 0u);
  const uint64_t t = commits.enqueue({json{{"a", 1}}, json{{"b", 2}}});
  EXPECT_EQ(t, 2u);
  bool heard = false;
  commits.when_durable(t, [&](const Status& s) { heard = s.ok(); });
  EXPECT_TRUE(heard);  // at once, on this thread
  EXPECT_TRUE(commits.wait(t).ok());
  EXPECT_EQ(commits.writes(), 0);
}

// A write that fails (here: over the file size limit) fails its callers and every later one,
// while records written before stay durable and their callers hear so.
TEST(GroupCommit, AFailedWriteFailsItsCallersAndEveryLaterOne) {
  ScratchDir dir("group_commit_fail");
  const std::string path = dir / "journal";
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // In a child: the file size limit is the process's.
    std::vector<json> seen;
    auto j = open(path, &seen);
    if (!j.ok()) _exit(10);
    GroupCommit commits(j->get());
    const uint64_t first = commits.enqueue({json{{"seq", 0}}});
    if (!commits.wait(first).ok()) _exit(11);
    ::signal(SIGXFSZ, SIG_IGN);
    struct stat st {};
    ::stat(path.c_str(), &st);
    rlimit limit{rlim_t(st.st_size + 10), rlim_t(st.st_size + 10)};
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) _exit(12);
    const uint64_t big = commits.enqueue({json{{"seq", 1}, {"pad", std::string(1000, 'x')}}});
    Status s = commits.wait(big);
    if (s.ok() || s.message().find("journal") == std::string::npos) _exit(13);
    const uint64_t later = commits.enqueue({json{{"seq", 2}}});
    Status heard = Status::Ok();
    commits.when_durable(later, [&](const Status& e) { heard = e; });
    if (heard.ok() || commits.error().ok()) _exit(14);
    if (!commits.wait(first).ok()) _exit(15);  // written before the failure
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(seqs_in(path), std::vector<int64_t>{0});  // the failed write was cut off
}

// A master killed in the middle of a burst: every record a caller heard was durable is in the
// journal after the restart, and the journal holds a prefix of the changes, in order.
TEST(GroupCommit, AKillMidBurstKeepsEveryAcknowledgedRecord) {
  ScratchDir dir("group_commit_kill");
  const std::string path = dir / "journal";
  int acks[2];
  ASSERT_EQ(::pipe(acks), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(acks[0]);
    std::vector<json> seen;
    auto j = open(path, &seen);
    if (!j.ok()) _exit(10);
    GroupCommit commits(j->get());
    std::mutex state, pipe;
    int64_t next = 0;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&] {
        for (;;) {
          uint64_t ticket = 0;
          int64_t seq = 0;
          {
            std::lock_guard<std::mutex> lock(state);
            seq = next++;
            ticket = commits.enqueue({json{{"seq", seq}, {"pad", std::string(200, 'p')}}});
          }
          if (!commits.wait(ticket).ok()) _exit(11);
          std::lock_guard<std::mutex> lock(pipe);
          if (::write(acks[1], &seq, sizeof seq) != sizeof seq) _exit(12);
        }
      });
    for (auto& th : threads) th.join();
    _exit(0);
  }
  ::close(acks[1]);
  std::vector<int64_t> acked;
  int64_t seq = 0;
  while (acked.size() < 2000 && ::read(acks[0], &seq, sizeof seq) == sizeof seq)
    acked.push_back(seq);
  ::kill(pid, SIGKILL);
  while (::read(acks[0], &seq, sizeof seq) == sizeof seq) acked.push_back(seq);  // sent before
  ::close(acks[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the writer exited on its own: " << status;
  ASSERT_GE(acked.size(), 2000u);

  const std::vector<int64_t> on_disk = seqs_in(path);
  for (size_t i = 0; i < on_disk.size(); ++i) ASSERT_EQ(on_disk[i], int64_t(i)) << "record " << i;
  for (int64_t a : acked) EXPECT_LT(a, int64_t(on_disk.size())) << "acknowledged record lost";
}

}  // namespace
}  // namespace cairn::elastic
