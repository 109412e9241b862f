#!/usr/bin/env bash
# Deploy benchmark: roll 20 instances of examples/hello from release N to
# N+1 (rolling, health-gated by real HTTP checks), then time an automatic
# rollback (a release whose health check fails). Prints drover's own time per
# instance beside the time spent waiting for health checks. See
# bench/README.md.
#
#   bench/deploy.sh                 # 3 rounds
#   BENCH_QUICK=1 bench/deploy.sh   # 1 round
#
# Knobs (environment):
#   BENCH_DIR     work dir                                  [/var/tmp/drover-bench]
#   DROVER        use this drover binary instead of building target/release/drover
#   REPLICAS      instances per release                     [20]
#   SURGES        rolling max_surge values to run, in turn  ["1 5": one at a
#                 time, and 25% of 20 (Kubernetes' default)]
#   BENCH_ROUNDS  rounds (each: one roll-out, one rollback)  [3; quick: 1]
#   BENCH_KEEP=1  keep the work dir
#   BENCH_STRICT=1  exit 1 if the target fails
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/drover-bench}
REPLICAS=${REPLICAS:-20}
SURGES=${SURGES:-1 5}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then ROUNDS=${BENCH_ROUNDS:-1}; else ROUNDS=${BENCH_ROUNDS:-3}; fi
TARGET_MS=20

say() { printf '\n== %s\n' "$*"; }
die() { echo "bench/deploy.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (instances need namespaces and cgroups)"
command -v python3 >/dev/null || die "python3 is needed to read drover's JSON"

if [[ -z ${DROVER:-} ]]; then
  say "building drover (release)"
  (cd "$REPO" && cargo build --release --quiet)
  DROVER=$REPO/target/release/drover
fi
[[ -x $DROVER ]] || die "no drover binary at $DROVER"

mkdir -p "$BENCH_DIR"
W=$(mktemp -d "$BENCH_DIR/deploy-work-XXXXXX")
STORE=$W/store
d() { "$DROVER" --store "$STORE" "$@"; }
cleanup() {
  # Remove every instance this run made, whatever state it is in.
  if [[ -d $STORE ]]; then
    ids=$(d --json ps 2>/dev/null | python3 -c 'import json,sys; print(" ".join(i["id"] for i in json.load(sys.stdin)))' || true)
    # shellcheck disable=SC2086  # one word per id
    if [[ -n $ids ]]; then d rm --force $ids >/dev/null 2>&1 || true; fi
  fi
  [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$W"
}
trap cleanup EXIT

say "image: examples/hello (busybox httpd)"
bash "$REPO/examples/hello/make-rootfs.sh" >/dev/null
d build -f "$REPO/examples/hello/drover.toml" >/dev/null 2>&1

# $1: GREETING (a new value makes a new release), $2: health path; uses $MAX_SURGE.
fleet() {
  cat >"$W/fleet.toml" <<EOF
[service.hello]
image = "hello:1.0"
replicas = $REPLICAS
strategy = "rolling"
max_surge = $MAX_SURGE
max_unavailable = 0
env = { GREETING = "$1" }

[service.hello.health]
kind = "http"
path = "$2"
interval = "500ms"
timeout = "500ms"
retries = 2
deadline = "30s"
EOF
}

# Runs `drover apply` and prints "seconds health_wait started stopped failed".
apply() {
  d --json apply -f "$W/fleet.toml" 2>"$W/apply.err" | python3 -c '
import json, sys
r = json.load(sys.stdin)[0]
print(r["seconds"], r["health_wait_seconds"], r["started"], r["stopped"], r["failed"] or 0)'
}

{
  echo "drover: $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "kernel: $(uname -r); cpus: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "replicas: $REPLICAS; max_surge: $SURGES; rounds: $ROUNDS"
} | tee "$W/conditions.txt"

say "initial deploy of $REPLICAS instances (not timed)"
MAX_SURGE=1
fleet "hello" "/"
apply >/dev/null

rows=()
for MAX_SURGE in $SURGES; do
  for round in $(seq "$ROUNDS"); do
    say "max_surge $MAX_SURGE, round $round: roll $REPLICAS instances to a new release"
    fleet "s$MAX_SURGE-round-$round" "/"
    read -r secs wait started stopped failed < <(apply)
    [[ $failed == 0 ]] || die "the roll-out failed: $(cat "$W/apply.err")"
    rows+=("rollout-$MAX_SURGE $secs $wait $started $stopped")
    echo "  $secs s total, $wait s waiting for health checks, $started started, $stopped stopped"

    say "max_surge $MAX_SURGE, round $round: a release whose health check fails, rolled back automatically"
    fleet "s$MAX_SURGE-broken-$round" "/missing"
    read -r secs wait started stopped failed < <(apply || true)
    [[ $failed != 0 ]] || die "the broken release did not fail"
    rows+=("rollback-$MAX_SURGE $secs $wait $started $stopped")
    echo "  $secs s total, $wait s waiting for health checks, $started started, $stopped stopped"
  done
done

say "summary (medians over $ROUNDS round(s))"
printf '%s\n' "${rows[@]}" | python3 -c '
import sys, statistics
target = '"$TARGET_MS"'
rows = {}
for line in sys.stdin:
    kind, secs, wait, started, stopped = line.split()
    rows.setdefault(kind, []).append((float(secs), float(wait), int(started), int(stopped)))
print("| case | total | waiting for health | drover (rest) | instances replaced | drover per instance | target |")
print("|---|---|---|---|---|---|---|")
ok = True
def label(kind):
    what, surge = kind.rsplit("-", 1)
    name = "roll-out N to N+1" if what == "rollout" else "failed release, automatic rollback"
    return f"{name}, max_surge {surge}"
for kind in rows:
    r = rows[kind]
    total = statistics.median(x[0] for x in r)
    wait = statistics.median(x[1] for x in r)
    moved = statistics.median(max(x[2], x[3]) for x in r)
    own = total - wait
    per = 1000 * own / max(moved, 1)
    met = per < target
    ok &= met
    verdict = "met" if met else "MISSED"
    print(f"| {label(kind)} | {total:.2f} s | {wait:.2f} s | {own:.2f} s | {moved:.0f} | {per:.1f} ms | < {target} ms: {verdict} |")
sys.exit(0 if ok else 3)
' | tee "$W/summary.md" || status=$?
if [[ ${status:-0} == 3 && ${BENCH_STRICT:-0} == 1 ]]; then exit 1; fi
