# /lab/nvmet.sh in the lab node (mkinitramfs.sh puts it there): the guest kernel's own
# NVMe/TCP target as a subsystem with real ANA, since QEMU's NVMe has none (LAB.md).
# One subsystem, one file-backed namespace, two TCP ports on 127.0.0.1 (port 1 = 4420,
# port 2 = 4421; a test may add more with nvmet_port_add), each port its own ANA group 1
# state. Sourced by busybox sh.
NVMET_NQN=nqn.2026-01.io.umpath:tcp
NVMET_CFG=/sys/kernel/config/nvmet
# A fixed host identity, so the kernel host and umpathd (libnvme reads /etc/nvme) are the
# same host to the target, and runs are comparable.
NVMET_HOSTID=6a5e0d2c-6e1b-4c7e-9d1a-0000000000a1
NVMET_HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:$NVMET_HOSTID
export NVMET_NQN NVMET_HOSTNQN NVMET_HOSTID

nvmet_svc() { echo $((4419 + $1)); }

# nvmet_setup [SIZE_MB [COUNT]]: the subsystem, COUNT namespaces (1 by default) of
# SIZE_MB each, and both ports, ready for hosts. Namespace N's NGUID is
# ab000000-0000-0000-0000-%012x of 0xf0 + N (the first: ...0000000000f1), its UUID
# 6a5e0d2c-6e1b-4c7e-9d1a-%012x of the same.
nvmet_setup() {
  size=${1:-256}
  count=${2:-1}
  grep -q ' /sys/kernel/config ' /proc/mounts || mount -t configfs configfs /sys/kernel/config
  [ -d $NVMET_CFG ] || { echo "umpath-lab: nvmet: no $NVMET_CFG (nvmet not loaded?)"; return 1; }
  ip link set lo up
  # The backing files on a tmpfs of its own (its size bounds them); nvmet's default
  # O_DIRECT open fails there, hence buffered_io. Written, not sparse, so reads copy
  # real pages.
  mkdir -p /run/nvmet
  grep -q ' /run/nvmet ' /proc/mounts || mount -t tmpfs -o size=$((size * count + 8))m nvmet /run/nvmet
  mkdir -p /etc/nvme
  echo $NVMET_HOSTNQN > /etc/nvme/hostnqn
  echo $NVMET_HOSTID > /etc/nvme/hostid
  s=$NVMET_CFG/subsystems/$NVMET_NQN
  mkdir $s
  echo 1 > $s/attr_allow_any_host
  _ns=1
  while [ $_ns -le $count ]; do
    dd if=/dev/zero of=/run/nvmet/ns$_ns.img bs=1M count=$size 2>/dev/null
    mkdir $s/namespaces/$_ns
    echo /run/nvmet/ns$_ns.img > $s/namespaces/$_ns/device_path
    echo 1 > $s/namespaces/$_ns/buffered_io
    # Identifiers are fixed only while the namespace is disabled.
    printf 'ab000000-0000-0000-0000-%012x\n' $((0xf0 + _ns)) > $s/namespaces/$_ns/device_nguid
    printf '6a5e0d2c-6e1b-4c7e-9d1a-%012x\n' $((0xf0 + _ns)) > $s/namespaces/$_ns/device_uuid
    echo 1 > $s/namespaces/$_ns/enable || { echo "umpath-lab: nvmet: namespace $_ns enable failed"; return 1; }
    _ns=$((_ns + 1))
  done
  nvmet_port_add 1 127.0.0.1 optimized && nvmet_port_add 2 127.0.0.1 non-optimized || return 1
  echo "umpath-lab: nvmet ready $NVMET_NQN ns 1..$count ${size} MiB each, port 1 127.0.0.1:4420 $(cat $NVMET_CFG/ports/1/ana_groups/1/ana_state), port 2 127.0.0.1:4421 $(cat $NVMET_CFG/ports/2/ana_groups/1/ana_state), host $NVMET_HOSTNQN"
}

# nvmet_port_add PORT ADDRESS STATE: a TCP port (service 4419 + PORT) on the IPv4
# ADDRESS, ANA group 1 in STATE there, serving the subsystem. The ANA state is set before
# the link: a host's first connection already sees it.
nvmet_port_add() {
  d=$NVMET_CFG/ports/$1
  mkdir $d
  echo tcp > $d/addr_trtype
  echo ipv4 > $d/addr_adrfam
  echo $2 > $d/addr_traddr
  nvmet_svc $1 > $d/addr_trsvcid
  nvmet_ana $1 $3
  nvmet_port_up $1
}

# nvmet_ana PORT STATE: ANA group 1's state on that port (optimized, non-optimized,
# inaccessible, persistent-loss, change); the target sends an ANA change AEN to the
# port's controllers.
nvmet_ana() { echo $2 > $NVMET_CFG/ports/$1/ana_groups/1/ana_state; }

# nvmet_port_down PORT / nvmet_port_up PORT: unlinking the subsystem deletes the port's
# controllers (the host's connection drops) and, as the port's last subsystem, stops its
# listener (reconnects are refused); linking starts it again.
nvmet_port_down() { rm $NVMET_CFG/ports/$1/subsystems/$NVMET_NQN; }
nvmet_port_up() {
  ln -s $NVMET_CFG/subsystems/$NVMET_NQN $NVMET_CFG/ports/$1/subsystems/$NVMET_NQN ||
    { echo "umpath-lab: nvmet: port $1 did not come up"; return 1; }
}

# nvmet_ctrl PORT: the kernel controller (nvmeX) connected to the port, if any.
nvmet_ctrl() {
  for c in /sys/class/nvme/nvme*; do
    [ "$(cat $c/subsysnqn 2>/dev/null)" = $NVMET_NQN ] &&
      grep -qE "trsvcid=$(nvmet_svc $1)(,|\$)" $c/address 2>/dev/null && basename $c
  done | head -1
}

# nvmet_connect PORT [EXTRA_OPTS]: the kernel host connects to the port (the kernel
# baseline; umpathd connects through libnvme itself), as our fixed host. The kernel
# answers on the same file with the new controller's instance and cntlid.
nvmet_connect() {
  exec 3<>/dev/nvme-fabrics
  echo "transport=tcp,traddr=127.0.0.1,trsvcid=$(nvmet_svc $1),nqn=$NVMET_NQN,hostnqn=$NVMET_HOSTNQN,hostid=$NVMET_HOSTID${2:+,$2}" >&3
  rc=$?
  r=""
  [ $rc = 0 ] && read -r r <&3
  exec 3>&-
  echo "umpath-lab: nvmet connect port $1: ${r:-failed}"
  return $rc
}

# nvmet_kernel_head: the kernel host (native multipath on) connects to ports 1 and 2 and
# waits (20 s at most) for its head over both: $sub is the subsystem in sysfs, $head the
# head's disk name; the head's policy is set to numa.
nvmet_kernel_head() {
  nvmet_connect 1
  nvmet_connect 2
  sub=""; head=""
  for i in $(seq 1 100); do
    for s in /sys/class/nvme-subsystem/*; do [ "$(cat $s/subsysnqn)" = $NVMET_NQN ] && sub=$s; done
    if [ -n "$sub" ] && [ "$(ls $sub | grep -cE '^nvme[0-9]+$')" -ge 2 ]; then
      head=$(ls $sub | grep -E '^nvme[0-9]+n[0-9]+$' | head -1)
      [ -n "$head" ] && [ -b /dev/$head ] && break
    fi
    sleep 0.2
  done
  echo numa > $sub/iopolicy
}
