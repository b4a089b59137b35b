#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine (root): set everything up, then run the example
# agents under their policies with `aegis run`, and verify the audit log they wrote.
#   1. examples/hello: a Python agent that prints and writes a file to its granted output folder
#      (a host folder attached with --volume, where fs.write grants /data/outputs).
#   2. examples/exfil-demo: a prompt-injected agent that makes one allowed API call and then
#      tries to exfiltrate a secret every way it knows; every attempt is refused by the egress
#      gateway and shows up in the audit log as a denial, and the default alert rules raise
#      alerts (alert.raised events in the same log). Then examples/db-api-agent uses a PostgreSQL
#      database and an HTTPS API at once, through the same gateway. (No internet here: the script
#      builds a small fake one in a network namespace first.) Last, examples/secret-agent calls
#      the API with a key it never holds (the gateway swaps its placeholder for api.openai.com
#      only) and fails to send it anywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export AEGIS_HOME="${AEGIS_HOME:-$HOME/.aegis}"
aegis() { node bin/aegis.js "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "aegis validate examples/hello/agent.yaml"
aegis validate examples/hello/agent.yaml

out=$(mktemp -d /tmp/aegis-hello-out.XXXXXX)
# an rw volume: its own 1 GiB filesystem during the run, copied back owned by the caller
say "aegis run examples/hello/agent.yaml --volume $out:/data/outputs:rw"
aegis run examples/hello/agent.yaml --volume "$out:/data/outputs:rw" --summary "$out/../aegis-hello-summary.json"
say "what the agent wrote to its granted folder ($out)"
cat "$out/hello.txt"
say "run summary"
cat "$out/../aegis-hello-summary.json"

say "the egress gateway: an exfiltration attempt, refused and audited"
node scripts/demo-exfil.mjs

# The same policies on the Docker backend (docs/sandbox.md, Docker): the same gateway, the same refusals.
say "the same under --isolation docker"
node scripts/demo-exfil.mjs --isolation docker

# The engine used as a remote one, as Docker Desktop or an engine in a VM is: only its API (code
# and volumes copied through it, limits in the container's own options, network through a
# gateway container).
say "the same with the Docker engine used as a remote one (AEGIS_DOCKER_ENGINE=remote)"
AEGIS_DOCKER_ENGINE=remote node scripts/demo-exfil.mjs --isolation docker

# The same in a microVM (docs/sandbox.md "microVM"): its own guest kernel, its NIC on a tap in the
# gateway's namespace. These hosts' KVM runs only patched guests: software emulation, allowed
# here explicitly (slow: about 40 s for the three agents).
say "the same under --isolation microvm (QEMU, software emulation)"
AEGIS_MICROVM_ALLOW_EMULATION=1 node scripts/demo-exfil.mjs --isolation microvm

say "alerts the runs raised (alert.raised events in the audit log; rules: rules/aegis-default.yml)"
aegis audit query --action alert.raised --since 1h

say "aegis audit verify (Merkle tree, signed checkpoints; log in $AEGIS_HOME/audit)"
aegis audit verify
aegis audit checkpoint
