# /lab/lib.sh in the lab node (mkinitramfs.sh puts it there): what guest scripts share.
# bind DRIVER BDF...: binds functions to a driver through driver_override.
bind() {
  drv=$1; shift
  for b in "$@"; do
    [ -e /sys/bus/pci/devices/$b/driver ] && echo $b > /sys/bus/pci/devices/$b/driver/unbind
    echo $drv > /sys/bus/pci/devices/$b/driver_override
    echo $b > /sys/bus/pci/drivers_probe
  done
}
# gone BDF / back BDF: wait (30 s at most) for a function to leave or join the bus.
gone() { for i in $(seq 1 300); do [ -e /sys/bus/pci/devices/$1 ] || return 0; sleep 0.1; done; echo "umpath-lab: $1 did not go"; }
back() { for i in $(seq 1 300); do [ -e /sys/bus/pci/devices/$1 ] && return 0; sleep 0.1; done; echo "umpath-lab: $1 did not come"; }
# qmp COMMAND JSON: asks the host (deploy/lab/qmp_relay.sh) to send it to QEMU.
qmp() { echo "umpath-lab: qmp $*"; }
now() { cut -d' ' -f1 /proc/uptime; }
# idle_sample PID: the process's CPU ticks over 10 s with nothing to do, its resident
# memory and threads, as one "bench: idle ticks T0 T1 hz HZ rss_kb R threads N" line.
idle_sample() {
  t0=$(awk '{print $14 + $15}' /proc/$1/stat)
  sleep 10
  t1=$(awk '{print $14 + $15}' /proc/$1/stat)
  echo "bench: idle ticks $t0 $t1 hz $(getconf CLK_TCK 2>/dev/null || echo 100) rss_kb $(awk '/VmRSS/ {print $2}' /proc/$1/status) threads $(ls /proc/$1/task | wc -l)"
}
