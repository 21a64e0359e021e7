#include "agent/vfio/controller.h"

#include <linux/vfio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/nvme/status.h"
#include "agent/vfio/prp.h"

namespace umpath::vfio {

namespace {

constexpr uint32_t kPage = 4096;
// Admin command identifiers: synchronous commands count up below this; Asynchronous
// Event Requests use the ones above it, so their completions are recognised anywhere.
constexpr uint16_t kAerCidBase = 0xf000;
constexpr int kAdminTimeoutMs = 5000;

absl::Status DeviceGone(const std::string& bdf) {
  return absl::UnavailableError(absl::StrCat(bdf, " reads all ones: the device is gone"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<DmaBuffer>> DmaBuffer::Create(VfioContainer* c, uint64_t len) {
  len = (len + kPage - 1) & ~uint64_t{kPage - 1};
  const int fd = memfd_create("umpath-dma", MFD_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "memfd_create DMA buffer");
  if (ftruncate(fd, static_cast<off_t>(len)) != 0) {
    const int e = errno;
    close(fd);
    return absl::ErrnoToStatus(e, "ftruncate DMA buffer");
  }
  void* host = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (host == MAP_FAILED) {
    const int e = errno;
    close(fd);
    return absl::ErrnoToStatus(e, "mmap DMA buffer");
  }
  std::memset(host, 0, len);  // touched, so every page exists before it is pinned
  absl::StatusOr<uint64_t> iova = c->MapDma(host, len);
  if (!iova.ok()) {
    munmap(host, len);
    close(fd);
    return iova.status();
  }
  return std::unique_ptr<DmaBuffer>(new DmaBuffer(c, fd, host, *iova, len));
}

absl::StatusOr<std::unique_ptr<DmaBuffer>> DmaBuffer::Adopt(VfioContainer* c, int memfd, uint64_t iova,
                                                            uint64_t len) {
  struct stat st;
  if (fstat(memfd, &st) != 0 || static_cast<uint64_t>(st.st_size) < len) {
    close(memfd);
    return absl::InvalidArgumentError(absl::StrCat("the memory handed over for IOVA ", iova,
                                                   " is smaller than its mapping (", len, " B)"));
  }
  void* host = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (host == MAP_FAILED) {
    const int e = errno;
    close(memfd);
    return absl::ErrnoToStatus(e, "mmap handed-over DMA memory");
  }
  if (absl::Status s = c->AdoptMapping(host, iova, len); !s.ok()) {
    munmap(host, len);
    close(memfd);
    return s;
  }
  return std::unique_ptr<DmaBuffer>(new DmaBuffer(c, memfd, host, iova, len));
}

DmaBuffer::~DmaBuffer() {
  if (registry_) registry_->Remove(host_);
  if (!kept_) (void)container_->UnmapDma(iova_, len_);
  munmap(host_, len_);
  close(fd_);
}

absl::StatusOr<std::unique_ptr<VfioController>> VfioController::Open(VfioContainer* container,
                                                                    const std::string& bdf) {
  std::unique_ptr<VfioController> c(new VfioController());
  c->container_ = container;
  absl::StatusOr<std::unique_ptr<VfioDevice>> dev = VfioDevice::Open(container, bdf);
  if (!dev.ok()) return dev.status();
  c->device_ = std::move(*dev);
  c->bdf_ = c->device_->bdf();
  c->cap_ = regs::Cap{c->device_->Read64(regs::kCap)};
  if (c->cap_.raw == ~uint64_t{0}) return DeviceGone(bdf);
  if (!c->cap_.nvm_command_set() || c->cap_.mps_min() > kPage) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: CAP 0x%016x: no NVM command set or minimum page above 4 KiB", bdf, c->cap_.raw));
  }
  return c;
}

absl::Status VfioController::WaitReady(bool ready) {
  // CAP.TO bounds how long CSTS.RDY may take to follow CC.EN.
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(std::max<uint32_t>(cap_.timeout_ms(), 500));
  for (;;) {
    const uint32_t csts = device_->Read32(regs::kCsts);
    if (csts == regs::kCstsGone) return DeviceGone(device_->bdf());
    if (ready && (csts & regs::kCstsCfs)) {
      return absl::FailedPreconditionError(
          absl::StrCat(device_->bdf(), ": controller fatal status (CSTS.CFS) while enabling"));
    }
    if (((csts & regs::kCstsRdy) != 0) == ready) return absl::OkStatus();
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "%s: CSTS.RDY did not become %d within CAP.TO (%u ms)", device_->bdf(), ready,
          cap_.timeout_ms()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

absl::Status VfioController::Disable() {
  const uint32_t cc = device_->Read32(regs::kCc);
  if (cc == regs::kCstsGone) return DeviceGone(device_->bdf());
  device_->Write32(regs::kCc, cc & ~1u);
  return WaitReady(false);
}

absl::Status VfioController::Enable() {
  if (absl::Status s = Disable(); !s.ok()) return s;
  // A disabled controller has dropped every queue and every posted event request.
  aers_outstanding_ = 0;
  aers_to_repost_ = 0;
  next_cid_ = 0;
  const uint32_t stride = cap_.doorbell_stride();
  for (auto* buf : {&asq_, &acq_}) {
    absl::StatusOr<std::unique_ptr<DmaBuffer>> b = DmaBuffer::Create(container_, kPage);
    if (!b.ok()) return b.status();
    *buf = std::move(*b);
  }
  absl::StatusOr<std::unique_ptr<DmaBuffer>> data = DmaBuffer::Create(container_, kPage);
  if (!data.ok()) return data.status();
  data_ = std::move(*data);
  sq_ = std::make_unique<SubmissionRing>(static_cast<nvme::SubmissionEntry*>(asq_->host()),
                                         kAdminDepth,
                                         device_->Register32(regs::SqTailDoorbell(0, stride)));
  cq_ = std::make_unique<CompletionRing>(static_cast<nvme::CompletionEntry*>(acq_->host()),
                                         kAdminDepth,
                                         device_->Register32(regs::CqHeadDoorbell(0, stride)));
  device_->Write32(regs::kAqa, (kAdminDepth - 1u) << 16 | (kAdminDepth - 1u));
  device_->Write64(regs::kAsq, asq_->iova());
  device_->Write64(regs::kAcq, acq_->iova());
  device_->Write32(regs::kCc, regs::CcEnable(kPage));
  return WaitReady(true);
}

absl::StatusOr<nvme::CompletionEntry> VfioController::AdminCommand(nvme::SubmissionEntry sqe,
                                                                   int timeout_ms) {
  if (!sq_) return absl::FailedPreconditionError("the controller is not enabled");
  sqe.cid = next_cid_;
  next_cid_ = static_cast<uint16_t>((next_cid_ + 1) % kAerCidBase);
  if (!sq_->Push(sqe)) return absl::ResourceExhaustedError("admin queue full");
  sq_->Ring();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  nvme::CompletionEntry cqe;
  for (;;) {
    if (cq_->Peek(&cqe)) {
      cq_->Pop();
      cq_->Ring();
      sq_->SetHead(cqe.sq_head);
      if (cqe.cid != sqe.cid) {  // an AER, or a stale completion: not this command
        OnStrayAdminCompletion(cqe);
        continue;
      }
      const nvme::Status s = nvme::Status::FromCqe(cqe);
      if (!s.ok()) {
        return absl::InternalError(absl::StrFormat("admin opcode 0x%02x failed: %s", sqe.opcode,
                                                   nvme::StatusToString(s)));
      }
      return cqe;
    }
    if (device_->Read32(regs::kCsts) == regs::kCstsGone) return DeviceGone(device_->bdf());
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "admin opcode 0x%02x got no completion within %d ms", sqe.opcode, timeout_ms));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

AsyncEvent DecodeAsyncEvent(uint32_t dw0) {
  AsyncEvent e;
  e.type = static_cast<uint8_t>(dw0 & 0x7);
  e.info = static_cast<uint8_t>((dw0 >> 8) & 0xff);
  e.log_page = static_cast<uint8_t>((dw0 >> 16) & 0xff);
  return e;
}

void VfioController::ReleaseDevice() {
  if (!device_) return;
  if (handed_over_) {
    // The successor's now: only this process's descriptors and mappings go.
    device_.reset();
    return;
  }
  if (!vector_fds_.empty()) (void)device_->DisableIrqs(VFIO_PCI_MSIX_IRQ_INDEX);
  if (release_fd_ >= 0) (void)device_->DisableIrqs(VFIO_PCI_REQ_IRQ_INDEX);
  device_.reset();  // unmaps BAR0, closes the device and its group
}

VfioController::~VfioController() {
  ReleaseDevice();
  for (int fd : vector_fds_) {
    if (fd >= 0) close(fd);
  }
  if (release_fd_ >= 0) close(release_fd_);
}

void VfioController::OnStrayAdminCompletion(const nvme::CompletionEntry& cqe) {
  if (cqe.cid < kAerCidBase) return;  // a command we gave up on: nothing waits for it
  --aers_outstanding_;
  const nvme::Status s = nvme::Status::FromCqe(cqe);
  if (!s.ok()) {
    // Aborted by a reset (SQ deletion) or refused (AER limit exceeded): not an event,
    // and not re-posted.
    return;
  }
  ++aers_to_repost_;
  events_.push_back(DecodeAsyncEvent(cqe.dw0));
}

std::vector<AsyncEvent> VfioController::TakeAsyncEvents() {
  if (sq_) {
    nvme::CompletionEntry cqe;
    while (cq_->Peek(&cqe)) {
      cq_->Pop();
      sq_->SetHead(cqe.sq_head);
      OnStrayAdminCompletion(cqe);
    }
    cq_->Ring();
  }
  if (aers_to_repost_ > 0) {
    const int n = aers_to_repost_;
    aers_to_repost_ = 0;
    (void)PostAsyncEventRequests(n);
  }
  std::vector<AsyncEvent> out;
  out.swap(events_);
  return out;
}

absl::Status VfioController::PostAsyncEventRequests(int count) {
  if (!sq_) return absl::FailedPreconditionError("the controller is not enabled");
  for (int i = 0; i < count; ++i) {
    nvme::SubmissionEntry sqe;
    sqe.opcode = static_cast<uint8_t>(nvme::AdminOpcode::kAsyncEventRequest);
    sqe.cid = static_cast<uint16_t>(kAerCidBase + (aer_seq_++ % 0x0fff));
    if (!sq_->Push(sqe)) return absl::ResourceExhaustedError("admin queue full");
    ++aers_outstanding_;
  }
  sq_->Ring();
  return absl::OkStatus();
}

absl::Status VfioController::ConfigureAsyncEvents(bool ana_change) {
  nvme::SubmissionEntry sqe;
  sqe.opcode = static_cast<uint8_t>(nvme::AdminOpcode::kSetFeatures);
  sqe.cdw10 = 0x0b;  // Asynchronous Event Configuration
  // Namespace attribute notices (bit 8); ANA change notices (bit 11) where supported.
  sqe.cdw11 = (1u << 8) | (ana_change ? 1u << 11 : 0);
  absl::StatusOr<nvme::CompletionEntry> done = AdminCommand(sqe, kAdminTimeoutMs);
  return done.ok() ? absl::OkStatus() : done.status();
}

absl::StatusOr<std::vector<uint8_t>> VfioController::GetLogPage(uint8_t lid, uint32_t len,
                                                                bool rae) {
  if (len == 0 || len > kMaxLogBytes || len % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("log length ", len, " (4..", kMaxLogBytes, ", dwords)"));
  }
  // The data pages, then (past two pages) one page of PRP entries for pages 2..n: 1 MiB
  // is 256 pages, well within the 512 entries of a list page.
  const uint64_t data_bytes = (uint64_t{len} + kPage - 1) / kPage * kPage;
  const uint32_t list_pages = PrpListPagesNeeded(0, len, kPage);
  const uint64_t need = std::max<uint64_t>(2 * kPage, data_bytes + uint64_t{list_pages} * kPage);
  if (!log_ || log_->size() < need) {
    absl::StatusOr<std::unique_ptr<DmaBuffer>> b = DmaBuffer::Create(container_, need);
    if (!b.ok()) return b.status();
    log_ = std::move(*b);
  }
  auto* host = static_cast<uint8_t*>(log_->host());
  std::memset(host, 0, log_->size());
  const PrpListPage list{log_->iova() + data_bytes, reinterpret_cast<uint64_t*>(host + data_bytes)};
  const Prps prps = BuildPrps(log_->iova(), len, kPage, &list, list_pages);
  if (prps.error != PrpError::kNone) {
    return absl::InternalError(absl::StrCat("log length ", len, ": no PRPs for it"));
  }
  nvme::SubmissionEntry sqe;
  sqe.opcode = static_cast<uint8_t>(nvme::AdminOpcode::kGetLogPage);
  sqe.nsid = 0xffffffff;
  sqe.prp1 = prps.prp1;
  sqe.prp2 = prps.prp2;
  const uint32_t numd = len / 4 - 1;
  sqe.cdw10 = lid | (rae ? 1u << 15 : 0) | (numd & 0xffff) << 16;
  sqe.cdw11 = numd >> 16;
  absl::StatusOr<nvme::CompletionEntry> done = AdminCommand(sqe, kAdminTimeoutMs);
  if (!done.ok()) return done.status();
  return std::vector<uint8_t>(host, host + len);
}

absl::StatusOr<uint16_t> VfioController::SetNumberOfQueues(uint16_t wanted) {
  if (wanted == 0) return absl::InvalidArgumentError("no I/O queues asked for");
  nvme::SubmissionEntry sqe;
  sqe.opcode = static_cast<uint8_t>(nvme::AdminOpcode::kSetFeatures);
  sqe.cdw10 = 0x07;
  sqe.cdw11 = (uint32_t{wanted} - 1) << 16 | (uint32_t{wanted} - 1);
  absl::StatusOr<nvme::CompletionEntry> done = AdminCommand(sqe, kAdminTimeoutMs);
  if (!done.ok()) return done.status();
  const uint32_t nsq = (done->dw0 & 0xffff) + 1, ncq = (done->dw0 >> 16) + 1;
  return static_cast<uint16_t>(std::min(nsq, ncq));
}

absl::Status VfioController::EnableInterrupts(uint16_t io_queues) {
  if (!vector_fds_.empty()) return absl::OkStatus();  // kept across controller resets
  const uint32_t available = device_->IrqCount(VFIO_PCI_MSIX_IRQ_INDEX);
  if (available == 0) {
    return absl::FailedPreconditionError(absl::StrCat(bdf(), " offers no MSI-X vectors"));
  }
  const uint32_t n = std::min<uint32_t>(available, uint32_t{io_queues} + 1);
  std::vector<int> fds;
  for (uint32_t i = 0; i < n; ++i) {
    const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) {
      for (int f : fds) close(f);
      return absl::ErrnoToStatus(errno, "eventfd");
    }
    fds.push_back(fd);
  }
  if (absl::Status s = device_->SetIrqEventfds(VFIO_PCI_MSIX_IRQ_INDEX, fds); !s.ok()) {
    for (int f : fds) close(f);
    return s;
  }
  vector_fds_ = std::move(fds);
  return absl::OkStatus();
}

int VfioController::vector_fd(uint16_t vector) const {
  return vector < vector_fds_.size() ? vector_fds_[vector] : -1;
}

absl::StatusOr<int> VfioController::EnableReleaseRequest() {
  if (release_fd_ >= 0) return release_fd_;
  if (device_->IrqCount(VFIO_PCI_REQ_IRQ_INDEX) == 0) {
    return absl::UnimplementedError("the kernel offers no vfio release request for this device");
  }
  const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "eventfd");
  if (absl::Status s = device_->SetIrqEventfds(VFIO_PCI_REQ_IRQ_INDEX, {fd}); !s.ok()) {
    close(fd);
    return s;
  }
  release_fd_ = fd;
  return fd;
}

absl::Status VfioController::CreateQueuesOnDevice(uint16_t qid, uint16_t depth, uint64_t sq_iova,
                                                  uint64_t cq_iova, int vector) {
  nvme::SubmissionEntry cq;
  cq.opcode = static_cast<uint8_t>(nvme::AdminOpcode::kCreateIoCq);
  cq.prp1 = cq_iova;
  cq.cdw10 = (uint32_t{depth} - 1) << 16 | qid;
  // Physically contiguous (PC); interrupts enabled (IEN) on `vector` when it has one.
  cq.cdw11 = 1u | (vector >= 0 ? 2u | uint32_t(vector) << 16 : 0u);
  absl::StatusOr<nvme::CompletionEntry> done = AdminCommand(cq, kAdminTimeoutMs);
  if (!done.ok()) return done.status();
  nvme::SubmissionEntry sq;
  sq.opcode = static_cast<uint8_t>(nvme::AdminOpcode::kCreateIoSq);
  sq.prp1 = sq_iova;
  sq.cdw10 = (uint32_t{depth} - 1) << 16 | qid;
  sq.cdw11 = 1u | uint32_t{qid} << 16;  // PC, completions to CQ `qid`
  done = AdminCommand(sq, kAdminTimeoutMs);
  return done.ok() ? absl::OkStatus() : done.status();
}

// Where a queue's rings and PRP lists sit in its one buffer: the submission ring, then the completion
// ring, each page-aligned, then one run of list pages per command slot.
VfioController::QueueLayout VfioController::LayoutFor(IoQueueOptions& options, uint16_t depth) {
  options.depth = depth;
  options.page_size = kPage;
  options.list_pages_per_command = ListPagesPerCommand(options.max_transfer, kPage);
  QueueLayout l;
  l.sq_bytes = (uint64_t{depth} * sizeof(nvme::SubmissionEntry) + kPage - 1) & ~uint64_t{kPage - 1};
  l.cq_bytes = (uint64_t{depth} * sizeof(nvme::CompletionEntry) + kPage - 1) & ~uint64_t{kPage - 1};
  l.list_bytes = uint64_t{depth} * options.list_pages_per_command * kPage;
  return l;
}

// Makes the queue pair over `q`'s memory laid out as `l`, keeps it, and returns it.
VfioQueuePair* VfioController::Wire(std::unique_ptr<IoQueue> q, const QueueLayout& l, IoQueueOptions options) {
  auto* base = static_cast<uint8_t*>(q->memory->host());
  q->sq_iova = q->memory->iova();
  q->cq_iova = q->memory->iova() + l.sq_bytes;
  const uint32_t stride = cap_.doorbell_stride();
  IoQueueMemory m;
  m.sq = reinterpret_cast<nvme::SubmissionEntry*>(base);
  m.cq = reinterpret_cast<nvme::CompletionEntry*>(base + l.sq_bytes);
  m.prp_lists = base + l.sq_bytes + l.cq_bytes;
  m.prp_lists_iova = q->memory->iova() + l.sq_bytes + l.cq_bytes;
  m.sq_doorbell = device_->Register32(regs::SqTailDoorbell(options.qid, stride));
  m.cq_doorbell = device_->Register32(regs::CqHeadDoorbell(options.qid, stride));
  q->qp = std::make_unique<VfioQueuePair>(std::move(options), m);
  VfioQueuePair* qp = q->qp.get();
  io_queues_.push_back(std::move(q));
  return qp;
}

absl::StatusOr<VfioQueuePair*> VfioController::CreateIoQueue(IoQueueOptions options) {
  if (!sq_) return absl::FailedPreconditionError("the controller is not enabled");
  const uint16_t depth = static_cast<uint16_t>(std::min<uint32_t>(options.depth, cap_.mqes()));
  if (depth < 2) return absl::InvalidArgumentError("queue depth below 2");
  const QueueLayout l = LayoutFor(options, depth);
  absl::StatusOr<std::unique_ptr<DmaBuffer>> mem = DmaBuffer::Create(container_, l.total());
  if (!mem.ok()) return mem.status();
  auto q = std::make_unique<IoQueue>();
  q->memory = std::move(*mem);
  q->depth = depth;
  q->vector = vector_fd(options.qid) >= 0 ? options.qid : -1;
  options.wake_fd = vector_fd(options.qid);
  if (absl::Status s = CreateQueuesOnDevice(options.qid, depth, q->memory->iova(), q->memory->iova() + l.sq_bytes,
                                            q->vector);
      !s.ok()) {
    return s;
  }
  return Wire(std::move(q), l, std::move(options));
}

absl::Status VfioController::RecreateIoQueues() {
  for (auto& q : io_queues_) {
    if (absl::Status s = CreateQueuesOnDevice(q->qp->qid(), q->depth, q->sq_iova, q->cq_iova,
                                              q->vector);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status VfioController::DeleteIoQueues(int timeout_ms) {
  absl::Status first;
  for (auto& q : io_queues_) {
    for (nvme::AdminOpcode op : {nvme::AdminOpcode::kDeleteIoSq, nvme::AdminOpcode::kDeleteIoCq}) {
      nvme::SubmissionEntry sqe;
      sqe.opcode = static_cast<uint8_t>(op);
      sqe.cdw10 = q->qp->qid();
      absl::StatusOr<nvme::CompletionEntry> done = AdminCommand(sqe, timeout_ms);
      if (!done.ok() && first.ok()) first = done.status();
      if (!done.ok() && done.status().code() != absl::StatusCode::kInternal) return first;
    }
  }
  return first;
}

absl::Status VfioController::ShutdownNotify(int timeout_ms) {
  const uint32_t cc = device_->Read32(regs::kCc);
  if (cc == regs::kCstsGone) return DeviceGone(device_->bdf());
  device_->Write32(regs::kCc, (cc & ~(3u << 14)) | 1u << 14);  // SHN = normal
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const uint32_t csts = device_->Read32(regs::kCsts);
    if (csts == regs::kCstsGone) return DeviceGone(device_->bdf());
    if (((csts >> 2) & 3) == 2) return absl::OkStatus();  // SHST: complete
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(bdf(), ": shutdown did not complete"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

absl::StatusOr<std::vector<uint8_t>> VfioController::Identify(uint8_t cns, uint32_t nsid) {
  std::memset(data_->host(), 0, kPage);
  nvme::SubmissionEntry sqe;
  sqe.opcode = static_cast<uint8_t>(nvme::AdminOpcode::kIdentify);
  sqe.nsid = nsid;
  sqe.prp1 = data_->iova();
  sqe.cdw10 = cns;
  absl::StatusOr<nvme::CompletionEntry> done = AdminCommand(sqe, 5000);
  if (!done.ok()) return done.status();
  const auto* p = static_cast<const uint8_t*>(data_->host());
  return std::vector<uint8_t>(p, p + kPage);
}

absl::StatusOr<nvme::ControllerIdentity> VfioController::IdentifyController() {
  absl::StatusOr<std::vector<uint8_t>> data = Identify(0x01, 0);
  if (!data.ok()) return data.status();
  return nvme::ParseIdentifyController(*data);
}

absl::StatusOr<std::vector<uint32_t>> VfioController::ActiveNamespaces() {
  absl::StatusOr<std::vector<uint8_t>> data = Identify(0x02, 0);
  if (!data.ok()) return data.status();
  std::vector<uint32_t> out;
  for (size_t i = 0; i + 4 <= data->size(); i += 4) {
    uint32_t nsid;
    std::memcpy(&nsid, data->data() + i, 4);
    if (nsid == 0) break;
    out.push_back(nsid);
  }
  return out;
}

absl::StatusOr<nvme::NamespaceIdentity> VfioController::IdentifyNamespace(uint32_t nsid) {
  absl::StatusOr<std::vector<uint8_t>> data = Identify(0x00, nsid);
  if (!data.ok()) return data.status();
  return nvme::ParseIdentifyNamespace(*data);
}

absl::StatusOr<nvme::NamespaceIds> VfioController::NamespaceIdDescriptors(uint32_t nsid) {
  absl::StatusOr<std::vector<uint8_t>> data = Identify(0x03, nsid);
  if (!data.ok()) return data.status();
  return nvme::ParseNamespaceIdDescriptors(*data);
}

handover::ControllerState VfioController::HandOver(handover::State* state, std::vector<int>* fds) {
  handover::ControllerState cs;
  cs.bdf = bdf_;
  auto pass = [&](DmaBuffer* b) -> int {
    if (b == nullptr) return -1;
    for (size_t i = 0; i < state->mappings.size(); ++i) {
      handover::MappingState& m = state->mappings[i];
      if (m.iova != b->iova()) continue;
      m.fd = static_cast<int>(fds->size());
      fds->push_back(b->fd());
      b->Keep();
      return static_cast<int>(i);
    }
    return -1;
  };
  cs.group_fd = static_cast<int>(fds->size());
  fds->push_back(device_->group_fd());
  cs.device_fd = static_cast<int>(fds->size());
  fds->push_back(device_->device_fd());
  cs.admin_sq = pass(asq_.get());
  cs.admin_cq = pass(acq_.get());
  cs.admin_data = pass(data_.get());
  cs.admin_log = pass(log_.get());
  cs.admin_depth = kAdminDepth;
  cs.admin = {sq_->tail(), cq_->head(), cq_->phase()};
  cs.next_cid = next_cid_;
  cs.aers = static_cast<uint16_t>(aers_outstanding_);
  cs.aer_seq = static_cast<uint16_t>(aer_seq_);
  for (const auto& q : io_queues_) {
    handover::QueueState qs;
    qs.qid = q->qp->qid();
    qs.depth = q->depth;
    qs.memory = pass(q->memory.get());
    qs.vector = q->vector;
    const VfioQueuePair::Positions p = q->qp->positions();
    qs.ring = {p.sq_tail, p.cq_head, p.cq_phase};
    cs.queues.push_back(qs);
  }
  handed_over_ = true;
  return cs;
}

absl::StatusOr<std::unique_ptr<VfioController>> VfioController::Adopt(
    VfioContainer* container, const handover::ControllerState& cs, std::vector<handover::UniqueFd>& fds,
    std::vector<std::unique_ptr<DmaBuffer>>& memory) {
  std::unique_ptr<VfioController> c(new VfioController());
  c->container_ = container;
  absl::StatusOr<std::unique_ptr<VfioDevice>> dev =
      VfioDevice::Adopt(container, cs.bdf, fds[cs.group_fd].release(), fds[cs.device_fd].release());
  if (!dev.ok()) return dev.status();
  c->device_ = std::move(*dev);
  c->bdf_ = cs.bdf;
  c->cap_ = regs::Cap{c->device_->Read64(regs::kCap)};
  if (c->cap_.raw == ~uint64_t{0}) return DeviceGone(cs.bdf);
  // It must be running as it was left: enabled, not failed.
  const uint32_t csts = c->device_->Read32(regs::kCsts);
  if (!(csts & regs::kCstsRdy) || (csts & regs::kCstsCfs)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: handed over not ready or failed (CSTS 0x%08x)", cs.bdf, csts));
  }
  if (cs.admin_depth != kAdminDepth) {
    return absl::FailedPreconditionError(absl::StrCat(cs.bdf, ": admin queue of ", cs.admin_depth,
                                                      " entries, this agent's has ", kAdminDepth));
  }
  auto take = [&](int i, uint64_t least) -> absl::StatusOr<std::unique_ptr<DmaBuffer>> {
    if (i < 0) return std::unique_ptr<DmaBuffer>();
    if (!memory[i] || memory[i]->size() < least) {
      return absl::InvalidArgumentError(absl::StrCat(cs.bdf, ": handed-over memory ", i, " missing or too small"));
    }
    return std::move(memory[i]);
  };
  for (auto [idx, buf, least] : {std::tuple{cs.admin_sq, &c->asq_, uint64_t{kPage}},
                                 {cs.admin_cq, &c->acq_, uint64_t{kPage}},
                                 {cs.admin_data, &c->data_, uint64_t{kPage}},
                                 {cs.admin_log, &c->log_, uint64_t{2 * kPage}}}) {
    absl::StatusOr<std::unique_ptr<DmaBuffer>> b = take(idx, least);
    if (!b.ok()) return b.status();
    *buf = std::move(*b);
  }
  if (!c->asq_ || !c->acq_ || !c->data_) {
    return absl::InvalidArgumentError(absl::StrCat(cs.bdf, ": handed over without its admin queue"));
  }
  // The registers must name the memory that came: the queues are the predecessor's.
  if (c->device_->Read64(regs::kAsq) != c->asq_->iova() || c->device_->Read64(regs::kAcq) != c->acq_->iova()) {
    return absl::FailedPreconditionError(absl::StrCat(cs.bdf, ": the admin queue registers do not name the memory handed over"));
  }
  const uint32_t stride = c->cap_.doorbell_stride();
  c->sq_ = std::make_unique<SubmissionRing>(static_cast<nvme::SubmissionEntry*>(c->asq_->host()), kAdminDepth,
                                            c->device_->Register32(regs::SqTailDoorbell(0, stride)));
  c->cq_ = std::make_unique<CompletionRing>(static_cast<nvme::CompletionEntry*>(c->acq_->host()), kAdminDepth,
                                            c->device_->Register32(regs::CqHeadDoorbell(0, stride)));
  c->sq_->Restore(cs.admin.sq_tail);
  c->cq_->Restore(cs.admin.cq_head, cs.admin.cq_phase);
  c->next_cid_ = static_cast<uint16_t>(cs.next_cid % kAerCidBase);
  c->aers_outstanding_ = cs.aers;
  c->aer_seq_ = cs.aer_seq;
  return c;
}

absl::StatusOr<VfioQueuePair*> VfioController::AdoptIoQueue(IoQueueOptions options, const handover::QueueState& qs,
                                                            std::unique_ptr<DmaBuffer> memory) {
  if (qs.qid != options.qid) return absl::InvalidArgumentError(absl::StrCat("queue ", qs.qid, " is not ", options.qid));
  const uint16_t depth = qs.depth;
  if (depth > cap_.mqes() || depth > options.depth) {
    return absl::FailedPreconditionError(absl::StrCat(bdf_, ": handed-over queue ", qs.qid, " of ", depth,
                                                      " entries does not fit this agent's ", options.depth));
  }
  const QueueLayout l = LayoutFor(options, depth);
  if (!memory || memory->size() < l.total()) {
    return absl::InvalidArgumentError(absl::StrCat(bdf_, ": handed-over queue ", qs.qid, " has too little memory"));
  }
  auto q = std::make_unique<IoQueue>();
  q->memory = std::move(memory);
  q->depth = depth;
  q->vector = qs.vector >= 0 && vector_fd(static_cast<uint16_t>(qs.vector)) >= 0 ? qs.vector : -1;
  options.wake_fd = q->vector >= 0 ? vector_fd(static_cast<uint16_t>(q->vector)) : -1;
  VfioQueuePair* qp = Wire(std::move(q), l, std::move(options));
  qp->RestorePositions({qs.ring.sq_tail, qs.ring.cq_head, qs.ring.cq_phase});
  return qp;
}

}  // namespace umpath::vfio
