#include "agent/vfio/controller.h"

#include <sys/mman.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/nvme/status.h"

namespace umpath::vfio {

namespace {

constexpr uint32_t kPage = 4096;

absl::Status DeviceGone(const std::string& bdf) {
  return absl::UnavailableError(absl::StrCat(bdf, " reads all ones: the device is gone"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<DmaBuffer>> DmaBuffer::Create(VfioContainer* c, uint64_t len) {
  len = (len + kPage - 1) & ~uint64_t{kPage - 1};
  void* host = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (host == MAP_FAILED) return absl::ErrnoToStatus(errno, "mmap DMA buffer");
  std::memset(host, 0, len);  // touched, so every page exists before it is pinned
  absl::StatusOr<uint64_t> iova = c->MapDma(host, len);
  if (!iova.ok()) {
    munmap(host, len);
    return iova.status();
  }
  return std::unique_ptr<DmaBuffer>(new DmaBuffer(c, host, *iova, len));
}

DmaBuffer::~DmaBuffer() {
  (void)container_->UnmapDma(iova_, len_);
  munmap(host_, len_);
}

absl::StatusOr<std::unique_ptr<VfioController>> VfioController::Open(VfioContainer* container,
                                                                    const std::string& bdf) {
  std::unique_ptr<VfioController> c(new VfioController());
  c->container_ = container;
  absl::StatusOr<std::unique_ptr<VfioDevice>> dev = VfioDevice::Open(container, bdf);
  if (!dev.ok()) return dev.status();
  c->device_ = std::move(*dev);
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
  sqe.cid = next_cid_++;
  if (!sq_->Push(sqe)) return absl::ResourceExhaustedError("admin queue full");
  sq_->Ring();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  nvme::CompletionEntry cqe;
  for (;;) {
    if (cq_->Peek(&cqe)) {
      cq_->Pop();
      cq_->Ring();
      sq_->SetHead(cqe.sq_head);
      if (cqe.cid != sqe.cid) continue;  // a stale completion: not ours
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

}  // namespace umpath::vfio
