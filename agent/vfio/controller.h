#pragma once

// Controller bring-up over vfio (NVMe Base 2.0, 3.5.1 "Memory-based Controller
// Initialization"): disable, admin queue, enable, then admin commands by polling.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/handover/channel.h"
#include "agent/handover/state.h"
#include "agent/nvme/identify.h"
#include "agent/vfio/dma_registry.h"
#include "agent/vfio/io_queue.h"
#include "agent/vfio/queue.h"
#include "agent/vfio/regs.h"
#include "agent/vfio/vfio_device.h"

namespace umpath::vfio {

// Page-aligned memory mapped for DMA; unmapped and freed on destruction. The memory is
// a memfd's, so that a successor can be handed it (issue 16 item 3).
class DmaBuffer {
 public:
  static absl::StatusOr<std::unique_ptr<DmaBuffer>> Create(VfioContainer* c, uint64_t len);
  // The memory of a mapping a predecessor made at `iova` (its memfd, owned from now on),
  // mapped here; the container keeps the mapping as it is.
  static absl::StatusOr<std::unique_ptr<DmaBuffer>> Adopt(VfioContainer* c, int memfd, uint64_t iova,
                                                          uint64_t len);
  ~DmaBuffer();
  void* host() const { return host_; }
  uint64_t iova() const { return iova_; }
  uint64_t size() const { return len_; }
  int fd() const { return fd_; }
  // Registered for I/O: removed from `registry` on destruction.
  void set_registry(DmaRegistry* registry) { registry_ = registry; }
  // Handed over: the container's mapping stays for the successor; only this process's
  // view of the memory goes with the buffer.
  void Keep() { kept_ = true; }

 private:
  DmaBuffer(VfioContainer* c, int fd, void* host, uint64_t iova, uint64_t len)
      : container_(c), fd_(fd), host_(host), iova_(iova), len_(len) {}
  VfioContainer* container_;
  DmaRegistry* registry_ = nullptr;
  int fd_;
  void* host_;
  uint64_t iova_, len_;
  bool kept_ = false;
};

// An Asynchronous Event Request completion (NVMe Base 2.0, 5.2), decoded.
struct AsyncEvent {
  uint8_t type = 0;  // 0 error, 1 SMART/health, 2 notice, 6 I/O command set specific, 7 vendor
  uint8_t info = 0;  // for notices: 0 namespace attribute changed, 3 ANA change, ...
  uint8_t log_page = 0;
  bool ana_change() const { return type == 2 && info == 3; }
  bool namespace_changed() const { return type == 2 && info == 0; }
};
// From an AER completion's dword 0.
AsyncEvent DecodeAsyncEvent(uint32_t dw0);

// Threading: the control thread (the vfio manager's event thread), which alone uses the
// admin queue. I/O queue pairs, once created, belong to their workers.
class VfioController {
 public:
  static absl::StatusOr<std::unique_ptr<VfioController>> Open(VfioContainer* container,
                                                              const std::string& bdf);

  // Disable, set up the admin queue, enable; each wait bounded by CAP.TO. A fatal
  // status (CSTS.CFS) or a device that reads all ones is FAILED_PRECONDITION /
  // UNAVAILABLE.
  absl::Status Enable();
  // Disables the controller (shutdown of its queues is the controller's job then).
  absl::Status Disable();

  // One admin command, polled to completion within `timeout_ms`. A completion with an
  // error status is returned as an error naming it.
  absl::StatusOr<nvme::CompletionEntry> AdminCommand(nvme::SubmissionEntry sqe, int timeout_ms);

  absl::StatusOr<nvme::ControllerIdentity> IdentifyController();
  absl::StatusOr<std::vector<uint32_t>> ActiveNamespaces();
  absl::StatusOr<nvme::NamespaceIdentity> IdentifyNamespace(uint32_t nsid);
  absl::StatusOr<nvme::NamespaceIds> NamespaceIdDescriptors(uint32_t nsid);

  // Set Features, Number of Queues: asks for `wanted` I/O queue pairs, returns how many
  // the controller granted (it may grant fewer, or more).
  absl::StatusOr<uint16_t> SetNumberOfQueues(uint16_t wanted);
  // MSI-X through eventfds: vector 0 for the admin queue, vector q for I/O queue q.
  // Fewer vectors than queues: the queues beyond them are polled (no eventfd).
  absl::Status EnableInterrupts(uint16_t io_queues);
  int vector_fd(uint16_t vector) const;
  // The release request eventfd (VFIO_PCI_REQ_IRQ_INDEX): signalled when the kernel
  // wants the device back (hot-unplug). UNIMPLEMENTED where the kernel has none.
  absl::StatusOr<int> EnableReleaseRequest();

  // Creates I/O queue `options.qid` (CQ then SQ) with its DMA memory and PRP list pages.
  // The queue pair is owned here and stays valid until the controller is destroyed.
  absl::StatusOr<VfioQueuePair*> CreateIoQueue(IoQueueOptions options);
  // After a reset (Disable, workers ran AbortAll and ResetRings, Enable): creates every
  // I/O queue again on its memory.
  absl::Status RecreateIoQueues();
  // Deletes every I/O queue (SQ, then its CQ), each command bounded by `timeout_ms`: the
  // controller aborts what was in flight on them. Done before disabling a live
  // controller, as the kernel does, so nothing is left running inside the device (QEMU's
  // NVMe crashes on a disable with reads in flight; SPDK #3088 saw drives brick).
  absl::Status DeleteIoQueues(int timeout_ms);
  // Normal shutdown notification (CC.SHN), bounded by `timeout_ms`.
  absl::Status ShutdownNotify(int timeout_ms);

