#include "agent/vfio/controller.h"

#include "gtest/gtest.h"

namespace umpath::vfio {
namespace {

// NVMe Base 2.0, Figure 150: type in bits 2:0, information in 15:8, log page in 23:16.
TEST(AsyncEventTest, AnaChangeNoticeAsksForTheAnaLog) {
  const AsyncEvent e = DecodeAsyncEvent(0x000c0302);
  EXPECT_EQ(e.type, 2);
  EXPECT_EQ(e.info, 3);
  EXPECT_EQ(e.log_page, 0x0c);
  EXPECT_TRUE(e.ana_change());
  EXPECT_FALSE(e.namespace_changed());
}

TEST(AsyncEventTest, NamespaceAttributeChangedNotice) {
  const AsyncEvent e = DecodeAsyncEvent(0x00040002);
  EXPECT_TRUE(e.namespace_changed());
  EXPECT_FALSE(e.ana_change());
  EXPECT_EQ(e.log_page, 0x04);
}

TEST(AsyncEventTest, OtherTypesAreNeitherNotice) {
  // A SMART/health event with information 3 is not an ANA change.
  const AsyncEvent smart = DecodeAsyncEvent(0x00020301);
  EXPECT_FALSE(smart.ana_change());
  const AsyncEvent error = DecodeAsyncEvent(0x00010000);
  EXPECT_EQ(error.type, 0);
  EXPECT_FALSE(error.namespace_changed());
  // Reserved upper bits are ignored.
  EXPECT_TRUE(DecodeAsyncEvent(0xff0c0302).ana_change());
}

}  // namespace
}  // namespace umpath::vfio
