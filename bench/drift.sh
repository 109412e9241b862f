#!/usr/bin/env bash
# Drift-scan benchmark: drover's full-content scan of an unpacked image root
# against its baseline, compared with AIDE --check, sha256sum and b3sum on
# the very same files. See bench/README.md.
#
#   bench/drift.sh                  # large tree (20k files, 600 MB), ~3 min
#   BENCH_QUICK=1 bench/drift.sh    # tiny tree, 1 run each: smoke test
#   DROVER=/path/to/drover bench/drift.sh   # use an existing binary
#
# Knobs (environment):
#   BENCH_DIR     trees, work dirs, results           [/var/tmp/drover-bench]
#   GEN_TREE      tree generator          [<repo>/../shared/bench/gen_tree.sh]
#   BENCH_QUICK=1 tiny tree, 1 run each, targets not enforced
#   BENCH_TREE    input tree: large, small or tiny         [large; quick: tiny]
#   DROVER        drover binary to time     [builds target/release/drover]
#   BENCH_RUNS    timed runs of the fast cases (drover, b3sum)  [10; quick: 1]
#   BENCH_RUNS_SLOW  timed runs of AIDE and sha256sum           [5; quick: 1]
#   BENCH_WARMUP  warm-up runs per case                          [1; quick: 0]
#   BENCH_KEEP=1  keep the work dir (store, unpacked root, AIDE database)
#   BENCH_STRICT=1  exit 1 if a target fails (never in quick mode)
#
# Every timed run starts from a warm page cache: the root is read once
# (tar | cat) right before it.

# The single-quoted hyperfine commands expand $ROOT, $DROVER, ... in
# hyperfine's own shell, on purpose:
# shellcheck disable=SC2016
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/drover-bench}
GEN_TREE=${GEN_TREE:-$REPO/../shared/bench/gen_tree.sh}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  VARIANT=${BENCH_TREE:-tiny} RUNS=${BENCH_RUNS:-1} RUNS_SLOW=${BENCH_RUNS_SLOW:-1} WARMUP=${BENCH_WARMUP:-0}
else
  VARIANT=${BENCH_TREE:-large} RUNS=${BENCH_RUNS:-10} RUNS_SLOW=${BENCH_RUNS_SLOW:-5} WARMUP=${BENCH_WARMUP:-1}
fi
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd) # absolute: hyperfine's shells use it too
TREE=$BENCH_DIR/$VARIANT
W= # the work dir, once made

