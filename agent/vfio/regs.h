#pragma once

// NVMe controller registers in BAR0 (NVMe Base 2.0, 3.1.4 "Controller Properties").

#include <cstdint>

namespace umpath::vfio::regs {

inline constexpr uint32_t kCap = 0x00;    // Controller Capabilities, 64-bit
inline constexpr uint32_t kVs = 0x08;     // Version
inline constexpr uint32_t kIntms = 0x0c;  // Interrupt Mask Set
inline constexpr uint32_t kIntmc = 0x10;  // Interrupt Mask Clear
inline constexpr uint32_t kCc = 0x14;     // Controller Configuration
inline constexpr uint32_t kCsts = 0x1c;   // Controller Status
inline constexpr uint32_t kAqa = 0x24;    // Admin Queue Attributes
inline constexpr uint32_t kAsq = 0x28;    // Admin Submission Queue Base, 64-bit
inline constexpr uint32_t kAcq = 0x30;    // Admin Completion Queue Base, 64-bit
inline constexpr uint32_t kDoorbells = 0x1000;

// CAP, decoded.
struct Cap {
  uint64_t raw = 0;
  constexpr uint32_t mqes() const { return static_cast<uint32_t>(raw & 0xffff) + 1; }  // entries
  constexpr bool cqr() const { return (raw >> 16) & 1; }  // contiguous queues required
  // CAP.TO: worst-case time for CSTS.RDY to follow CC.EN, in 500 ms units.
  constexpr uint32_t timeout_ms() const { return static_cast<uint32_t>((raw >> 24) & 0xff) * 500; }
  constexpr uint32_t doorbell_stride() const { return 4u << ((raw >> 32) & 0xf); }  // bytes
  constexpr bool nvm_command_set() const { return (raw >> 37) & 1; }  // CSS bit 0
  constexpr uint32_t mps_min() const { return 4096u << ((raw >> 48) & 0xf); }
  constexpr uint32_t mps_max() const { return 4096u << ((raw >> 52) & 0xf); }
};

// The largest transfer per command: MDTS (Identify Controller byte 77) counts units of
// CAP.MPSMIN as a power of two, 0 is no limit; either way at most `ceiling` (1 MiB here,
// so PRP list pages stay bounded per command). In 64 bits: 4 KiB << 20 wrapped to 0 in
// 32 and failed every I/O (issue 17 item 7b); from MDTS 32 on it is past any ceiling.
constexpr uint32_t MaxTransferBytes(const Cap& cap, uint8_t mdts, uint32_t ceiling = 1u << 20) {
  if (mdts == 0 || mdts >= 32) return ceiling;
  const uint64_t bytes = uint64_t{cap.mps_min()} << mdts;
  return bytes < ceiling ? static_cast<uint32_t>(bytes) : ceiling;
}

// Doorbell offsets: SQ y tail at 0x1000 + (2y) * stride, CQ y head at 0x1000 + (2y+1) * stride.
constexpr uint32_t SqTailDoorbell(uint16_t qid, uint32_t stride) {
  return kDoorbells + (2u * qid) * stride;
}
constexpr uint32_t CqHeadDoorbell(uint16_t qid, uint32_t stride) {
  return kDoorbells + (2u * qid + 1) * stride;
}

// CC fields this driver sets: EN, CSS (NVM), MPS, AMS (round robin), IOSQES 6, IOCQES 4.
constexpr uint32_t CcEnable(uint32_t page_size) {
  uint32_t mps = 0;
  while ((4096u << mps) < page_size) ++mps;
  return 1u | (mps << 7) | (6u << 16) | (4u << 20);
}

inline constexpr uint32_t kCstsRdy = 1u << 0;
inline constexpr uint32_t kCstsCfs = 1u << 1;  // Controller Fatal Status
// CSTS reads all ones when the device is gone (surprise removal).
inline constexpr uint32_t kCstsGone = 0xffffffff;

}  // namespace umpath::vfio::regs
