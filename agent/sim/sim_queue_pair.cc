#include "agent/sim/sim_queue_pair.h"

#include <sys/mman.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/nvme/io_command.h"

namespace umpath::sim {

namespace sc = nvme::status_code;

absl::StatusOr<std::shared_ptr<SimMedia>> SimMedia::Create(uint32_t namespaces, uint64_t size_blocks,
                                                           uint32_t block_size, bool memory) {
  std::shared_ptr<SimMedia> m(new SimMedia());
  m->bytes_each_ = memory ? size_blocks * block_size : 0;
  for (uint32_t i = 0; i < namespaces; ++i) {
    SimNamespace ns{.nsid = i + 1, .size_blocks = size_blocks, .block_size = block_size};
    if (memory) {
      // Untouched pages read as zeros and cost nothing: a namespace holds what was written.
      void* p = mmap(nullptr, m->bytes_each_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) {
        return absl::ErrnoToStatus(errno, absl::StrCat("mmap of ", m->bytes_each_, " B for namespace ", i + 1));
      }
      ns.data = static_cast<uint8_t*>(p);
    }
    m->namespaces_.push_back(ns);
  }
  return m;
}

SimMedia::~SimMedia() {
  for (const SimNamespace& ns : namespaces_) {
    if (ns.data != nullptr) munmap(ns.data, bytes_each_);
  }
}

absl::StatusOr<std::unique_ptr<SimQueuePair>> SimQueuePair::Create(SimQueueOptions options) {
  if (options.depth < 2 || options.depth > 65536) return absl::InvalidArgumentError("depth must be 2..65536");
  if (!options.media || !options.faults || !options.link) {
    return absl::InvalidArgumentError("a simulated queue pair needs its media, faults and link");
  }
  int fd = -1;
  if (options.wake_timer) {
    fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0) return absl::ErrnoToStatus(errno, "timerfd_create");
  }
  return std::unique_ptr<SimQueuePair>(new SimQueuePair(std::move(options), fd));
}

SimQueuePair::SimQueuePair(SimQueueOptions options, int timer_fd)
    : options_(std::move(options)), timer_fd_(timer_fd), slots_(options_.depth) {}

SimQueuePair::~SimQueuePair() {
  if (timer_fd_ >= 0) close(timer_fd_);
}

SubmitResult SimQueuePair::Submit(IoRequest* req) {
  if (options_.link->gone.load(std::memory_order_relaxed)) return SubmitResult::kGone;
  if (count_ == slots_.size()) return SubmitResult::kBusy;
  Slot& s = slots_[(head_ + count_) % slots_.size()];
  s.req = req;
  SimFaults& f = *options_.faults;
  nvme::IoCommandWords words;
  nvme::Status status = nvme::EncodeIo(IoCommandOf(*req), options_.max_transfer, &words);
  const uint16_t injected = f.error_status.load(std::memory_order_relaxed);
  if (status.ok() && injected != 0) {
    const uint32_t only = f.error_nsid.load(std::memory_order_relaxed);
    int64_t left = f.errors_left.load(std::memory_order_relaxed);
    // Counted down without a lock: concurrent workers take one each.
    while ((only == 0 || only == req->nsid) && left != 0) {
      if (left < 0 || f.errors_left.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) {
        status = nvme::Status::FromCompletionField(injected);
        f.errors_injected.fetch_add(1, std::memory_order_relaxed);
        break;
      }
    }
  }
  s.status = status.ToCompletionField();
  s.stuck = f.stuck.load(std::memory_order_relaxed);
  const int64_t latency = f.latency_ns.load(std::memory_order_relaxed);
  const int64_t now = latency > 0 || s.stuck ? options_.clock->MonotonicNanos() : 0;
  s.submitted = now;
  s.due = latency > 0 ? now + latency : 0;
  ++count_;
  return SubmitResult::kOk;
}

void SimQueuePair::Ring() {
  if (count_ > 0 && !Head().stuck) ArmTimer(Head().due);
}

