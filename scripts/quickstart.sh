#!/usr/bin/env bash
# First run: install prerequisites, build drover, build the example image and
# run it as an instance (read-only root, no capabilities, seccomp).
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

step "building examples/hello into $STORE"
# Progress goes to stderr and shows; stdout's last line is the manifest digest.
out=$("$DROVER" --store "$STORE" build -f examples/hello/drover.toml)
printf '%s\n' "$out"
digest=$(printf '%s\n' "$out" | tail -n 1)
if [[ ! $digest =~ ^sha256:[0-9a-f]{64}$ ]]; then
  echo "quickstart.sh: expected a sha256 digest as the last line of 'drover build', got: $digest" >&2
  exit 1
fi

step "images in the store"
"$DROVER" --store "$STORE" images

PORT=${HELLO_PORT:-8080}
step "running hello:1.0 as instance 'hello' on port $PORT"
# A rerun replaces the previous instance: replace, don't repair.
"$DROVER" --store "$STORE" rm --force hello >/dev/null 2>&1 || true
"$DROVER" --store "$STORE" run --name hello --port "$PORT" hello:1.0
for _ in $(seq 50); do
  page=$(busybox wget -qO- "http://127.0.0.1:$PORT/" 2>/dev/null) && break
  sleep 0.1
done
printf '%s\n' "${page:?hello did not answer on port $PORT}" | grep '<h1>'
"$DROVER" --store "$STORE" ps

cat <<MSG

built hello:1.0 = $digest, running as instance 'hello' on http://127.0.0.1:$PORT/
  inspect the image:  $DROVER --store $STORE inspect hello:1.0
               or:    skopeo inspect oci:$STORE:hello:1.0
  the instance:       $DROVER --store $STORE ps / logs hello / stop hello / rm hello
  the audit trail:    $DROVER --store $STORE audit
MSG
