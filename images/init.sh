#!/bin/sh
# crashrig guest init (run by busybox init as sysinit). Everything here must be quick: it is on
# the path from QEMU start to the first SSH command.
export PATH=/tools/bin:/bin:/sbin

# The helper does all of the steps below in one process: under TCG each of the ~30 processes
# they spawn costs tens of milliseconds. It fails only before sshd runs; the steps below are
# then the fallback, so a broken helper still boots.
/bin/crashrig-guest boot-init && exit 0
echo "crashrig: boot-init failed, init.sh runs the boot steps itself"

# After a failed helper, what it mounted stays: mounting again would hide its files.
mounted() { grep -qs " $1 " /proc/mounts; }
mounted /proc || mount -t proc proc /proc
mounted /sys || mount -t sysfs sys /sys
mounted /dev || mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /run /tmp /tools /mnt
mounted /dev/pts || mount -t devpts devpts /dev/pts
mounted /run || mount -t tmpfs run /run
mounted /tmp || mount -t tmpfs tmp /tmp
mounted /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mounted /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null

# Kernel command-line words with '=' reach init's environment: crashrig_key, crashrig_modules.
load_module() {
  [ -f /etc/crashrig/modules/$1 ] || return 0
  while read -r ko; do insmod "/lib/modules/$ko" 2>/dev/null; done < /etc/crashrig/modules/$1
}

# Filesystem and device-mapper modules take longest (xfs: ~0.8 s under TCG) and nothing
# needs them before the first mount: load them on another vCPU while the network and sshd
# come up. The virtio drivers are what the boot itself waits for.
(
  for m in $(echo "$crashrig_modules" | tr , ' '); do
    case $m in virtio_*) ;; *) load_module $m ;; esac
  done
) &
fs_modules=$!

# SSH next: it is what the host waits for. Everything else happens while the host connects;
# the host's first command waits for /run/crashrig/ready.
load_module virtio_pci
load_module virtio_net
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
mkdir -p /root/.ssh /run/crashrig
echo "ssh-ed25519 $crashrig_key crashrig" > /root/.ssh/authorized_keys
chmod 700 /root /root/.ssh
chmod 600 /root/.ssh/authorized_keys
/usr/sbin/dropbear -s -r /etc/dropbear/host_key -p 22
# The host starts connecting when it sees this on the console.
echo "crashrig: sshd started" > /dev/kmsg

load_module virtio_blk

for d in /sys/block/vd*; do
  if [ "$(cat $d/serial 2>/dev/null)" = crashrig-tools ]; then
    mount -t ext4 -o ro,noload /dev/${d##*/} /tools || echo "crashrig: cannot mount tools disk" > /dev/kmsg
  fi
done

echo 1 > /proc/sys/kernel/sysrq
wait $fs_modules
echo "crashrig: init done" > /dev/kmsg
touch /run/crashrig/ready