  // Asynchronous events: which ones to report (Set Features 0x0B), and requests to post.
  absl::Status ConfigureAsyncEvents(bool ana_change);
  absl::Status PostAsyncEventRequests(int count);
  // Reaps admin completions that arrived outside a command (AER completions), re-posts
  // the requests they consumed, and returns the events.
  std::vector<AsyncEvent> TakeAsyncEvents();
  // Get Log Page of `len` bytes, up to kMaxLogBytes (a PRP list past 8 KiB); `rae` keeps
  // the asynchronous event retained.
  static constexpr uint32_t kMaxLogBytes = 1u << 20;
  absl::StatusOr<std::vector<uint8_t>> GetLogPage(uint8_t lid, uint32_t len, bool rae);

  // Lets the function go (interrupts off, registers unmapped, the device file closed):
  // vfio-pci then clears its bus master and resets it, and the kernel may remove it.
  // The I/O queue pairs and their memory stay until the controller is destroyed; nothing
  // may touch their doorbells any more. Only bdf() and the destructor after this.
  void ReleaseDevice();
  bool released() const { return device_ == nullptr; }

  // ---- A hand-over (issue 16 item 3). ----
  // The running agent's end, once the controller is idle (no admin command under way,
  // nothing in flight on its I/O queues): what the successor needs. Its memory's
  // mappings are found in `state` by IOVA and given their memfds, appended to `fds`
  // (borrowed) with its group and device. From then on nothing touches the device: the
  // destructor lets only this process's view go (no interrupt change, no unmapping).
  handover::ControllerState HandOver(handover::State* state, std::vector<int>* fds);
  // The successor's end: the controller as it was left, its admin queue where it was.
  // `memory`: the state's mappings adopted, by index (each is taken by its user).
  static absl::StatusOr<std::unique_ptr<VfioController>> Adopt(
      VfioContainer* container, const handover::ControllerState& cs, std::vector<handover::UniqueFd>& fds,
      std::vector<std::unique_ptr<DmaBuffer>>& memory);
  // I/O queue `q` as the predecessor left it (empty), made without an admin command.
  absl::StatusOr<VfioQueuePair*> AdoptIoQueue(IoQueueOptions options, const handover::QueueState& q,
                                              std::unique_ptr<DmaBuffer> memory);
  int aers_outstanding() const { return aers_outstanding_; }

  uint32_t ReadCsts() const { return device_->Read32(regs::kCsts); }
  const regs::Cap& cap() const { return cap_; }
  VfioDevice& device() { return *device_; }
  const std::string& bdf() const { return bdf_; }

 private:
  VfioController() = default;
  absl::Status WaitReady(bool ready);
  absl::StatusOr<std::vector<uint8_t>> Identify(uint8_t cns, uint32_t nsid);
  absl::Status CreateQueuesOnDevice(uint16_t qid, uint16_t depth, uint64_t sq_iova,
                                    uint64_t cq_iova, int vector);
  // Handles one admin completion that is not the awaited command (an AER).
  void OnStrayAdminCompletion(const nvme::CompletionEntry& cqe);

  struct IoQueue {
    std::unique_ptr<DmaBuffer> memory;
    std::unique_ptr<VfioQueuePair> qp;
    uint16_t depth = 0;
    int vector = -1;
    uint64_t sq_iova = 0, cq_iova = 0;
  };
  struct QueueLayout {
    uint64_t sq_bytes = 0;
    uint64_t cq_bytes = 0;
    uint64_t list_bytes = 0;
    uint64_t total() const { return sq_bytes + cq_bytes + list_bytes; }
  };
  static QueueLayout LayoutFor(IoQueueOptions& options, uint16_t depth);
  VfioQueuePair* Wire(std::unique_ptr<IoQueue> q, const QueueLayout& l, IoQueueOptions options);

  VfioContainer* container_ = nullptr;
  std::string bdf_;
  std::unique_ptr<VfioDevice> device_;
  regs::Cap cap_;
  static constexpr uint16_t kAdminDepth = 32;
  std::unique_ptr<DmaBuffer> asq_, acq_, data_;
  std::unique_ptr<SubmissionRing> sq_;
  std::unique_ptr<CompletionRing> cq_;
  uint16_t next_cid_ = 0;
  std::unique_ptr<DmaBuffer> log_;
  std::vector<std::unique_ptr<IoQueue>> io_queues_;
  std::vector<int> vector_fds_;
  int release_fd_ = -1;
  int aers_outstanding_ = 0;
  int aers_to_repost_ = 0;
  uint32_t aer_seq_ = 0;
  std::vector<AsyncEvent> events_;
  bool handed_over_ = false;

 public:
  ~VfioController();
};

}  // namespace umpath::vfio
