#!/usr/bin/env bash
# Builds the microVM guest (isolation: microvm, docs/sandbox.md "microVM"): Debian's stock kernel,
# extracted from the linux-image package WITHOUT installing it on the host, and an initramfs of
# AEGIS's own (busybox-static, the virtio/9p modules of that kernel, scripts/microvm/init).
# Idempotent: does nothing when the guest of this kernel version and init is already there.
# Usage: build-guest.sh [DIR]   (default /var/lib/aegis/microvm). Needs: apt-get, dpkg-deb, cpio, gzip,
# busybox-static (/bin/busybox), gcc and libc6-dev (aegis-exec, static). Prints the guest directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-/var/lib/aegis/microvm}"
log() { printf '[microvm-guest] %s\n' "$*" >&2; }

# The kernel package linux-image-amd64 currently points to (e.g. linux-image-6.1.0-57-amd64).
pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')"
[ -n "$pkg" ] || { log "cannot resolve linux-image-amd64 (apt-get update?)"; exit 1; }
kver="${pkg#linux-image-}"
stamp="$(sha256sum "$here/init" "$here/aegis-exec.c" "$here/build-guest.sh" /bin/busybox | sha256sum | cut -c1-16)"
out="$dest/$kver"
if [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.cpio.gz" ] && [ -f "$out/protocol" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
  ln -sfn "$kver" "$dest/current"
  echo "$out"
  exit 0
fi
[ -x /bin/busybox ] || { log "busybox-static is not installed"; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log "downloading $pkg (not installed on the host)"
(cd "$work" && chown _apt "$work" 2>/dev/null; apt-get download -qq "$pkg" >/dev/null 2>&1 || apt-get download "$pkg")
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/k"
mods="$work/k/lib/modules/$kver/kernel"

root="$work/initramfs"
mkdir -p "$root"/{bin,dev,proc,sys,mnt,newroot,lib/modules}
cp /bin/busybox "$root/bin/busybox"
for a in sh mount umount mkdir mknod insmod chroot reboot cat ls ln cp sleep grep ip; do ln -s busybox "$root/bin/$a"; done
# Load order (no modules.dep in the package: the order is the dependency order).
MODULES="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_mmio drivers/char/virtio_console
  net/9p/9pnet net/9p/9pnet_virtio fs/netfs/netfs fs/fscache/fscache fs/9p/9p
  net/core/failover drivers/net/net_failover drivers/net/virtio_net"
: > "$root/lib/modules/order"
for m in $MODULES; do
  cp "$mods/$m.ko" "$root/lib/modules/"
  echo "$(basename "$m").ko" >> "$root/lib/modules/order"
done
install -m 0755 "$here/init" "$root/init"
gcc -static -O2 -Wall -Werror -o "$root/bin/aegis-exec" "$here/aegis-exec.c"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -9) > "$work/initramfs.cpio.gz"

mkdir -p "$out.tmp"
cp "$work/k/boot/vmlinuz-$kver" "$out.tmp/vmlinuz"
cp "$work/initramfs.cpio.gz" "$out.tmp/initramfs.cpio.gz"
echo "$stamp" > "$out.tmp/stamp"
# The host/guest protocol (ports, spec variables, aegis-exec's arguments) this init speaks.
sed -n 's/^# aegis-guest-protocol: \([0-9][0-9]*\)$/\1/p' "$here/init" | head -n 1 > "$out.tmp/protocol"
[ -s "$out.tmp/protocol" ] || { log "scripts/microvm/init declares no aegis-guest-protocol"; exit 1; }
rm -rf "$out"
mv "$out.tmp" "$out"
ln -sfn "$kver" "$dest/current"
log "guest kernel $kver and initramfs in $out"
echo "$out"
