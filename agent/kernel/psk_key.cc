#include "agent/kernel/psk_key.h"

#include <linux/keyctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace umpath::kernel {

absl::StatusOr<PskKey> PskKey::Add(const TlsPsk& psk) {
  // Raw syscalls: the two calls here are all libkeyutils would give.
  const long serial = syscall(SYS_add_key, "psk", psk.identity.c_str(), psk.key.data(), psk.key.size(),
                              KEY_SPEC_PROCESS_KEYRING);
  if (serial < 0) {
    const int e = errno;
    if (e == ENODEV) {
      return absl::FailedPreconditionError(
          "the kernel has no \"psk\" key type (NVMe TLS needs CONFIG_NVME_KEYRING and CONFIG_NVME_TCP_TLS)");
    }
    return absl::ErrnoToStatus(e, "add_key(psk)");
  }
  PskKey key(static_cast<int32_t>(serial));
  if (syscall(SYS_keyctl, KEYCTL_SETPERM, key.serial_, kPskKeyPerm) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("keyctl(SETPERM) on key ", key.serial_));
  }
  return key;
}

PskKey::~PskKey() {
  if (serial_ != 0) (void)syscall(SYS_keyctl, KEYCTL_UNLINK, serial_, KEY_SPEC_PROCESS_KEYRING);
}

}  // namespace umpath::kernel
