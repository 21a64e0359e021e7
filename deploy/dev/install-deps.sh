#!/usr/bin/env bash
# Installs what building and testing umpath needs on Debian 12, from Debian's packages.
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build ccache pkg-config git
  clang libclang-rt-14-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libabsl-dev libnvme-dev libjson-c-dev liburing-dev fio
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler openssl
  prometheus-cpp-dev libcli11-dev systemd libsystemd-dev
  # The OCI image (deploy/image): a root filesystem from Debian's packages, the image
  # layout, and a sandbox that runs the image's binaries in the test.
  mmdebstrap umoci bubblewrap eatmydata
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# buf (protobuf lint, and `buf curl` for tests) comes from npm; Debian's nodejs and npm
# are enough, and a machine that already has node (nodesource) keeps it.
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
tools="$(cd "$(dirname "$0")/../.." && pwd)/build/tools"
# buf, and grpc-js as a second, independent client for the watcher test.
if [ ! -x "$tools/node_modules/.bin/buf" ] || [ ! -d "$tools/node_modules/@grpc/grpc-js" ] ||
   [ ! -d "$tools/node_modules/kubernetes-models" ] || [ ! -d "$tools/node_modules/js-yaml" ]; then
  mkdir -p "$tools"
  npm install --prefix "$tools" --no-audit --no-fund --silent \
    @bufbuild/buf@1.75.0 @grpc/grpc-js@1.12.6 @grpc/proto-loader@0.7.13 kubernetes-models@5.1.0 @kubernetes-models/prometheus-operator@6.0.0 js-yaml@4.1.0
fi
