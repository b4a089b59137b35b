#!/usr/bin/env bash
# Installs everything AEGIS needs on a fresh Debian 12 machine (run as root) and builds it.
# Idempotent: safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[setup] %s\n' "$*" >&2; }

# Debian packages, by area. Keep each list next to the reason it is needed.
APT_PACKAGES=(
  ca-certificates git
  # egress gateway (src/gateway): per-sandbox network namespaces, veth pairs and nftables rules
  iproute2 nftables
  # gateway integration tests: agents' clients (curl, dig, python3) and the test CA (openssl)
  curl dnsutils python3 openssl
  # runtime images and host preparation (src/images, src/doctor):
  #   OCI runtimes: crun (default), runc, gVisor (Debian 12 package `runsc`, 0.0~20221219)
  #   debootstrap builds the python:3.11 image rootfs from the Debian mirror in /etc/apt/sources.list*
  #   util-linux provides mount (cgroup v1 hugetlb fix), coreutils chroot
  crun runc runsc debootstrap iproute2 nftables util-linux coreutils
  # audit log (src/audit): PostgreSQL server for the shared-store conformance tests
  #   (scripts/pg-test.sh starts it); openssl makes its test TLS certificate
  postgresql openssl  # generic TCP egress tests (test/integration/gateway-tcp.test.ts, gateway-compat.test.ts):
  #   the fake internet runs a real PostgreSQL (the package above) and a real SSH server:
  #   dropbear-bin is the binary alone, no service, so no host sshd is ever started; clients in
  #   the sandbox namespace: psycopg2, the OpenSSH client
  dropbear-bin python3-psycopg2 openssh-client
  # image registry (src/images/registry): zstd decompresses zstd layers (Node.js 20 has none);
  #   the tests run a real OCI registry (docker-registry) with htpasswd (bcrypt) from apache2-utils
  zstd docker-registry apache2-utils
  # runtime monitor (src/monitor, docs/monitoring.md): eBPF programs on the host, filtered by the
  #   run's cgroup (bpftrace 0.17 uses the kernel's BTF; no compiler or headers needed)
  bpftrace
  # the Docker backend (isolation: docker, src/sandbox/docker): Debian's engine (20.10) and containerd;
  #   started below when it is not running
  docker.io
  # isolation microvm (src/sandbox/drivers/microvm.ts): QEMU's microvm machine; the guest's
  #   initramfs (scripts/microvm/build-guest.sh) is busybox-static + a static init helper (gcc,
  #   libc6-dev, whose linux-libc-dev has the seccomp/filter headers aegis-exec installs the agent's
  #   seccomp filter with, and asm/unistd_64.h, the oracle of src/sandbox/spec/seccomp-bpf.test.ts)
  #   packed with cpio; the guest kernel is downloaded, never installed on the host
  qemu-system-x86 busybox-static cpio gcc libc6-dev
  # the start-up benchmark's reference peer (bench/sandbox.ts): Anthropic's sandbox-runtime (srt,
  #   installed from npm into /var/tmp by the benchmark) needs ripgrep, bubblewrap and socat
  ripgrep bubblewrap socat
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Docker engine: started in the background when its socket does not answer (no systemd on
# these machines), with a log file; waits until it answers. Idempotent. NOTE: dockerd sets
# net.ipv4.ip_forward=1 and the iptables FORWARD policy DROP, and adds docker0 (172.17.0.0/16).
docker_up() { curl -fsS --max-time 2 --unix-socket /var/run/docker.sock http://localhost/_ping 2>/dev/null | grep -q OK; }
if ! docker_up; then
  log "starting dockerd (log: /var/log/aegis-dockerd.log)"
  setsid nohup /usr/sbin/dockerd >>/var/log/aegis-dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 120); do docker_up && break; sleep 0.5; done
  docker_up || { log "dockerd did not answer within 60 s; see /var/log/aegis-dockerd.log"; exit 1; }
fi

log "installing npm packages (npm ci)"
npm ci --no-audit --no-fund --loglevel=error
log "building (tsc)"
npm run --silent build

# Host preparation: `aegis doctor --fix` installs anything still missing, mounts the cgroup v1
# controllers crun needs in hybrid mode (once per boot; HOST-NOTES), and builds the default
# runtime image python:3.11 into /var/lib/aegis/images if it is not there (~30-60 s, needs the
# Debian mirror). It exits non-zero if a check still fails; the report says what to do.
# The runtime monitor's system call tracepoints live in tracefs, which a new machine has not
# mounted (HOST-NOTES). Idempotent; lasts until reboot (aegis doctor --fix does the same).
if ! mountpoint -q /sys/kernel/tracing; then
  log "mounting tracefs at /sys/kernel/tracing (runtime monitor)"
  mount -t tracefs tracefs /sys/kernel/tracing
fi

log "preparing the host (aegis doctor --fix)"
node bin/aegis.js doctor --fix

# The microVM guest: Debian's kernel (linux-image-amd64's current version, extracted, not
# installed) and AEGIS's initramfs in /var/lib/aegis/microvm/<version>; idempotent (~25 s once).
log "preparing the microVM guest (scripts/microvm/build-guest.sh)"
bash scripts/microvm/build-guest.sh >/dev/null

# The egress compatibility suite's image (real clients from Debian: requests, httpx, aiohttp,
# psycopg2, psql, curl, git, OpenSSH, Node.js 18): built once, ~55 s here with the debootstrap
# cache warm (380 MiB). The default python:3.11 image stays lean.
if ! node bin/aegis.js image ls --json 2>/dev/null | grep -q '"egress-clients:bookworm"'; then
  log "building the egress-clients:bookworm image (compatibility suite)"
  node bin/aegis.js image build egress-clients:bookworm >/dev/null
fi
