#include "agent/vfio/prp.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace umpath::vfio {
namespace {

constexpr uint32_t kPage = 4096;
constexpr uint64_t kBuf = 0x100000000;  // page aligned
constexpr uint64_t kList = 0x200000000;

struct Lists {
  std::vector<std::vector<uint64_t>> mem;
  std::vector<PrpListPage> pages;
  explicit Lists(int n) : mem(n, std::vector<uint64_t>(kPage / 8, 0xdead)) {
    for (int i = 0; i < n; ++i) pages.push_back({kList + uint64_t(i) * kPage, mem[i].data()});
  }
};

TEST(PrpTest, OnePageUsesPrp1Only) {
  Lists l(1);
  Prps p = BuildPrps(kBuf, 4096, kPage, l.pages.data(), 1);
  EXPECT_EQ(p.error, PrpError::kNone);
  EXPECT_EQ(p.prp1, kBuf);
  EXPECT_EQ(p.prp2, 0u);
  p = BuildPrps(kBuf + 512, 512, kPage, l.pages.data(), 1);
  EXPECT_EQ(p.prp1, kBuf + 512);
  EXPECT_EQ(p.prp2, 0u);
}

TEST(PrpTest, TwoPagesPutTheSecondPageInPrp2) {
  Lists l(1);
  Prps p = BuildPrps(kBuf, 8192, kPage, l.pages.data(), 1);
  EXPECT_EQ(p.prp2, kBuf + kPage);
  p = BuildPrps(kBuf + 512, 4096, kPage, l.pages.data(), 1);  // offset spills into page 2
  EXPECT_EQ(p.prp1, kBuf + 512);
  EXPECT_EQ(p.prp2, kBuf + kPage);
  EXPECT_EQ(p.list_pages_used, 0u);
}

TEST(PrpTest, MorePagesUseAList) {
  Lists l(1);
  Prps p = BuildPrps(kBuf + 1024, 3 * 4096, kPage, l.pages.data(), 1);  // spans 4 pages
  EXPECT_EQ(p.error, PrpError::kNone);
  EXPECT_EQ(p.prp1, kBuf + 1024);
  EXPECT_EQ(p.prp2, kList);
  EXPECT_EQ(p.list_pages_used, 1u);
  EXPECT_EQ(l.mem[0][0], kBuf + kPage);
  EXPECT_EQ(l.mem[0][1], kBuf + 2 * kPage);
  EXPECT_EQ(l.mem[0][2], kBuf + 3 * kPage);
  EXPECT_EQ(l.mem[0][3], 0xdeadu);  // nothing written past the transfer
}

TEST(PrpTest, ExactlyOneFullListPageNeedsNoChain) {
  // 513 pages: PRP1 plus 512 list entries, one full list page.
  EXPECT_EQ(PrpListPagesNeeded(kBuf, 513ull * kPage, kPage), 1u);
  Lists l(1);
  Prps p = BuildPrps(kBuf, 513ull * kPage, kPage, l.pages.data(), 1);
  EXPECT_EQ(p.error, PrpError::kNone);
  EXPECT_EQ(l.mem[0][511], kBuf + 512ull * kPage);
}

TEST(PrpTest, LongTransfersChainListPages) {
  // 1025 pages: 1024 list entries. A list page holds 512 entries, and every page but the
  // last gives one to the chain: 511 + 511 + 2.
  EXPECT_EQ(PrpListPagesNeeded(kBuf, 1025ull * kPage, kPage), 3u);
  Lists l(3);
  Prps p = BuildPrps(kBuf, 1025ull * kPage, kPage, l.pages.data(), 3);
  ASSERT_EQ(p.error, PrpError::kNone);
  EXPECT_EQ(p.list_pages_used, 3u);
  EXPECT_EQ(l.mem[0][510], kBuf + 511ull * kPage);
  EXPECT_EQ(l.mem[0][511], kList + kPage);      // chain to list page 1
  EXPECT_EQ(l.mem[1][0], kBuf + 512ull * kPage);
  EXPECT_EQ(l.mem[1][511], kList + 2 * kPage);  // chain to list page 2
  EXPECT_EQ(l.mem[2][0], kBuf + 1023ull * kPage);
  EXPECT_EQ(l.mem[2][1], kBuf + 1024ull * kPage);  // the last data page
  EXPECT_EQ(l.mem[2][2], 0xdeadu);
}

TEST(PrpTest, BadInputIsReportedNotWritten) {
  Lists l(1);
  EXPECT_EQ(BuildPrps(kBuf, 0, kPage, l.pages.data(), 1).error, PrpError::kEmpty);
  EXPECT_EQ(BuildPrps(kBuf + 2, 512, kPage, l.pages.data(), 1).error, PrpError::kUnaligned);
  EXPECT_EQ(BuildPrps(kBuf, 1025ull * kPage, kPage, l.pages.data(), 1).error,
            PrpError::kListTooSmall);
  EXPECT_EQ(l.mem[0][0], 0xdeadu);
}

}  // namespace
}  // namespace umpath::vfio
