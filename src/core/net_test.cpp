#include "cairn/core/net.h"

#include <gtest/gtest.h>

namespace cairn::core {
namespace {

TEST(Net, LoopbackHosts) {
  EXPECT_TRUE(is_loopback_host("127.0.0.1"));
  EXPECT_TRUE(is_loopback_host("127.0.0.5"));
  EXPECT_TRUE(is_loopback_host("localhost"));
  EXPECT_TRUE(is_loopback_host("::1"));
  EXPECT_TRUE(is_loopback_host("[::1]"));
  EXPECT_FALSE(is_loopback_host("10.0.0.1"));
  EXPECT_FALSE(is_loopback_host("0.0.0.0"));
  EXPECT_FALSE(is_loopback_host("::"));
  EXPECT_FALSE(is_loopback_host("128.0.0.1"));
  EXPECT_FALSE(is_loopback_host("localhost.example.com"));
  EXPECT_FALSE(is_loopback_host(""));
}

TEST(Net, HostOfAnAddress) {
  EXPECT_EQ(host_of("10.0.0.1:29400"), "10.0.0.1");
  EXPECT_EQ(host_of("[::1]:29400"), "::1");
  EXPECT_EQ(host_of("node-a:1"), "node-a");
  EXPECT_EQ(host_of("node-a"), "node-a");
  EXPECT_EQ(host_of("fe80::1"), "fe80::1");
  EXPECT_EQ(host_of(""), "");
}

}  // namespace
}  // namespace cairn::core
