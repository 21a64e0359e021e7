#include "agent/perf/workload.h"

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/base/status_macros.h"

namespace umpath::perf {

absl::StatusOr<Pattern> ParsePattern(absl::string_view name) {
  if (name == "read") return Pattern::kRead;
  if (name == "write") return Pattern::kWrite;
  if (name == "randread") return Pattern::kRandRead;
  if (name == "randwrite") return Pattern::kRandWrite;
  if (name == "verify") return Pattern::kVerify;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown workload \"", name, "\": read, write, randread, randwrite or verify"));
}

int LatencyHistogram::Bucket(uint64_t ns) {
  if (ns < kSub) return static_cast<int>(ns);
  const int e = 63 - __builtin_clzll(ns);  // >= 4
  const int m = static_cast<int>((ns >> (e - 4)) & (kSub - 1));
  return (e - 3) * kSub + m;
}

uint64_t LatencyHistogram::BucketUpper(int b) {
  if (b < kSub) return static_cast<uint64_t>(b);
  const int e = b / kSub + 3, m = b % kSub;
  return ((uint64_t{kSub} + m + 1) << (e - 4)) - 1;
}

void LatencyHistogram::Add(uint64_t ns) {
  ++buckets_[Bucket(ns)];
  ++count_;
  if (ns > max_) max_ = ns;
}

void LatencyHistogram::Merge(const LatencyHistogram& o) {
  for (int i = 0; i < kBuckets; ++i) buckets_[i] += o.buckets_[i];
  count_ += o.count_;
  if (o.max_ > max_) max_ = o.max_;
}

uint64_t LatencyHistogram::Percentile(double p) const {
  if (count_ == 0) return 0;
  const uint64_t rank = static_cast<uint64_t>(p / 100.0 * static_cast<double>(count_ - 1)) + 1;
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += buckets_[i];
    if (seen >= rank) return std::min(BucketUpper(i), max_);
  }
  return max_;
}

std::string WorkloadResult::ToString() const {
  std::string s = absl::StrFormat(
      "head=%s seconds=%.2f ios=%u iops=%.0f mbps=%.1f p50_us=%.1f p99_us=%.1f max_us=%.1f "
      "errors=%u mismatches=%u",
      head, seconds, ios, iops(), mbps(), p50_ns / 1e3, p99_ns / 1e3, max_ns / 1e3, errors,
      mismatches);
  if (flushes + zeroes > 0) absl::StrAppend(&s, " flushes=", flushes, " write_zeroes=", zeroes);
  if (heads > 1) absl::StrAppend(&s, " heads=", heads);
  absl::StrAppend(&s, absl::StrFormat(" cpu_ns_per_io=%.0f", cpu_ns_per_io));
  if (!first_error.empty()) absl::StrAppend(&s, " first_error=\"", first_error, "\"");
  return s;
}

