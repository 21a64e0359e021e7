#include "agent/vfio/iova_allocator.h"

#include "agent/base/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath::vfio {
namespace {

using ::umpath::testing::StatusIs;

constexpr uint64_t kBase = 1ull << 32;
constexpr uint64_t kPage = 4096;

TEST(IovaAllocatorTest, AllocatesAlignedRangesFirstFit) {
  ASSERT_OK_AND_ASSIGN(IovaAllocator a, IovaAllocator::Create(kBase, 64 * kPage, kPage));
  ASSERT_OK_AND_ASSIGN(uint64_t x, a.Allocate(100, kPage));  // rounded up to a page
  EXPECT_EQ(x, kBase);
  ASSERT_OK_AND_ASSIGN(uint64_t y, a.Allocate(kPage, 8 * kPage));
  EXPECT_EQ(y, kBase + 8 * kPage);  // aligned; the gap before it stays free
  ASSERT_OK_AND_ASSIGN(uint64_t z, a.Allocate(2 * kPage, kPage));
  EXPECT_EQ(z, kBase + kPage);  // first fit uses the gap
  EXPECT_EQ(a.free_bytes(), 60 * kPage);
}

TEST(IovaAllocatorTest, ExhaustionIsAnErrorAndFreeCoalesces) {
  ASSERT_OK_AND_ASSIGN(IovaAllocator a, IovaAllocator::Create(kBase, 4 * kPage, kPage));
  std::vector<uint64_t> got;
  for (int i = 0; i < 4; ++i) {
    ASSERT_OK_AND_ASSIGN(uint64_t v, a.Allocate(kPage, kPage));
    got.push_back(v);
  }
  EXPECT_THAT(a.Allocate(kPage, kPage), StatusIs(absl::StatusCode::kResourceExhausted));
  ASSERT_OK(a.Free(got[1], kPage));
  ASSERT_OK(a.Free(got[3], kPage));
  EXPECT_EQ(a.free_ranges(), 2u);
  EXPECT_THAT(a.Allocate(2 * kPage, kPage), StatusIs(absl::StatusCode::kResourceExhausted));
  ASSERT_OK(a.Free(got[2], kPage));  // joins both neighbours
  EXPECT_EQ(a.free_ranges(), 1u);
  ASSERT_OK_AND_ASSIGN(uint64_t big, a.Allocate(3 * kPage, kPage));
  EXPECT_EQ(big, got[1]);
}

TEST(IovaAllocatorTest, BadInputIsRejected) {
  EXPECT_THAT(IovaAllocator::Create(kBase + 1, kPage, kPage),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(IovaAllocator::Create(kBase, kPage, 3000), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(IovaAllocator::Create(~0ull - kPage + 1, 2 * kPage, kPage),
              StatusIs(absl::StatusCode::kInvalidArgument));  // wraps
  ASSERT_OK_AND_ASSIGN(IovaAllocator a, IovaAllocator::Create(kBase, 8 * kPage, kPage));
  EXPECT_THAT(a.Allocate(0, kPage), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(a.Allocate(kPage, 3 * kPage), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(a.Allocate(~0ull, kPage), StatusIs(absl::StatusCode::kResourceExhausted));
  ASSERT_OK_AND_ASSIGN(uint64_t x, a.Allocate(2 * kPage, kPage));
  EXPECT_THAT(a.Free(x, kPage), StatusIs(absl::StatusCode::kInvalidArgument));  // wrong length
  EXPECT_THAT(a.Free(x + kPage, kPage), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK(a.Free(x, 2 * kPage));
  EXPECT_THAT(a.Free(x, 2 * kPage), StatusIs(absl::StatusCode::kInvalidArgument));  // twice
  EXPECT_EQ(a.free_bytes(), 8 * kPage);
}

// A hand-over: the successor takes the ranges its predecessor mapped, exactly, and
// allocates around them; a range not wholly free is refused.
TEST(IovaAllocatorTest, ReservesWhatAnotherProcessMapped) {
  ASSERT_OK_AND_ASSIGN(IovaAllocator a, IovaAllocator::Create(kBase, 8 * kPage, kPage));
  ASSERT_OK(a.Reserve(kBase + 2 * kPage, 2 * kPage));
  ASSERT_OK(a.Reserve(kBase, kPage));
  EXPECT_EQ(a.free_bytes(), 5 * kPage);
  EXPECT_THAT(a.Reserve(kBase + 3 * kPage, kPage), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(a.Reserve(kBase + 7 * kPage, 2 * kPage), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(a.Reserve(kBase - kPage, kPage), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(a.Reserve(kBase + 5 * kPage + 1, kPage), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK_AND_ASSIGN(uint64_t x, a.Allocate(kPage, kPage));
  EXPECT_EQ(x, kBase + kPage);  // the gap between the two
  ASSERT_OK_AND_ASSIGN(uint64_t y, a.Allocate(2 * kPage, kPage));
  EXPECT_EQ(y, kBase + 4 * kPage);
  // A reserved range is freed like an allocated one (the successor unmaps it).
  ASSERT_OK(a.Free(kBase + 2 * kPage, 2 * kPage));
  EXPECT_EQ(a.free_bytes(), 4 * kPage);
}

}  // namespace
}  // namespace umpath::vfio
