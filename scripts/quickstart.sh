#!/usr/bin/env bash
# First run: install prerequisites, build drover, build the example image and
# deploy it as a service of three replicas (read-only roots, no capabilities,
# seccomp), then show its status and how to roll a change out and back.
#
#   scripts/quickstart.sh
#
# The image goes to the store $DROVER_STORE, or ./.drover in the repository
# (a local store, so no root-owned /var/lib/drover is needed to try it).
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STORE=${DROVER_STORE:-$PWD/.drover}
DROVER=$PWD/target/release/drover

step() { printf '\n==> %s\n' "$*"; }

step "installing prerequisites"
bash scripts/setup.sh

step "building drover (release)"
cargo build --release

step "making the example rootfs (busybox, no downloads)"
bash examples/hello/make-rootfs.sh

step "building examples/hello into $STORE, signed by the store's host key"
# Progress goes to stderr and shows; stdout's last line is the manifest digest.
out=$("$DROVER" --init --store "$STORE" build --sign -f examples/hello/drover.toml)
printf '%s\n' "$out"
digest=$(printf '%s\n' "$out" | tail -n 1)
if [[ ! $digest =~ ^sha256:[0-9a-f]{64}$ ]]; then
  echo "quickstart.sh: expected a sha256 digest as the last line of 'drover build', got: $digest" >&2
  exit 1
fi

step "images in the store"
"$DROVER" --store "$STORE" images

step "deploying hello as a service: 3 replicas, rolling, health-gated"
"$DROVER" --store "$STORE" apply -f examples/hello/fleet.toml

step "status"
"$DROVER" --store "$STORE" status
port=$("$DROVER" --store "$STORE" --json status | sed -n 's/.*"port": \([0-9]*\).*/\1/p' | head -n 1)
printf 'one instance answers on :%s: ' "$port"
busybox wget -qO- "http://127.0.0.1:$port/" | grep -o '<h1>.*</h1>'

step "drift check: every instance against its release (files, config, process)"
"$DROVER" --store "$STORE" drift hello | tail -n 1

step "trace: which exact image one instance runs, and who built it from what (each link verified)"
instance=$("$DROVER" --store "$STORE" --json status | sed -n 's/.*"id": *"\([0-9a-f]*\)".*/\1/p' | head -n 1)
"$DROVER" --store "$STORE" trace "$instance" | grep -E '^[^ ]|\[(ok|FAIL)\]' | cut -c1-110

step "a real packaged program: examples/nginx (nginx-light from Debian, exactly as examples/nginx/drover.lock says)"
# The .debs are downloaded once (checked against the lock's sha256s) into
# the store's package cache; the image runs as user nginx on a read-only root.
"$DROVER" --store "$STORE" build --locked --sign -f examples/nginx/drover.toml | tail -n 1
nginx_id=$("$DROVER" --store "$STORE" run nginx:1.22)
for _ in $(seq 50); do
  busybox wget -qO- http://127.0.0.1:8080/healthz >/dev/null 2>&1 && break
  sleep 0.1
done
printf 'nginx answers on :8080: '
busybox wget -qO- http://127.0.0.1:8080/ | grep -o '<p>.*</p>'
"$DROVER" --store "$STORE" rm -f "$nginx_id" >/dev/null

cat <<MSG

built hello:1.0 = $digest and deployed it as service 'hello' (3 replicas).
  roll out a change:  edit examples/hello/fleet.toml (say, GREETING) or rebuild the image, then
                      $DROVER --store $STORE apply -f examples/hello/fleet.toml
  see it:             $DROVER --store $STORE status
                      $DROVER --store $STORE releases hello
  roll it back:       $DROVER --store $STORE rollback hello
  keep it converged:  $DROVER --store $STORE serve    (heals, proxies 127.0.0.1:8080, replaces drift)
  the audit trail:    $DROVER --store $STORE audit    (and: audit verify, audit export)
  the trust chain:    $DROVER --store $STORE trace <instance>    policy show    verify hello:1.0
MSG