say() { printf '\n== %s\n' "$*"; }
die() { echo "bench/drift.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

# Read a tree so the timed run finds it in the page cache. (`tar cf /dev/null`
# would not do: GNU tar notices /dev/null and skips reading file contents.)
warm() { tar -C "$1" -cf - . | cat >/dev/null; }

# Other benchmarks (bench/build.sh) wait ~65 s after large deletions before
# timing file creation; tell them about ours.
mark_busy() { printf '%(%s)T\n' -1 >"$BENCH_DIR/.last-busy"; }

on_exit() {
  local rc=$?
  if [[ -n $W && -d $W ]]; then
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
      echo "kept work dir $W" >&2
    else
      rm -rf "$W"
      mark_busy
    fi
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM # so that on_exit runs on Ctrl-C too

# CPU use of the whole machine over 2 s, in percent (see bench/runtime.sh:
# the load average of these VMs is no test of idleness).

# ---------------------------------------------------------------------------
say "setup"
((EUID == 0)) || die "run as root: unpacking an image root sets owners and setuid bits"
bash "$REPO/scripts/setup.sh"
for t in hyperfine aide b3sum sha256sum python3 tar; do
  command -v "$t" >/dev/null || die "$t not found"
done

ensure_tree
build_drover
quick_note

STAMP=$(date +%Y%m%d-%H%M%S)
W=$BENCH_DIR/drift-work-$STAMP
RES=$BENCH_DIR/results/$STAMP-drift-$VARIANT
mkdir -p "$W/ctx" "$W/aide" "$RES"
S=$W/store
for old in "$BENCH_DIR"/drift-work-*; do
  [[ $old == "$W" || ! -d $old ]] && continue
  echo "removing leftover $old"
  rm -rf "$old"
done

# ---------------------------------------------------------------------------
say "untimed preparation"
# The image: one copy layer of the whole tree (as in bench/build.sh). The
# build context is the tree's folder, so the definition sits beside it.
DEF=$BENCH_DIR/bench-drift-$VARIANT.toml
cat >"$DEF" <<EOF
# written by bench/drift.sh
[image]
name = "bench"
tag = "drift-$VARIANT"

[[layer]]
kind = "copy"
src = "$VARIANT"
dest = "/"
EOF
IMAGE=bench:drift-$VARIANT
DIGEST=$("$DROVER" --init --store "$S" build -f "$DEF" | tail -n 1) || die "drover build of $DEF failed"
[[ $DIGEST == sha256:* ]] || die "drover build printed '$DIGEST', not a digest"
echo "image: $IMAGE = $DIGEST"
# The first scan unpacks the root (verified against the baseline) and must
# find no drift; its JSON report says what a scan covers.
"$DROVER" --init --store "$S" --json drift --image "$IMAGE" >"$W/first-scan.json" ||
  die "the first drover drift of a fresh root failed or found drift: $(head -c 2000 "$W/first-scan.json")"
ROOT=$S/rootfs/${DIGEST#sha256:}
[[ -d $ROOT ]] || die "no unpacked root at $ROOT"
echo "unpacked root: $ROOT"

# Every peer works on the same files: the unpacked root.
read -r NFILES NBYTES < <(find "$ROOT" -type f -printf '%s\n' | awk '{ n++; b += $1 } END { print n, b }')
read -r NENTRIES < <(find "$ROOT" -mindepth 1 | wc -l)
read -r D_CHECKED D_HASHED < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["files_checked"], r["bytes_hashed"])' "$W/first-scan.json")
echo "root: $NENTRIES entries, $NFILES regular files, $NBYTES bytes"
echo "drover checks $D_CHECKED entries and hashes $D_HASHED bytes (hard links are hashed once)"

# AIDE: the same root, the same attributes drover checks (permissions,
# owner, group, file type, size, symlink target, sha256), no other hash.
aide_conf() { # $1 = workers
  cat <<EOF
database_in=file:$W/aide/aide.db
database_out=file:$W/aide/aide.db.new
gzip_dbout=no
report_url=stdout
num_workers=$1
Drift = p+u+g+ftype+s+l+sha256
$ROOT Drift
EOF
}
aide_conf 1 >"$W/aide/aide-1.conf"
aide_conf 2 >"$W/aide/aide-2.conf"
aide --init -c "$W/aide/aide-2.conf" >"$W/aide/init.log" 2>&1 ||
  die "aide --init failed: $(tail -n 5 "$W/aide/init.log")"
mv "$W/aide/aide.db.new" "$W/aide/aide.db"
aide --check -c "$W/aide/aide-2.conf" >"$W/aide/check.log" 2>&1 ||
  die "aide --check of the unchanged root failed or found changes (exit $?): $(tail -n 20 "$W/aide/check.log")"
AIDE_ENTRIES=$(grep -o 'Number of entries:[[:space:]]*[0-9]*' "$W/aide/check.log" | grep -o '[0-9]*$' || echo '?')
echo "aide: database of $AIDE_ENTRIES entries; --check of the unchanged root is clean"

export ROOT DROVER S IMAGE W
export -f warm

{
  echo "date: $(date -u +%FT%TZ)"
  echo "variant: $VARIANT ($TREE), image $IMAGE = $DIGEST"
  echo "root: $ROOT: $NENTRIES entries, $NFILES regular files, $NBYTES bytes"
  echo "drover scan covers: $D_CHECKED entries, $D_HASHED bytes hashed"
  echo "aide database: $AIDE_ENTRIES entries"
  echo "runs: fast=$RUNS slow=$RUNS_SLOW warmup=$WARMUP; warm page cache (tar | cat of the root before every run)"
  echo "host: $(nproc) cpus, $(free -g | awk '/Mem:/ { print $2 }') GiB, kernel $(uname -r), sha-ni: $(grep -q -w sha_ni /proc/cpuinfo && echo yes || echo no)"
  echo "drover: $DROVER (built here: $BUILT; $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo "aide: $(aide --version 2>&1 | head -n 1); b3sum: $(b3sum --version); $(sha256sum --version | head -n 1); hyperfine: $(hyperfine --version | cut -d' ' -f2)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RES/conditions.txt"
busy=$(cpu_busy)
echo "cpu busy in the 2 s before the first case: $busy%" | tee -a "$RES/conditions.txt"
if ((busy >= 10)); then
  echo "warning: the machine is not idle ($busy% cpu busy); figures will be inflated" |
    tee -a "$RES/conditions.txt" >&2
fi

# bench NAME RUNS COMMAND: one hyperfine case, warm cache, JSON into $RES.
bench() {
  say "$1"
  hyperfine -S bash --runs "$2" --warmup "$WARMUP" --prepare 'warm "$ROOT"' \
    --command-name "$1" --export-json "$RES/$1.json" "$3" ||
    die "case $1 failed (hyperfine says how above)"
}

# ---------------------------------------------------------------------------
bench drover "$RUNS" '"$DROVER" --init --store "$S" drift --image "$IMAGE" >/dev/null'
bench drover-1thread "$RUNS" '"$DROVER" --init --store "$S" drift --image "$IMAGE" --threads 1 >/dev/null'
bench aide-2workers "$RUNS_SLOW" 'aide --check -c "$W/aide/aide-2.conf" >/dev/null'
bench aide-1worker "$RUNS_SLOW" 'aide --check -c "$W/aide/aide-1.conf" >/dev/null'
bench sha256sum-P2 "$RUNS_SLOW" 'find "$ROOT" -type f -print0 | xargs -0 -P2 -n 1000 sha256sum >/dev/null'
bench sha256sum "$RUNS_SLOW" 'find "$ROOT" -type f -print0 | xargs -0 sha256sum >/dev/null'
bench b3sum-P2 "$RUNS" 'find "$ROOT" -type f -print0 | xargs -0 -P2 -n 1000 b3sum --num-threads 1 >/dev/null'
bench b3sum "$RUNS" 'find "$ROOT" -type f -print0 | xargs -0 b3sum >/dev/null'

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RES/conditions.txt"

CASES=(drover drover-1thread aide-2workers aide-1worker sha256sum-P2 sha256sum b3sum-P2 b3sum)
require_figures "$RES" "${CASES[@]}"

# ---------------------------------------------------------------------------
say "results ($VARIANT tree, warm page cache, medians)"
python3 - "$RES" "$VARIANT" <<'PY' | tee "$RES/summary.md"
import json, os, sys

res, variant = sys.argv[1], sys.argv[2]

def stats(name):
    p = os.path.join(res, name + ".json")
    return json.load(open(p))["results"][0] if os.path.exists(p) else None

def fmt(t):
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.2f} s"

CASES = [
    ("drover", "drover drift --image (2 threads): type, mode, owner, size, link, sha256 of every file"),
    ("drover-1thread", "drover drift --image --threads 1"),
    ("aide-2workers", "aide --check, num_workers=2 (p+u+g+ftype+s+l+sha256)"),
    ("aide-1worker", "aide --check, num_workers=1 (AIDE's default)"),
    ("sha256sum-P2", r"find -type f \| xargs -P2 -n 1000 sha256sum (content only)"),
    ("sha256sum", r"find -type f \| xargs sha256sum"),
    ("b3sum-P2", r"find -type f \| xargs -P2 -n 1000 b3sum --num-threads 1 (BLAKE3, content only)"),
    ("b3sum", r"find -type f \| xargs b3sum (its default threads)"),
]
d = stats("drover")["median"]
print(f"All on the same unpacked root ({variant} tree), warm page cache.\n")
print("| case | what runs | median | min | max | runs | vs drover |")
print("|---|---|---|---|---|---|---|")
for name, what in CASES:
    s = stats(name)
    if not s:
        sys.exit(f"no figure for {name}")
    m = s["median"]
    ratio = "—" if name == "drover" else (f"drover {m / d:.1f}× faster" if m >= d else f"drover {d / m:.1f}× slower")
    print(f"| {name} | {what} | {fmt(m)} | {fmt(s['min'])} | {fmt(s['max'])} | {len(s['times'])} | {ratio} |")

aide = min(stats("aide-2workers")["median"], stats("aide-1worker")["median"])
checks = [
    ("≥ 5× faster than aide --check (its faster configuration)", aide / d >= 5, f"{aide / d:.1f}×"),
    ("full-content scan < 0.6 s warm", d < 0.6, fmt(d)),
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
