#pragma once

// Per-connect fabrics options (issue 19 item 7): what an AttachController request may
// add to a fabrics connect, checked against the kernel's own option rules
// (drivers/nvme/host/fabrics.c, nvmf_parse_options) before anything is connected, and
// the arguments libnvme 1.3 gets for them. Keys travel by file reference only: the
// request names a file, the agent reads it right before the connect, and neither the
// request, the logs nor an error message ever carry its contents.
//
// Pure, apart from reading the key files; unit-tested without hardware.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/kernel/tls_psk.h"

namespace umpath::kernel {

struct ConnectOptions {
  // Unset: the agent's default (--fabrics_ctrl_loss_tmo_secs,
  // --fabrics_reconnect_delay_secs) or the kernel's (keep-alive).
  std::optional<int32_t> ctrl_loss_tmo_secs;     // -1 (forever) .. kMaxCtrlLossTmoSecs
  std::optional<int64_t> reconnect_delay_secs;   // 1 .. kMaxReconnectDelaySecs
  std::optional<int64_t> keep_alive_tmo_secs;    // 1 .. kMaxKeepAliveTmoSecs
  std::string host_traddr;  // tcp, rdma: an IP address; fc: nn-0x...:pn-0x...
  std::string host_iface;   // tcp: a network interface name
  std::string host_nqn;     // empty: the agent's host NQN
  // Absolute paths of key files (not world-readable, at most kMaxKeyFileBytes).
  std::string tls_key_file;             // "NVMeTLSkey-1:..."
  std::string dhchap_secret_file;       // "DHHC-1:...": the host's secret
  std::string dhchap_ctrl_secret_file;  // "DHHC-1:...": the controller's (bidirectional)

  bool empty() const;
  // The options as one line for logs: values and key file paths, never a key
  // ("ctrl_loss_tmo=30 host_traddr=10.0.0.1"). Validated options only: the values are
  // not escaped.
  std::string ToString() const;
  // The names of the options given ("ctrl_loss_tmo, host_traddr"), for messages about
  // options that may not be valid.
  std::string Names() const;

 private:
  std::vector<std::pair<std::string, std::string>> Fields() const;
};

inline constexpr int32_t kMaxCtrlLossTmoSecs = 31'536'000;  // a year
inline constexpr int64_t kMaxReconnectDelaySecs = 86'400;
// The Connect command carries KATO in milliseconds in 32 bits.
inline constexpr int64_t kMaxKeepAliveTmoSecs = 4'294'967;
inline constexpr int64_t kMaxKeyFileBytes = 4096;

// INVALID_ARGUMENT naming the field and what it accepts: a range, an address or name
// syntax, an option the transport does not take (any option with pcie or kernel), a key
// file that is not an absolute path to a regular, not world-readable file of a key in
// its NVMe format (a TLS PSK also by its hash indicator, length and CRC). Reads the key
// files (to check them) and forgets what it read.
absl::Status ValidateConnectOptions(absl::string_view transport, const ConnectOptions& options);

// The contents of a key file, checked as above; `prefix` is "DHHC-1:" or
// "NVMeTLSkey-1:". The error names the file, never what is in it.
absl::StatusOr<std::string> ReadKeyFile(absl::string_view field, const std::string& path,
                                        absl::string_view prefix);

// Whether a kernel controller's address string ("traddr=...,trsvcid=...,host_traddr=...")
// was connected with the host_traddr and host_iface `options` name: two paths to one
// target through two host ports are two controllers.
bool MatchesConnectOptions(absl::string_view address, const ConnectOptions& options);

// What the agent gives libnvme for one connect: ConnectOptions over the agent's
// defaults, with the keys read from their files. Never logged: it holds secrets.
struct ConnectArgs {
  std::string host_nqn;  // empty: libnvme's default host
  std::string host_id;   // empty: none given (the kernel's)
  std::string host_traddr, host_iface;
  int ctrl_loss_tmo = 600;
  int reconnect_delay = 10;
  int keep_alive_tmo = 0;  // 0: the kernel's default
  std::string dhchap_secret, dhchap_ctrl_secret;
  // tcp: the configured TLS PSK, CRC-checked. Set: the connect is TLS 1.3 with the PSK
  // derived from it for this host and subsystem (agent/kernel/tls_psk.h).
  std::optional<ConfiguredPsk> tls_psk;
};

struct ConnectDefaults {
  std::string host_nqn, host_id;
  int ctrl_loss_tmo_secs = 600;
  int reconnect_delay_secs = 10;
};

// Validates (as ValidateConnectOptions) and reads the keys. The host ID goes with the
// agent's host NQN; another NQN of the nqn.2014-08.org.nvmexpress:uuid:<uuid> form
// brings its UUID as its host ID (as nvme-cli derives it), since the kernel refuses a
// host NQN that reuses another host's ID.
absl::StatusOr<ConnectArgs> BuildConnectArgs(absl::string_view transport, const ConnectOptions& options,
                                             const ConnectDefaults& defaults);

}  // namespace umpath::kernel
