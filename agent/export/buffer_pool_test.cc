#include "agent/export/buffer_pool.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"

namespace umpath::ublk {
namespace {

constexpr uint32_t kBytes = 4096;

IoMemory Memory(uint32_t buffers) {
  auto owner = std::shared_ptr<uint8_t[]>(new uint8_t[size_t{buffers} * kBytes]);
  return IoMemory{owner.get(), owner};
}

// A request waiting in line; records the buffer it got.
struct Request {
  BufferPool::Waiter w;
  uint8_t* got = nullptr;
  explicit Request(BufferPool::Account* a) {
    w.account = a;
    w.user = this;
    w.ready = [](BufferPool::Waiter* w, uint8_t* b) { static_cast<Request*>(w->user)->got = b; };
  }
};

TEST(BufferPoolTest, BuffersAreDistinctAndInsideTheMemory) {
  BufferPool pool(kBytes);
  IoMemory m = Memory(4);
  auto* base = static_cast<uint8_t*>(m.host);
  pool.Add(m, 4);
  BufferPool::Account a;
  pool.Register(&a);
  std::vector<uint8_t*> got;
  for (int i = 0; i < 4; ++i) got.push_back(pool.Take(&a));
  EXPECT_EQ(pool.Take(&a), nullptr);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NE(got[i], nullptr);
    EXPECT_EQ((got[i] - base) % kBytes, 0);
    EXPECT_GE(got[i], base);
    EXPECT_LT(got[i], base + 4 * kBytes);
    for (size_t j = 0; j < i; ++j) EXPECT_NE(got[i], got[j]);
  }
  EXPECT_EQ(a.held, 4u);
  for (uint8_t* b : got) pool.Give(&a, b);
  EXPECT_EQ(pool.free(), 4u);
  pool.Unregister(&a);
  EXPECT_EQ(pool.owed(), 0u);
}

// A queue that borrowed everything cannot take what another queue is guaranteed.
TEST(BufferPoolTest, EachQueueKeepsItsGuaranteedBuffer) {
  BufferPool pool(kBytes);
  pool.Add(Memory(4), 4);
  BufferPool::Account busy, quiet;
  pool.Register(&busy);
  pool.Register(&quiet);
  std::vector<uint8_t*> borrowed;
  while (uint8_t* b = pool.Take(&busy)) borrowed.push_back(b);
  EXPECT_EQ(borrowed.size(), 3u);  // the fourth is quiet's
  EXPECT_EQ(pool.free(), 1u);
  uint8_t* mine = pool.Take(&quiet);
  ASSERT_NE(mine, nullptr);
  EXPECT_EQ(pool.Take(&quiet), nullptr);  // nothing left to borrow
  pool.Give(&quiet, mine);
  for (uint8_t* b : borrowed) pool.Give(&busy, b);
}

// Waiters are served in line order as buffers come back; one that may not borrow yet
// lets a waiter behind it that is owed a buffer go first.
TEST(BufferPoolTest, WaitersAreServedInOrderAndTheOwedGoFirst) {
  BufferPool pool(kBytes);
  pool.Add(Memory(3), 3);
  BufferPool::Account a, b;
  pool.Register(&a);
  pool.Register(&b);
  uint8_t* a1 = pool.Take(&a);
  uint8_t* a2 = pool.Take(&a);  // borrowed
  uint8_t* b1 = pool.Take(&b);
  ASSERT_NE(a1, nullptr);
  ASSERT_NE(a2, nullptr);
  ASSERT_NE(b1, nullptr);
  EXPECT_EQ(pool.Take(&a), nullptr);
  Request ra(&a), rb(&b);
  pool.Wait(&ra.w);
  EXPECT_EQ(pool.Take(&b), nullptr);
  pool.Wait(&rb.w);
  EXPECT_EQ(pool.waiting(), 2u);
  EXPECT_EQ(pool.Serve(), 0u);  // nothing free
  // b gives its own back: b is owed it again, so b's waiter has it though a waits ahead.
  pool.Give(&b, b1);
  EXPECT_EQ(pool.Serve(), 1u);
  EXPECT_EQ(rb.got, b1);
  EXPECT_EQ(ra.got, nullptr);
  EXPECT_TRUE(ra.w.waiting);
  // a gives one back: a's waiter has it.
  pool.Give(&a, a2);
  EXPECT_EQ(pool.Serve(), 1u);
  EXPECT_EQ(ra.got, a2);
  EXPECT_EQ(pool.waiting(), 0u);
  pool.Give(&a, a1);
  pool.Give(&a, ra.got);
  pool.Give(&b, rb.got);
  EXPECT_EQ(pool.free(), 3u);
}

TEST(BufferPoolTest, NewMemoryServesWaiters) {
  BufferPool pool(kBytes);
  pool.Add(Memory(1), 1);
  BufferPool::Account a;
  pool.Register(&a);
  uint8_t* first = pool.Take(&a);
  ASSERT_NE(first, nullptr);
  Request r1(&a), r2(&a);
  pool.Wait(&r1.w);
  pool.Wait(&r2.w);
  pool.Add(Memory(1), 1);
  EXPECT_EQ(pool.Serve(), 1u);
  EXPECT_NE(r1.got, nullptr);
  EXPECT_EQ(r2.got, nullptr);  // the first in line had it
  pool.Give(&a, first);
  EXPECT_EQ(pool.Serve(), 1u);
  EXPECT_EQ(r2.got, first);
  EXPECT_EQ(pool.buffers(), 2u);
}

// A queue registered while others borrow everything: borrowers get nothing more until
// the newcomer's guaranteed buffer is free again.
TEST(BufferPoolTest, ANewQueueIsOwedItsBufferBeforeAnyoneBorrowsAgain) {
  BufferPool pool(kBytes);
  pool.Add(Memory(2), 2);
  BufferPool::Account a, late;
  pool.Register(&a);
  uint8_t* x = pool.Take(&a);
  uint8_t* y = pool.Take(&a);
  ASSERT_NE(y, nullptr);
  pool.Register(&late);
  pool.Give(&a, y);
  Request ra(&a);
  EXPECT_EQ(pool.Take(&a), nullptr);  // the free one is late's
  pool.Wait(&ra.w);
  EXPECT_EQ(pool.Serve(), 0u);
  uint8_t* l = pool.Take(&late);
  EXPECT_EQ(l, y);
  pool.Give(&late, l);
  pool.Give(&a, x);
  EXPECT_EQ(pool.Serve(), 1u);  // a holds none now: it is owed one itself
  EXPECT_NE(ra.got, nullptr);
}

}  // namespace
}  // namespace umpath::ublk
