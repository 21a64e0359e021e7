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
