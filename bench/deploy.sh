#!/usr/bin/env bash
# Deploy benchmark: roll 20 instances of examples/hello from release N to
# N+1 (rolling, health-gated by real HTTP checks), then time an automatic
# rollback (a release whose health check fails). Prints drover's own time per
# instance beside the time spent waiting for health checks. See
# bench/README.md.
#
#   bench/deploy.sh                 # 3 rounds of 20 instances
#   BENCH_QUICK=1 bench/deploy.sh   # smoke test: 1 round of 5 instances
#   DROVER=/path/to/drover bench/deploy.sh   # use an existing binary
#
# Knobs (environment):
#   BENCH_DIR     work dir; results go to $BENCH_DIR/results/  [/var/tmp/drover-bench]
#   DROVER        use this drover binary instead of building target/release/drover
#   REPLICAS      instances per release                     [20; quick: 5]
#   SURGES        rolling max_surge values to run, in turn  ["1 5": one at a
#                 time, and 25% of 20 (Kubernetes' default)]
#   BENCH_ROUNDS  rounds (each: one roll-out, one rollback)  [3; quick: 1]
#   BENCH_KEEP=1  keep the work dir
#   BENCH_STRICT=1  exit 1 if the target fails (never in quick mode)
#
# The image is built with --sign (the store's host key): the default deploy
# policy takes only signed images with drover's provenance.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/drover-bench}
SURGES=${SURGES:-1 5}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  REPLICAS=${REPLICAS:-5} ROUNDS=${BENCH_ROUNDS:-1}
else
  REPLICAS=${REPLICAS:-20} ROUNDS=${BENCH_ROUNDS:-3}
fi
TARGET_MS=20

say() { printf '\n== %s\n' "$*"; }
die() { echo "bench/deploy.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

[[ $(id -u) == 0 ]] || die "run as root (instances need namespaces and cgroups)"
command -v python3 >/dev/null || die "python3 is needed to read drover's JSON"

build_drover
quick_note

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
W=$(mktemp -d "$BENCH_DIR/deploy-work-XXXXXX")
RES=$BENCH_DIR/results/$(date +%Y%m%d-%H%M%S)-deploy
mkdir -p "$RES"
STORE=$W/store
d() { "$DROVER" --init --store "$STORE" "$@"; }
cleanup() {
  # Remove every instance this run made, whatever state it is in.
  if [[ -d $STORE ]]; then
    ids=$(d --json ps 2>/dev/null | python3 -c 'import json,sys; print(" ".join(i["id"] for i in json.load(sys.stdin)["items"]))' || true)
    # shellcheck disable=SC2086  # one word per id
    if [[ -n $ids ]]; then d rm --force $ids >/dev/null 2>&1 || true; fi
  fi
  [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$W"
}
trap cleanup EXIT

say "image: examples/hello (busybox httpd), signed with the store's host key"
bash "$REPO/examples/hello/make-rootfs.sh" >/dev/null
DIGEST=$(d build --sign -f "$REPO/examples/hello/drover.toml" 2>"$W/build.err" | tail -n 1) ||
  die "drover build --sign of examples/hello failed: $(tail -n 5 "$W/build.err")"
[[ $DIGEST == sha256:* ]] || die "drover build printed '$DIGEST', not a digest"
d policy check hello:1.0 >"$W/policy.txt" 2>&1 ||
  die "the store's deploy policy refuses hello:1.0: $(cat "$W/policy.txt")"
echo "hello:1.0 = $DIGEST (the deploy policy allows it)"

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

# Runs `drover apply`; $1 = what must happen: "ok" (the release rolls out)
# or "fail" (it fails and is rolled back). Sets SECS WAIT STARTED STOPPED
# FAILED from drover's JSON report, and checks that $REPLICAS instances run
# afterwards either way.
apply() {
  local rc=0 report running
  d --json apply -f "$W/fleet.toml" >"$W/apply.json" 2>"$W/apply.err" || rc=$?
  report=$(python3 - "$W/apply.json" <<'PY'
import json, math, sys
r = json.load(open(sys.argv[1]))["items"][0]
secs, wait = float(r["seconds"]), float(r["health_wait_seconds"])
assert math.isfinite(secs) and secs > 0 and math.isfinite(wait) and wait >= 0, r
print(secs, wait, int(r["started"]), int(r["stopped"]), int(r["failed"] or 0))
PY
  ) || die "drover apply (exit $rc) gave no usable report: $(head -c 1000 "$W/apply.json") $(tail -n 5 "$W/apply.err")"
  read -r SECS WAIT STARTED STOPPED FAILED <<<"$report"
  case $1 in
    ok) [[ $rc == 0 && $FAILED == 0 ]] ||
      die "the roll-out failed (exit $rc, $FAILED failed): $(tail -n 5 "$W/apply.err")" ;;
    fail) [[ $rc != 0 && $FAILED != 0 ]] ||
      die "the release whose health check fails did not fail (exit $rc, $FAILED failed)" ;;
  esac
  running=$(d --json ps | python3 -c 'import json, sys; print(sum(i["state"] == "running" for i in json.load(sys.stdin)["items"]))') ||
    die "drover ps failed after apply"
  [[ $running == "$REPLICAS" ]] || die "$running instances running after apply, not $REPLICAS"
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "drover: $("$DROVER" --version 2>/dev/null || echo '?') $DROVER (built here: $BUILT; commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo "kernel: $(uname -r); cpus: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "replicas: $REPLICAS; max_surge: $SURGES; rounds: $ROUNDS"
} | tee "$RES/conditions.txt"

