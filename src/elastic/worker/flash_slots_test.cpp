#include "cairn/elastic/flash_slots.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

namespace cairn::elastic {
namespace {

TEST(FlashSlots, NamesAreStablePerRunDirectoryAndRank) {
  EXPECT_EQ(flash_slot_name("/tmp/run", 0, 0), flash_slot_name("/tmp/run/", 0, 0));
  EXPECT_NE(flash_slot_name("/tmp/run", 0, 0), flash_slot_name("/tmp/run2", 0, 0));
  EXPECT_NE(flash_slot_name("/tmp/run", 0, 0), flash_slot_name("/tmp/run", 1, 0));
  EXPECT_NE(flash_slot_name("/tmp/run", 0, 0), flash_slot_name("/tmp/run", 0, 1));
  EXPECT_EQ(flash_slot_name("/tmp/run", 3, 1).substr(0, 7), "/cairn-");
}

TEST(FlashSlots, UnlinkRemovesOnlyThisRunsSegments) {
  std::string dir = "/tmp/cairn-flash-test-" + std::to_string(getpid());
  auto make = [](const std::string& name) {
    int fd = ::shm_open(name.c_str(), O_CREAT | O_RDWR, 0600);
    ASSERT_GE(fd, 0);
    ::close(fd);
  };
  make(flash_slot_name(dir, 0, 0));
  make(flash_slot_name(dir, 1, 1));
  make(flash_slot_name(dir + "x", 0, 0));
  EXPECT_EQ(unlink_flash_slots(dir, {0, 1}), 2);
  EXPECT_EQ(unlink_flash_slots(dir, {0, 1}), 0);
  EXPECT_EQ(unlink_flash_slots(dir + "x", {0}), 1);
}

}  // namespace
}  // namespace cairn::elastic
