#include "cairn/core/blas_threads.h"

#include <gtest/gtest.h>

namespace cairn::core {
namespace {

// core links no BLAS: the lookup must fail cleanly rather than crash. (The trainer's process,
// which loads OpenBLAS through libtorch, is checked by tests/train_cli_test.sh.)
TEST(BlasThreads, WithoutOpenBlasNothingIsClaimed) {
  if (blas_num_threads() == -1) {
    EXPECT_FALSE(set_blas_num_threads(1));
  } else {
    ASSERT_TRUE(set_blas_num_threads(1));
    EXPECT_EQ(blas_num_threads(), 1);
  }
  EXPECT_FALSE(set_blas_num_threads(0));
}

}  // namespace
}  // namespace cairn::core