say "initial deploy of $REPLICAS instances (not timed)"
MAX_SURGE=1
fleet "hello" "/"
apply ok

printf 'case\tround\tseconds\thealth_wait_seconds\tstarted\tstopped\n' >"$RES/rounds.tsv"
for MAX_SURGE in $SURGES; do
  for round in $(seq "$ROUNDS"); do
    say "max_surge $MAX_SURGE, round $round: roll $REPLICAS instances to a new release"
    fleet "s$MAX_SURGE-round-$round" "/"
    apply ok
    printf 'rollout-%s\t%s\t%s\t%s\t%s\t%s\n' "$MAX_SURGE" "$round" "$SECS" "$WAIT" "$STARTED" "$STOPPED" >>"$RES/rounds.tsv"
    echo "  $SECS s total, $WAIT s waiting for health checks, $STARTED started, $STOPPED stopped"

    say "max_surge $MAX_SURGE, round $round: a release whose health check fails, rolled back automatically"
    fleet "s$MAX_SURGE-broken-$round" "/missing"
    apply fail
    printf 'rollback-%s\t%s\t%s\t%s\t%s\t%s\n' "$MAX_SURGE" "$round" "$SECS" "$WAIT" "$STARTED" "$STOPPED" >>"$RES/rounds.tsv"
    echo "  $SECS s total, $WAIT s waiting for health checks, $STARTED started, $STOPPED stopped"
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RES/conditions.txt"

say "summary (medians over $ROUNDS round(s))"
# shellcheck disable=SC2086  # one argument per max_surge value
python3 - "$RES" "$TARGET_MS" "$REPLICAS" $SURGES <<'PY' | tee "$RES/summary.md"
import csv, os, statistics, sys

res, target, replicas, surges = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
rows = {}
for r in csv.DictReader(open(os.path.join(res, "rounds.tsv")), delimiter="\t"):
    rows.setdefault(r["case"], []).append(r)
missing = [f"{k}-{s}" for s in surges for k in ("rollout", "rollback") if f"{k}-{s}" not in rows]
if not surges or missing:
    sys.exit("no figure for: " + (", ".join(missing) or "any case (SURGES is empty)"))
print("| case | total | waiting for health | drover (rest) | instances replaced | drover per instance | target |")
print("|---|---|---|---|---|---|---|")
fails = 0
for s in surges:
    for kind in ("rollout", "rollback"):
        r = rows[f"{kind}-{s}"]
        total = statistics.median(float(x["seconds"]) for x in r)
        wait = statistics.median(float(x["health_wait_seconds"]) for x in r)
        moved = statistics.median(max(int(x["started"]), int(x["stopped"])) for x in r)
        own = total - wait
        per = 1000 * own / max(moved, 1)
        if kind == "rollout":
            # The target is for roll-outs only; a rollback's fixed costs
            # dominate its per-instance figure.
            met = per < target
            fails += not met
            verdict = f"< {target:g} ms: " + ("met" if met else "MISSED")
            name = f"roll-out of {replicas}, N to N+1, max_surge {s}"
        else:
            verdict = "—"
            name = f"failed release, automatic rollback, max_surge {s}"
        print(f"| {name} | {total:.2f} s | {wait:.2f} s | {own:.2f} s | {moved:.0f} | {per:.1f} ms | {verdict} |")
open(os.path.join(res, "fails"), "w").write(str(fails))
PY
# shellcheck disable=SC2086  # one word per max_surge value
set -- $SURGES
finish "$RES" $((2 * $#))