namespace {

// Verify: every 16th write of a slot is a Write Zeroes, every 8th is followed by a Flush.
constexpr uint64_t kZeroesEvery = 16;
constexpr uint64_t kFlushEvery = 8;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct ThreadState;

struct Slot {
  IoRequest req;
  ThreadState* t = nullptr;
  uint8_t* wbuf = nullptr;
  uint8_t* rbuf = nullptr;
  uint64_t stripe_start = 0, stripe_blocks = 0;
  uint64_t seq = 0;
  int64_t started = 0;
  // Verify goes write (or write zeroes) -> [flush] -> read back -> compare; kFresh
  // means the slot needs a new command, the others that the next one is set up.
  enum Step : uint8_t { kFresh, kFlushNext, kReadNext } step = kFresh;
  uint64_t verify_lba = 0;
};

struct ThreadState {
  Worker* worker = nullptr;
  std::vector<Channel*> channels;  // one per head of the run (null: not on this worker now)
  size_t next_channel = 0;
  int64_t cpu_ns = 0;  // the thread's CPU time during the run
  std::vector<Slot> slots;
  std::vector<Slot*> ready;
  uint32_t in_flight = 0;
  uint64_t rng = 0;
  Pattern pattern = Pattern::kRandRead;
  uint32_t blocks_per_io = 0;
  uint32_t bytes_per_io = 0;
  uint64_t seq_next = 0;  // sequential patterns: next LBA within the stripe
  uint64_t ios = 0, bytes = 0, errors = 0, mismatches = 0, flushes = 0, zeroes = 0;
  std::string first_error;
  LatencyHistogram latency;
};

uint64_t Next(uint64_t& x) {  // xorshift64*
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  return x * 2685821657736338717ull;
}

void FillPattern(uint8_t* p, uint32_t len, uint64_t lba, uint64_t seq) {
  for (uint32_t off = 0; off + 8 <= len; off += 8) {
    const uint64_t v = (lba + off / 512) * 0x9e3779b97f4a7c15ull ^ seq << 32 ^ off;
    std::memcpy(p + off, &v, 8);
  }
}

void OnDone(IoRequest* r, IoResult res);

void Prepare(Slot* s) {
  ThreadState* t = s->t;
  IoRequest& r = s->req;
  const uint64_t positions = s->stripe_blocks / t->blocks_per_io;
  uint64_t index;
  switch (t->pattern) {
    case Pattern::kRead:
    case Pattern::kWrite:
      index = s->seq++ % positions;
      break;
    default:
      index = Next(t->rng) % positions;
  }
  r = IoRequest{};
  r.slba = s->stripe_start + index * t->blocks_per_io;
  r.blocks = t->blocks_per_io;
  r.data_len = t->bytes_per_io;
  r.user = s;
  r.on_complete = OnDone;
  const bool write = t->pattern == Pattern::kWrite || t->pattern == Pattern::kRandWrite ||
                     t->pattern == Pattern::kVerify;
  r.opcode = write ? nvme::IoOpcode::kWrite : nvme::IoOpcode::kRead;
  r.data = write ? s->wbuf : s->rbuf;
  if (t->pattern == Pattern::kVerify) {
    ++s->seq;
    s->verify_lba = r.slba;
    if (s->seq % kZeroesEvery == 0) {
      // Write Zeroes: what must read back is zeros.
      r.opcode = nvme::IoOpcode::kWriteZeroes;
      r.data = nullptr;
      r.data_len = 0;
      std::memset(s->wbuf, 0, t->bytes_per_io);
    } else {
      FillPattern(s->wbuf, t->bytes_per_io, r.slba, s->seq);
    }
  }
  s->step = Slot::kFresh;
}

void OnDone(IoRequest* r, IoResult res) {
  auto* s = static_cast<Slot*>(r->user);
  ThreadState* t = s->t;
  --t->in_flight;
  t->latency.Add(static_cast<uint64_t>(NowNs() - s->started));
  if (!res.ok()) {
    ++t->errors;
    if (t->first_error.empty()) {
      const char* op = r->opcode == nvme::IoOpcode::kWrite         ? "write"
                       : r->opcode == nvme::IoOpcode::kRead        ? "read"
                       : r->opcode == nvme::IoOpcode::kFlush       ? "flush"
                                                                   : "write-zeroes";
      t->first_error = absl::StrFormat("%s lba %u: %s, nvme status 0x%03x", op, r->slba,
                                       IoErrorName(res.error), res.status.code());
    }
  } else {
    ++t->ios;
    t->bytes += r->data_len;
    if (t->pattern == Pattern::kVerify) {
      IoRequest& q = s->req;
      switch (q.opcode) {
        case nvme::IoOpcode::kWriteZeroes:
          ++t->zeroes;
          [[fallthrough]];
        case nvme::IoOpcode::kWrite:
          if (s->seq % kFlushEvery == 0) {
            q.opcode = nvme::IoOpcode::kFlush;
            q.data = nullptr;
            q.data_len = 0;
            s->step = Slot::kFlushNext;
            t->ready.push_back(s);
            return;
          }
          [[fallthrough]];
        case nvme::IoOpcode::kFlush:
          if (q.opcode == nvme::IoOpcode::kFlush) ++t->flushes;
          // Written (and maybe flushed): read it back into the other buffer.
          q.opcode = nvme::IoOpcode::kRead;
          q.slba = s->verify_lba;
          q.blocks = t->blocks_per_io;
          q.data = s->rbuf;
          q.data_len = t->bytes_per_io;
          std::memset(s->rbuf, 0xa5, t->bytes_per_io);
          s->step = Slot::kReadNext;
          t->ready.push_back(s);
          return;
        default:
          if (std::memcmp(s->wbuf, s->rbuf, t->bytes_per_io) != 0) ++t->mismatches;
      }
    }
  }
  s->step = Slot::kFresh;
  t->ready.push_back(s);
}

absl::Status CheckOptions(const std::vector<Worker*>& workers, const WorkloadOptions& o) {
  if (workers.empty()) return absl::InvalidArgumentError("no workers");
  if (o.queue_depth < 1 || o.queue_depth > 1024) {
    return absl::InvalidArgumentError("queue depth must be 1..1024");
  }
  if (o.block_size == 0 || o.block_size > (1u << 20)) {
    return absl::InvalidArgumentError("block size must be 1 B..1 MiB");
  }
  if (!(o.seconds > 0)) return absl::InvalidArgumentError("the run time must be positive");
  if (o.head == kEveryHead && o.pattern == Pattern::kVerify) {
    return absl::InvalidArgumentError("verify runs on one head; every head (\"*\") takes read or write patterns");
  }
  return absl::OkStatus();
}

// The head, once it has appeared; meanwhile the workers take their messages.
absl::StatusOr<HeadInfo> WaitForHead(Multipath* mp, const std::vector<Worker*>& workers,
                                     const WorkloadOptions& o) {
  std::atomic<bool> waiting{true};
  std::vector<std::thread> pumps;
  for (Worker* w : workers) {
    pumps.emplace_back([w, &waiting] {
      while (waiting.load()) {
        w->RunOnce();
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
  }
  absl::StatusOr<HeadInfo> head = absl::NotFoundError("no head");
  const int64_t give_up = NowNs() + static_cast<int64_t>(o.head_wait_seconds * 1e9);
  while (NowNs() < give_up) {
    if (o.head.empty() || o.head == kEveryHead) {
      std::vector<HeadInfo> heads = mp->ListHeads();
      if (!heads.empty()) head = heads.front();
    } else {
      head = mp->GetHead(o.head);
    }
    if (head.ok() && head->live_paths > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let every path's snapshot land
  waiting = false;
  for (auto& p : pumps) p.join();
  if (!head.ok()) {
    return absl::NotFoundError(absl::StrCat(
        o.head.empty() ? "no head appeared" : absl::StrCat("head ", o.head, " did not appear"),
        " within ", o.head_wait_seconds, " s"));
  }
  return head;
}

// Every slot has a stripe of the head to itself: what verify reads back, no other slot
// wrote.
struct Stripes {
  uint32_t blocks_per_io = 0;
  uint64_t count = 0;
  uint64_t blocks = 0;  // each, a whole number of I/Os
};

absl::StatusOr<Stripes> Layout(const HeadInfo& head, size_t workers,
                               const WorkloadOptions& o) {
  if (head.block_size == 0 || o.block_size % head.block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("block size ", o.block_size,
                                                   " is not a multiple of the head's ",
                                                   head.block_size));
  }
  Stripes st;
  st.blocks_per_io = o.block_size / head.block_size;
  st.count = uint64_t{workers} * o.queue_depth;
  st.blocks = head.size_blocks / st.count / st.blocks_per_io * st.blocks_per_io;
  if (st.blocks < st.blocks_per_io) {
    return absl::InvalidArgumentError("the head is too small for this queue depth and block size");
  }
  return st;
}

// `base` holds a write and a read buffer for every stripe.
std::vector<std::unique_ptr<ThreadState>> MakeThreadStates(
    const std::vector<Worker*>& workers, const WorkloadOptions& o, const Stripes& st,
    uint8_t* base) {
  std::vector<std::unique_ptr<ThreadState>> states;
  uint64_t stripe = 0;
  for (size_t i = 0; i < workers.size(); ++i) {
    auto t = std::make_unique<ThreadState>();
    t->worker = workers[i];
    t->pattern = o.pattern;
    t->blocks_per_io = st.blocks_per_io;
    t->bytes_per_io = o.block_size;
    t->rng = o.seed * 0x9e3779b97f4a7c15ull + i + 1;
    t->slots.resize(o.queue_depth);
    for (Slot& s : t->slots) {
      s.t = t.get();
      s.wbuf = base + stripe * 2 * o.block_size;
      s.rbuf = s.wbuf + o.block_size;
      s.stripe_start = stripe * st.blocks;
      s.stripe_blocks = st.blocks;
      ++stripe;
    }
    states.push_back(std::move(t));
  }
  return states;
}

int64_t ThreadCpuNs() {
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ll +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ll;
}

// One worker's thread: submits until `end` (or `stop`), then polls until nothing of its
// own is in flight. Each I/O goes to the next of `heads` in turn.
void RunThread(ThreadState* t, const std::vector<uint64_t>* heads, int64_t end,
               const std::atomic<bool>* stop) {
  const int64_t cpu0 = ThreadCpuNs();
  Worker* w = t->worker;
  t->ready.reserve(t->slots.size());
  t->channels.resize(heads->size());
  std::vector<Slot*> batch;
  batch.reserve(t->slots.size());
  for (Slot& s : t->slots) t->ready.push_back(&s);
  bool submitting = true;
  uint32_t loops = 0;
  for (;;) {
    if (submitting && (++loops & 63) == 0 &&
        (NowNs() >= end || (stop && stop->load(std::memory_order_relaxed)))) {
      submitting = false;
    }
    // Looked up every round (every 64th with many heads): a head that is removed takes
    // its channel with it.
    if (heads->size() == 1 || (loops & 63) == 1) {
      for (size_t i = 0; i < heads->size(); ++i) t->channels[i] = w->FindChannel((*heads)[i]);
    }
    if (submitting) {
      // A request can complete inside Submit (no path, head gone): it lands in
      // `ready` for the next round, not this one.
      batch.swap(t->ready);
      for (Slot* s : batch) {
        Channel* c = t->channels[t->next_channel];
        if (++t->next_channel == t->channels.size()) t->next_channel = 0;
        if (c == nullptr) {
          t->ready.push_back(s);
          continue;
        }
        if (s->step == Slot::kFresh) Prepare(s);
        s->started = NowNs();
        ++t->in_flight;
        c->Submit(&s->req);
      }
      batch.clear();
      w->Flush();
    }
    if (!submitting && t->in_flight == 0) break;
    w->RunOnce();
  }
  t->cpu_ns = ThreadCpuNs() - cpu0;
}

WorkloadResult Total(const std::vector<std::unique_ptr<ThreadState>>& states) {
  WorkloadResult r;
  LatencyHistogram all;
  for (auto& t : states) {
    r.ios += t->ios;
    r.bytes += t->bytes;
    r.errors += t->errors;
    r.mismatches += t->mismatches;
    r.flushes += t->flushes;
    r.zeroes += t->zeroes;
    if (r.first_error.empty()) r.first_error = t->first_error;
    all.Merge(t->latency);
  }
  r.p50_ns = all.Percentile(50);
  r.p99_ns = all.Percentile(99);
  r.max_ns = all.max();
  return r;
}

// What each path's counters grew by from `before` to `after` (never below zero).
std::vector<PathResult> PathDeltas(const HeadInfo& before, const HeadInfo& after) {
  std::vector<PathResult> paths;
  for (const PathInfo& p : after.paths) {
    PathResult pr;
    pr.name = p.name;
    pr.completed = p.counters.completed;
    pr.bytes = p.counters.bytes;
    pr.errors = p.counters.errors;
    pr.failovers = p.counters.failovers;
    for (const PathInfo& b : before.paths) {
      if (b.name == p.name) {
        pr.completed -= std::min(pr.completed, b.counters.completed);
        pr.bytes -= std::min(pr.bytes, b.counters.bytes);
        pr.errors -= std::min(pr.errors, b.counters.errors);
        pr.failovers -= std::min(pr.failovers, b.counters.failovers);
      }
    }
    paths.push_back(pr);
  }
  return paths;
}

}  // namespace

absl::StatusOr<WorkloadResult> RunWorkload(Multipath* mp, const std::vector<Worker*>& workers,
                                           const IoMemoryAllocator& alloc,
                                           const WorkloadOptions& o) {
  RETURN_IF_ERROR(CheckOptions(workers, o));
  ASSIGN_OR_RETURN(const HeadInfo head, WaitForHead(mp, workers, o));
  ASSIGN_OR_RETURN(const Stripes stripes, Layout(head, workers.size(), o));
  absl::StatusOr<IoMemory> mem = alloc(stripes.count * 2 * o.block_size);
  if (!mem.ok()) return mem.status();
  std::vector<std::unique_ptr<ThreadState>> states =
      MakeThreadStates(workers, o, stripes, static_cast<uint8_t*>(mem->host));

  std::vector<uint64_t> heads = {head.uid};
  if (o.head == kEveryHead) {
    heads.clear();
    for (const HeadInfo& h : mp->ListHeads()) {
      if (h.live_paths == 0) continue;
      if (h.size_blocks != head.size_blocks || h.block_size != head.block_size) {
        return absl::FailedPreconditionError(absl::StrCat(
            "every head (\"*\") needs heads of one size; ", h.name, " differs from ", head.name));
      }
      heads.push_back(h.uid);
    }
  }

  const int64_t start = NowNs();
  const int64_t end = start + static_cast<int64_t>(o.seconds * 1e9);
  std::vector<std::thread> threads;
  for (auto& t : states) threads.emplace_back(RunThread, t.get(), &heads, end, o.stop);
  for (auto& th : threads) th.join();
  const int64_t stop = NowNs();

  WorkloadResult r = Total(states);
  r.seconds = static_cast<double>(stop - start) / 1e9;
  r.heads = static_cast<uint32_t>(heads.size());
  int64_t cpu = 0;
  for (auto& t : states) cpu += t->cpu_ns;
  r.cpu_ns_per_io = r.ios > 0 ? static_cast<double>(cpu) / static_cast<double>(r.ios) : 0;
  if (o.head == kEveryHead) {
    r.head = std::string(kEveryHead);
    return r;
  }
  r.head = head.name;
  if (absl::StatusOr<HeadInfo> after = mp->GetHead(head.name); after.ok()) {
    r.paths = PathDeltas(head, *after);
  }
  return r;
}

}  // namespace umpath::perf
