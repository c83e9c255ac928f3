#include "cairn/elastic/rendezvous.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace cairn::elastic {
namespace {

TEST(StaticRendezvous, StandaloneIsLoopbackWithAFreshPortPerRound) {
  StaticRendezvousOptions o;
  o.nproc_per_node = 4;
  o.run_id = "r";
  StaticRendezvous rdzv(o);
  auto w0 = rdzv.next_round(0, 1.0);
  ASSERT_TRUE(w0.ok());
  EXPECT_EQ(w0->master_addr, "127.0.0.1");
  EXPECT_GT(w0->master_port, 0);
  EXPECT_LT(w0->master_port, 65536);
  EXPECT_EQ(w0->world_size(), 4);
  EXPECT_EQ(w0->global_rank(3), 3);
  EXPECT_EQ(w0->round, 0);
  EXPECT_EQ(w0->run_id, "r");
  auto w1 = rdzv.next_round(1, 1.0);
  ASSERT_TRUE(w1.ok());
  EXPECT_EQ(w1->round, 1);
}

TEST(StaticRendezvous, MultiNodeUsesTheGivenEndpoint) {
  StaticRendezvousOptions o;
  o.num_nodes = 3;
  o.node_rank = 2;
  o.nproc_per_node = 2;
  o.master_host = "node0";
  o.master_port = 29400;
  StaticRendezvous rdzv(o);
  for (int round = 0; round < 3; ++round) {
    auto w = rdzv.next_round(round, 0.0);
    ASSERT_TRUE(w.ok());
    EXPECT_EQ(w->master_addr, "node0");
    EXPECT_EQ(w->master_port, 29400);
    EXPECT_EQ(w->world_size(), 6);
    EXPECT_EQ(w->global_rank(0), 4);
    EXPECT_EQ(w->global_rank(1), 5);
    EXPECT_EQ(w->round, round);
  }
}

TEST(PickFreePort, ThePortCanBeBound) {
  auto port = pick_free_port();
  ASSERT_TRUE(port.ok()) << port.status().ToString();
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(uint16_t(*port));
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(fd);
}

}  // namespace
}  // namespace cairn::elastic
