#!/usr/bin/env bash
# Registry benchmark: drover push / pull against skopeo copy, both talking to
# a loopback docker-registry (distribution 2.8), on the image of the large
# synthetic tree (gzip). See bench/README.md.
#
#   bench/registry.sh                  # large tree (20k files, 600 MB), ~3 min
#   BENCH_QUICK=1 bench/registry.sh    # tiny tree, 1 run each: smoke test
#   DROVER=/path/to/drover bench/registry.sh   # use an existing binary
#
# Knobs (environment):
#   BENCH_DIR     trees, work dirs, results           [/var/tmp/drover-bench]
#   GEN_TREE      tree generator          [<repo>/../shared/bench/gen_tree.sh]
#   BENCH_QUICK=1 tiny tree, 1 run each, targets not enforced
#   BENCH_TREE    input tree: large, small or tiny         [large; quick: tiny]
#   DROVER        drover binary to time     [builds target/release/drover]
#   BENCH_RUNS    timed runs of push and pull, each tool   [5; quick: 1]
#   BENCH_RUNS_FAST  timed runs of the no-change re-push    [10; quick: 1]
#   BENCH_WARMUP  warm-up runs per case                      [1; quick: 0]
#   BENCH_KEEP=1  keep the work dir (store, layouts, registry storage, pulls)
#   BENCH_STRICT=1  exit 1 if a target fails (never in quick mode)
#
# Every push is a cold push: the registry is restarted on empty storage
# before each timed run, and each run pushes to a new repository. Every pull
# goes to a fresh, empty destination. Inputs (the blobs to push) are read
# before each run: warm page cache.

# The single-quoted hyperfine commands expand $DROVER, $W, ... in
# hyperfine's own shell, on purpose:
# shellcheck disable=SC2016
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/drover-bench}
GEN_TREE=${GEN_TREE:-$REPO/../shared/bench/gen_tree.sh}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  VARIANT=${BENCH_TREE:-tiny} RUNS=${BENCH_RUNS:-1} RUNS_FAST=${BENCH_RUNS_FAST:-1} WARMUP=${BENCH_WARMUP:-0}
else
  VARIANT=${BENCH_TREE:-large} RUNS=${BENCH_RUNS:-5} RUNS_FAST=${BENCH_RUNS_FAST:-10} WARMUP=${BENCH_WARMUP:-1}
fi
REGISTRY_BIN=${REGISTRY_BIN:-/usr/bin/docker-registry}
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd) # absolute: hyperfine's shells use it too
TREE=$BENCH_DIR/$VARIANT
W= # the work dir, once made