nvme::Status SimQueuePair::Execute(const IoRequest& req, nvme::Status decided) const {
  if (!decided.ok()) return decided;
  const SimNamespace* ns = options_.media->Find(req.nsid);
  if (ns == nullptr) return nvme::Status::Make(sc::kInvalidNamespace, /*dnr=*/true);
  using Op = nvme::IoOpcode;
  if (req.opcode == Op::kFlush) return {};
  if (req.opcode == Op::kDatasetManagement) {
    // Deallocated blocks read as zeros (DLFEAT's "read zeroes" behaviour).
    const auto* ranges = static_cast<const uint8_t*>(req.data);
    for (uint32_t i = 0; i < req.blocks; ++i) {
      uint32_t nlb;
      uint64_t slba;
      std::memcpy(&nlb, ranges + 16 * i + 4, sizeof nlb);
      std::memcpy(&slba, ranges + 16 * i + 8, sizeof slba);
      if (slba >= ns->size_blocks || nlb > ns->size_blocks - slba) {
        return nvme::Status::Make(sc::kLbaOutOfRange, /*dnr=*/true);
      }
      if (ns->data != nullptr) std::memset(ns->data + slba * ns->block_size, 0, uint64_t{nlb} * ns->block_size);
    }
    return {};
  }
  if (req.slba >= ns->size_blocks || req.blocks > ns->size_blocks - req.slba) {
    return nvme::Status::Make(sc::kLbaOutOfRange, /*dnr=*/true);
  }
  const uint64_t bytes = uint64_t{req.blocks} * ns->block_size;
  uint8_t* at = ns->data != nullptr ? ns->data + req.slba * ns->block_size : nullptr;
  switch (req.opcode) {
    case Op::kRead:
      if (req.data_len < bytes) return nvme::Status::Make(sc::kInvalidField, /*dnr=*/true);
      if (at != nullptr) {
        std::memcpy(req.data, at, bytes);
      } else {
        std::memset(req.data, 0, bytes);
      }
      return {};
    case Op::kWrite:
      if (req.data_len < bytes) return nvme::Status::Make(sc::kInvalidField, /*dnr=*/true);
      if (at != nullptr) std::memcpy(at, req.data, bytes);
      return {};
    case Op::kWriteZeroes:
      if (at != nullptr) std::memset(at, 0, bytes);
      return {};
    default:
      return nvme::Status::Make(sc::kInvalidOpcode, /*dnr=*/true);
  }
}

uint32_t SimQueuePair::Poll(CompletionSink& sink, uint32_t max) {
  if (count_ == 0 && armed_at_ == 0) return 0;
  int64_t now = 0;  // read once, when first needed
  auto Now = [&] { return now != 0 ? now : (now = options_.clock->MonotonicNanos()); };
  const bool stuck = options_.faults->stuck.load(std::memory_order_relaxed);
  uint32_t n = 0;
  while (count_ > 0 && n < max) {
    Slot& s = Head();
    if (s.stuck && stuck) {
      if (!timed_out_.load(std::memory_order_relaxed) && Now() - s.submitted > options_.timeout_ns) {
        timed_out_.store(true, std::memory_order_relaxed);
        if (options_.on_timeout) options_.on_timeout();
      }
      break;
    }
    // A stuck command whose fault was cleared completes at once.
    if (!s.stuck && s.due != 0 && s.due > Now()) break;
    IoRequest* req = s.req;
    const nvme::Status status = Execute(*req, nvme::Status::FromCompletionField(s.status));
    s.req = nullptr;
    head_ = (head_ + 1) % slots_.size();
    --count_;
    ++n;
    sink.OnCompletion(req, status);
  }
  // The timer fired (or nothing is left to wait for): reset it, then arm it for the next.
  if (armed_at_ != 0 && (count_ == 0 || armed_at_ <= Now())) DisarmTimer(armed_at_ <= Now());
  if (count_ > 0 && !(Head().stuck && stuck)) ArmTimer(Head().due);
  return n;
}

void SimQueuePair::AbortAll(CompletionSink& sink) {
  const nvme::Status aborted = nvme::Status::Make(sc::kHostAbortedCommand);
  while (count_ > 0) {
    IoRequest* req = Head().req;
    Head().req = nullptr;
    head_ = (head_ + 1) % slots_.size();
    --count_;
    sink.OnCompletion(req, aborted);
  }
  head_ = 0;
  DisarmTimer(/*fired=*/false);
  timed_out_.store(false, std::memory_order_relaxed);
}

void SimQueuePair::ArmTimer(int64_t at) {
  if (timer_fd_ < 0) return;
  if (at <= 0) at = 1;  // at once: an absolute time long past
  if (armed_at_ != 0 && armed_at_ <= at) return;
  itimerspec its{};
  its.it_value.tv_sec = at / 1'000'000'000;
  its.it_value.tv_nsec = at % 1'000'000'000;
  if (timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &its, nullptr) == 0) armed_at_ = at;
}

void SimQueuePair::DisarmTimer(bool fired) {
  if (timer_fd_ < 0 || armed_at_ == 0) return;
  if (!fired) {
    itimerspec its{};
    timerfd_settime(timer_fd_, 0, &its, nullptr);
  }
  uint64_t expirations;
  [[maybe_unused]] ssize_t r = read(timer_fd_, &expirations, sizeof expirations);
  armed_at_ = 0;
}

}  // namespace umpath::sim
