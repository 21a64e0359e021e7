#pragma once

// A TLS PSK handed to the kernel for one fabrics connect ("tls_key=<serial>",
// drivers/nvme/host/fabrics.c), through the kernel's key store.
//
// Where the key lives, and for how long: add_key(2) puts it, as a key of the "psk" type
// (drivers/nvme/common/keyring.c) described by its identity, in this process's own
// keyring, never in the shared .nvme keyring, so it neither replaces nor is found by
// keys an administrator or nvme-cli put there, and the target side (tlshd searching
// .nvme by identity) never sees it. The connect's nvmf_parse_key takes a reference of
// the controller's own (nvme_tls_key_lookup: key_lookup by serial, no keyring check)
// and the handshake daemon reads it by serial on every (re)connect. Once the connect
// returns, this object unlinks the key from the process keyring: the controller's
// reference is then the only one, so the key lives exactly as long as the controller
// and is freed by the kernel when the controller is deleted (detach, ctrl_loss_tmo). A
// failed connect or an agent that dies leaves nothing behind. (A build without the
// unlink passed the lab test too: the connect's offload thread ends with it, and the
// key went with its controller all the same. The unlink keeps the lifetime from
// depending on how the caller's threads and keyrings come and go.)
//
// tlshd reads the key by serial without possessing it: the key grants its owner's UID
// (root, as the agent and tlshd run) view and read.

#include <cstdint>

#include "absl/status/statusor.h"
#include "agent/kernel/tls_psk.h"

namespace umpath::kernel {

// Key permissions: possessor everything, owner (UID) view and read
// (include/uapi/linux/keyctl.h KEY_POS_ALL | KEY_USR_VIEW | KEY_USR_READ).
inline constexpr uint32_t kPskKeyPerm = 0x3f000000u | 0x00010000u | 0x00020000u;

class PskKey {
 public:
  // FAILED_PRECONDITION when the kernel has no "psk" key type (no CONFIG_NVME_KEYRING).
  static absl::StatusOr<PskKey> Add(const TlsPsk& psk);

  PskKey(PskKey&& other) noexcept : serial_(other.serial_) { other.serial_ = 0; }
  PskKey& operator=(PskKey&&) = delete;
  PskKey(const PskKey&) = delete;
  ~PskKey();  // unlinks the key from the process keyring

  int32_t serial() const { return serial_; }

 private:
  explicit PskKey(int32_t serial) : serial_(serial) {}
  int32_t serial_;
};

}  // namespace umpath::kernel