say() { printf '\n== %s\n' "$*"; }
die() { echo "bench/registry.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

# ---------------------------------------------------------------------------
# Helpers, exported: hyperfine runs --prepare and the timed commands in fresh
# `bash -c` shells.

# Read files so the timed run finds them in the page cache.
warm() { find "$@" -type f -exec cat {} + >/dev/null; }
# A counter shared by all cases: each run gets a new repository / destination.
next_run() {
  local n=0
  [[ -f $W/run ]] && n=$(<"$W/run")
  echo $((n + 1)) >"$W/run"
}
run_no() { cat "$W/run"; }

# The loopback registry: one process, its pid in $W/reg/pid, detached from
# hyperfine's shells (setsid, no inherited stdout) so they do not wait for it.
reg_stop() {
  local pid i
  [[ -f $W/reg/pid ]] || return 0
  pid=$(<"$W/reg/pid")
  rm -f "$W/reg/pid"
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
  kill -9 "$pid" 2>/dev/null || true
}
reg_start() {
  local i
  setsid "$REGISTRY_BIN" serve "$W/reg/config.yml" >>"$W/reg/log" 2>&1 </dev/null &
  echo $! >"$W/reg/pid"
  for ((i = 0; i < 300; i++)); do
    curl -fsS -o /dev/null "http://$REG/v2/" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "registry at $REG never came up: $(tail -n 5 "$W/reg/log")" >&2
  return 1
}
# Stop the registry, empty its storage, start it again: the next push is cold.
reg_fresh() {
  reg_stop
  rm -rf "$W/reg/data"
  mkdir -p "$W/reg/data"
  reg_start
}

# The timed commands.
drover_push() { # a new repository on an empty registry
  "$DROVER" --init --store "$S" push "$IMAGE" "$REG/bench/push-$(run_no):$VARIANT" --insecure >/dev/null
}
skopeo_push() {
  skopeo copy --quiet --dest-tls-verify=false "oci:$W/oci:$VARIANT" \
    "docker://$REG/bench/push-$(run_no):$VARIANT" >/dev/null
}
drover_pull() { # into a fresh, empty store
  "$DROVER" --init --store "$W/pull-drover/$(run_no)" pull "$REG/bench/pull:$VARIANT" --insecure >/dev/null
}
skopeo_pull() { # into a fresh OCI layout
  skopeo copy --quiet --src-tls-verify=false "docker://$REG/bench/pull:$VARIANT" \
    "oci:$W/pull-skopeo/$(run_no):$VARIANT" >/dev/null
}
drover_repush() { # everything is already there
  "$DROVER" --init --store "$S" push "$IMAGE" "$REG/bench/pull:$VARIANT" --insecure >/dev/null
}
# Before each pull: drop the previous run's output (a handful of files) and
# flush dirty pages, so no run pays for the previous one's writeback.
pull_prepare() { # $1 = pull-drover | pull-skopeo
  rm -rf "${W:?}/$1"/*
  sync
  next_run
}

on_exit() {
  local rc=$?
  [[ -n $W && -d $W ]] && reg_stop
  if [[ -n $W && -d $W ]]; then
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
      echo "kept work dir $W" >&2
    else
      rm -rf "$W"
    fi
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM # so that on_exit runs on Ctrl-C too

# CPU use of the whole machine over 2 s, in percent (see bench/drift.sh).

# ---------------------------------------------------------------------------
say "setup"
bash "$REPO/scripts/setup.sh"
for t in hyperfine skopeo curl python3 setsid "$REGISTRY_BIN"; do
  command -v "$t" >/dev/null || die "$t not found"
done

ensure_tree
build_drover
quick_note

STAMP=$(date +%Y%m%d-%H%M%S)
W=$BENCH_DIR/registry-work-$STAMP
RES=$BENCH_DIR/results/$STAMP-registry-$VARIANT
mkdir -p "$W/reg/data" "$W/pull-drover" "$W/pull-skopeo" "$RES"
S=$W/store
for old in "$BENCH_DIR"/registry-work-*; do
  [[ $old == "$W" || ! -d $old ]] && continue
  echo "removing leftover $old"
  rm -rf "$old"
done

# ---------------------------------------------------------------------------
say "untimed preparation"
# The image: one copy layer of the whole tree, gzip (as in bench/build.sh).
DEF=$BENCH_DIR/bench-registry-$VARIANT.toml
cat >"$DEF" <<EOF
# written by bench/registry.sh
[image]
name = "bench"
tag = "$VARIANT"

[[layer]]
kind = "copy"
src = "$VARIANT"
dest = "/"
EOF
IMAGE=bench:$VARIANT
DIGEST=$("$DROVER" --init --store "$S" build -f "$DEF" --compression gzip | tail -n 1) ||
  die "drover build of $DEF failed"
[[ $DIGEST == sha256:* ]] || die "drover build printed '$DIGEST', not a digest"
echo "image: $IMAGE = $DIGEST"
# The same image as an OCI layout of its own for skopeo: skopeo copies the
# blobs as they are (gzip layers, no recompression), so both tools move the
# very same bytes. The source is drover's store itself, an OCI image layout.
skopeo copy --quiet "oci:$S:$IMAGE" "oci:$W/oci:$VARIANT" ||
  skopeo copy --quiet "oci:$S:$VARIANT" "oci:$W/oci:$VARIANT" ||
  die "skopeo cannot read drover's store $S as an OCI layout"
SK_DIGEST=$(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))["manifests"]
print(m[0]["digest"])' "$W/oci/index.json")
[[ $SK_DIGEST == "$DIGEST" ]] ||
  die "skopeo's copy of the image has manifest $SK_DIGEST, drover's is $DIGEST: not the same bytes"
read -r NBLOBS NBYTES < <(python3 -c '
import json, os, sys
d = sys.argv[1]
m = json.load(open(os.path.join(d, "blobs/sha256", sys.argv[2].split(":")[1])))
blobs = [m["config"]] + m["layers"]
print(len(blobs), sum(b["size"] for b in blobs))' "$W/oci" "$DIGEST")
echo "image blobs: $NBLOBS (config + layers), $NBYTES bytes; manifest identical in both layouts"

# The registry: a free loopback port, storage in the work dir, no cache.
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
cat >"$W/reg/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $W/reg/data
  delete:
    enabled: true
http:
  addr: $REG
EOF
export BENCH_DIR TREE W S REG DROVER IMAGE VARIANT REGISTRY_BIN
export -f warm next_run run_no reg_stop reg_start reg_fresh \
  drover_push skopeo_push drover_pull skopeo_pull drover_repush pull_prepare
reg_fresh

# One push of each kind, untimed, to check they work and record what drover
# sends (blobs, bytes, referrers such as the baseline).
next_run
"$DROVER" --init --store "$S" --json push "$IMAGE" "$REG/bench/check-drover:$VARIANT" --insecure >"$RES/push-report.json"
skopeo copy --quiet --dest-tls-verify=false "oci:$W/oci:$VARIANT" "docker://$REG/bench/check-skopeo:$VARIANT"
echo "drover push report: $(tr -d '\n ' <"$RES/push-report.json")"

{
  echo "date: $(date -u +%FT%TZ)"
  echo "variant: $VARIANT ($TREE), image $IMAGE = $DIGEST, $NBLOBS blobs, $NBYTES bytes (gzip)"
  echo "registry: $("$REGISTRY_BIN" --version 2>&1 | head -n 1), filesystem storage in $W/reg/data, http on $REG"
  echo "runs: push/pull=$RUNS re-push=$RUNS_FAST warmup=$WARMUP; warm page cache for the pushed blobs"
  echo "host: $(nproc) cpus, $(free -g | awk '/Mem:/ { print $2 }') GiB, kernel $(uname -r)"
  echo "drover: $DROVER (built here: $BUILT; $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo "skopeo: $(skopeo --version | cut -d' ' -f3); hyperfine: $(hyperfine --version | cut -d' ' -f2)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RES/conditions.txt"
busy=$(cpu_busy)
echo "cpu busy in the 2 s before the first case: $busy%" | tee -a "$RES/conditions.txt"
if ((busy >= 10)); then
  echo "warning: the machine is not idle ($busy% cpu busy); figures will be inflated" |
    tee -a "$RES/conditions.txt" >&2
fi

# bench NAME RUNS PREPARE COMMAND: one hyperfine case, JSON into $RES.
bench() {
  say "$1"
  hyperfine -S bash --runs "$2" --warmup "$WARMUP" --prepare "$3" \
    --command-name "$1" --export-json "$RES/$1.json" "$4" ||
    die "case $1 failed (hyperfine says how above)"
}

# ---------------------------------------------------------------------------
# Push: a registry restarted on empty storage and a new repository per run.
bench drover-push "$RUNS" 'reg_fresh; next_run; warm "$S/blobs"' 'drover_push'
bench skopeo-push "$RUNS" 'reg_fresh; next_run; warm "$W/oci"' 'skopeo_push'

# Pull: the image pushed once (by drover, with its referrers), pulled into a
# fresh destination every run.
reg_fresh
"$DROVER" --init --store "$S" push "$IMAGE" "$REG/bench/pull:$VARIANT" --insecure >/dev/null
# One pull of each kind, untimed, to check the digest and record the report.
next_run
"$DROVER" --init --store "$W/pull-drover/check" --json pull "$REG/bench/pull:$VARIANT" --insecure >"$RES/pull-report.json"
echo "drover pull report: $(tr -d '\n ' <"$RES/pull-report.json")"
grep -q "$DIGEST" "$RES/pull-report.json" || die "drover pulled another digest than $DIGEST"
bench drover-pull "$RUNS" 'pull_prepare pull-drover' 'drover_pull'
bench skopeo-pull "$RUNS" 'pull_prepare pull-skopeo' 'skopeo_pull'
[[ -d $W/pull-skopeo/$(run_no) ]] || die "skopeo pulled nothing"

# Re-push with nothing to send: the image, its blobs and referrers are there.
bench drover-repush "$RUNS_FAST" 'warm "$S/index.json"' 'drover_repush'
reg_stop

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RES/conditions.txt"

CASES=(drover-push skopeo-push drover-pull skopeo-pull drover-repush)
require_figures "$RES" "${CASES[@]}"

# ---------------------------------------------------------------------------
say "results ($VARIANT tree, gzip image of $NBYTES bytes, loopback registry, medians)"
python3 - "$RES" "$VARIANT" <<'PY' | tee "$RES/summary.md"
import json, os, sys

res, variant = sys.argv[1], sys.argv[2]

def stats(name):
    p = os.path.join(res, name + ".json")
    return json.load(open(p))["results"][0] if os.path.exists(p) else None

def fmt(t):
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.2f} s"

CASES = [
    ("drover-push", "drover push (cold: empty registry, new repository)"),
    ("skopeo-push", "skopeo copy oci:LAYOUT docker://… (cold)"),
    ("drover-pull", "drover pull into an empty store"),
    ("skopeo-pull", "skopeo copy docker://… oci:NEWDIR"),
    ("drover-repush", "drover push, nothing changed"),
]
print("| case | what runs | median | min | max | runs |")
print("|---|---|---|---|---|---|")
for name, what in CASES:
    s = stats(name)
    if not s:
        sys.exit(f"no figure for {name}")
    print(f"| {name} | {what} | {fmt(s['median'])} | {fmt(s['min'])} | {fmt(s['max'])} | {len(s['times'])} |")

m = {n: stats(n)["median"] for n, _ in CASES}
push, pull = m["skopeo-push"] / m["drover-push"], m["skopeo-pull"] / m["drover-pull"]
checks = [
    ("push ≥ 1.5× faster than skopeo", push >= 1.5, f"{push:.2f}×"),
    ("pull ≥ 1.5× faster than skopeo", pull >= 1.5, f"{pull:.2f}×"),
    ("no-change re-push < 0.2 s", m["drover-repush"] < 0.2, fmt(m["drover-repush"])),
]
fails = 0
print("\n| target | measured | result |")
print("|---|---|---|")
for what, ok, got in checks:
    fails += not ok
    print(f"| {what} | {got} | {'PASS' if ok else 'FAIL'} |")
if variant != "large":
    print(f"\n({variant} tree, smoke test: the targets are meant for the large tree)")
open(os.path.join(res, "fails"), "w").write(str(fails))
PY
finish "$RES" ${#CASES[@]}
