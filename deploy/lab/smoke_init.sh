#!/bin/busybox sh
# The lab node's init: modules load, every NVMe function binds to vfio-pci in its own
# IOMMU group, one summary line, then /lab/after BDF... if the test put one there.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "$m" || echo "umpath-lab: insmod $m failed"; done < /lib/modules/order
# Networking for the forwarded port (LAB.md), when the VM has a NIC.
ip link set lo up 2>/dev/null
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
fi
mkdir -p /run/umpath /var/lib/umpath
bound=0
bdfs=""
for dev in /sys/bus/pci/devices/*; do
  [ "$(cat "$dev/class")" = "0x010802" ] || continue  # NVMe
  bdf="$(basename "$dev")"
  [ -e "$dev/driver" ] && echo "$bdf" > "$dev/driver/unbind"
  echo vfio-pci > "$dev/driver_override"
  echo "$bdf" > /sys/bus/pci/drivers_probe
  if [ "$(basename "$(readlink "$dev/driver")")" = vfio-pci ] && [ -e "$dev/iommu_group" ]; then
    bound=$((bound + 1))
    bdfs="$bdfs $bdf"
    echo "umpath-lab: $bdf -> vfio-pci, group $(basename "$(readlink "$dev/iommu_group")")"
  fi
done
echo "umpath-lab: $bound nvme functions bound to vfio-pci; /dev/vfio: $(ls /dev/vfio | tr '\n' ' ')"
# A test's own step, given the bound functions.
if [ -x /lab/after ]; then
  /lab/after $bdfs
  echo "umpath-lab: after exited $?"
fi
poweroff -f
