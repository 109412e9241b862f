#!/usr/bin/env bash
# Build benchmark: drover against buildah, umoci and tar on a synthetic
# application rootfs (../shared/bench/gen_tree.sh). See bench/README.md.
#
#   bench/build.sh                  # large tree (20k files, 600 MB); ~25 min
#   BENCH_QUICK=1 bench/build.sh    # tiny tree, 1 run each: smoke test
#   SKIP_DROVER=1 bench/build.sh    # peers only
#   DROVER=/path/to/drover bench/build.sh   # use an existing binary
#
# Knobs (environment):
#   BENCH_DIR     work dir; trees are made once and kept  [/var/tmp/drover-bench]
#   GEN_TREE      tree generator          [<repo>/../shared/bench/gen_tree.sh]
#   BENCH_TREE    input tree: large, small or tiny         [large; quick: tiny]
#   DROVER        use this drover binary instead of building target/release/drover
#   BENCH_RUNS    timed runs of the slow cases                 [3; quick: 1]
#   BENCH_RUNS_FAST  timed runs of drover no-op / one-file     [10; quick: 1]
#   BENCH_WARMUP  warm-up runs (buildah cases: 0)              [1; quick: 0]
#   BENCH_SETTLE  seconds to wait after large deletions and
#                 buildah runs (see settle below)              [65; quick: 0]
#   BUILDAH_DRIVER  storage driver(s) to try, in order         ["overlay vfs"]
#   BENCH_KEEP=1  keep the work dir (stores, buildah roots) for inspection
#   BENCH_STRICT=1  exit 1 if a target fails (never in quick mode)
#
# All figures are warm-cache: every timed run is preceded by reading its input
# tree, because this machine reclaims pages idle for ~30 s.

# The single-quoted hyperfine commands below expand $TREE, $W, ... in
# hyperfine's own shell, on purpose:
# shellcheck disable=SC2016
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
export LC_ALL=C # stable sort order for picking the file to change

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/drover-bench}
GEN_TREE=${GEN_TREE:-$REPO/../shared/bench/gen_tree.sh}
SKIP_DROVER=${SKIP_DROVER:-0}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  VARIANT=${BENCH_TREE:-tiny} RUNS=${BENCH_RUNS:-1} RUNS_FAST=${BENCH_RUNS_FAST:-1}
  WARMUP=${BENCH_WARMUP:-0} SETTLE=${BENCH_SETTLE:-0}
else
  VARIANT=${BENCH_TREE:-large} RUNS=${BENCH_RUNS:-3} RUNS_FAST=${BENCH_RUNS_FAST:-10}
  WARMUP=${BENCH_WARMUP:-1} SETTLE=${BENCH_SETTLE:-65}
fi
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd) # absolute: hyperfine's shells use it too
TREE=$BENCH_DIR/$VARIANT
W= # the work dir, once made

say() { printf '\n== %s\n' "$*"; }
die() { echo "bench/build.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

# ---------------------------------------------------------------------------
# Helpers. They are exported because hyperfine runs its --prepare and timed
# commands in fresh `bash -c` shells (-S bash).

# Two kinds of recent activity slow down what follows on these machines:
#  - deleting ~20k files: creating ~20k files within a minute of that is 2-7x
#    slower (the filesystem skips recently freed inodes);
#  - a buildah run: a buildah run started within a minute of the previous one
#    is 1.5-2.5x slower even without deletions (no-op rebuild of the large
#    tree: 8.5 s after a 65 s pause, 13.5-24 s back to back; tar|pigz shows
#    no such effect).
# mark_busy records when such activity ended; settle waits until SETTLE
# seconds have passed since then. The timestamp lives in a file because each
# hyperfine command runs in its own shell.
mark_busy() { printf '%(%s)T\n' -1 >"$BENCH_DIR/.last-busy"; }
settle() {
  local last=0 now wait
  [[ -f $BENCH_DIR/.last-busy ]] && last=$(<"$BENCH_DIR/.last-busy")
  printf -v now '%(%s)T' -1
  wait=$((last + SETTLE - now))
  if ((wait > 0)); then
    echo "   (settling: waiting ${wait}s after a large deletion or buildah run)" >&2
    sleep "$wait"
  fi
}
# Read a tree so the timed run finds it in the page cache. (`tar cf /dev/null`
# would not do: GNU tar notices /dev/null and skips reading file contents.)
warm() { tar -C "$1" -cf - . | cat >/dev/null; }
# A counter shared by all cases: each cold run gets its own fresh output dir
# ($W/<case>/<n>), and each one-file change appends a different line.
next_run() {
  local n=0
  [[ -f $W/run ]] && n=$(<"$W/run")
  echo $((n + 1)) >"$W/run"
}
run_no() { cat "$W/run"; }
# buildah with a private store: nothing touches /var/lib/containers, and
# cleaning up is removing a directory.
bh() {
  local dir=$1
  shift
  buildah --root "$dir/root" --runroot "$dir/run" --storage-driver "${BUILDAH_DRIVER:-overlay}" "$@"
}
# Append one line to the chosen mid-tree file: a real one-file change per run.
change_one_file() {
  next_run
  printf 'drover bench change %s\n' "$(run_no)" >>"$TREE/$VICTIM"
}

# The timed commands.
drover_cold() { # $1 = gzip|zstd; a fresh, empty store each run
  "$DROVER" --init --store "$W/drover-$1/$(run_no)" build -f "$DEF" --compression "$1" >/dev/null
}
drover_rebuild() { # same store every time (no-op and one-file cases)
  "$DROVER" --init --store "$W/drover-inc/store" build -f "$DEF" --compression gzip >/dev/null
}
# Each buildah case ends with mark_busy (see settle); buildah build also
# deletes its working container, the whole tree, when it is not a cache hit.
buildah_commit_cold() { # from scratch + copy + commit to an OCI layout, gzip
  local r ctr
  r=$W/bh-commit/$(run_no)
  ctr=$(bh "$r" from scratch)
  bh "$r" copy --quiet "$ctr" "$TREE" / >/dev/null
  bh "$r" commit --quiet --timestamp 0 --disable-compression=false "$ctr" "oci:$r/oci:img" >/dev/null
  mark_busy
}
buildah_build() { # $1 = buildah dir; `buildah build --layers` of the tree
  bh "$1" build --quiet --layers --timestamp 0 -f "$CONTAINERFILE" -t localhost/bench:latest "$TREE" >/dev/null
  mark_busy
}

# Unmount what buildah may have left mounted, then delete the work dir.
cleanup_work() {
  local d m
  [[ -n $W && -d $W ]] || return 0
  while IFS= read -r d; do
    bh "$(dirname "$d")" rm --all >/dev/null 2>&1 || true
  done < <(find "$W" -maxdepth 3 -type d -name root)
  while IFS= read -r m; do
    umount -l "$m" 2>/dev/null || true
  done < <(awk -v w="$W/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r)
  rm -rf "$W"
  mark_busy
}

# Put the changed file back as gen_tree made it, so the tree stays the
# deterministic one (also repairs the tree after an interrupted run).
restore_victim() {
  local orig=$BENCH_DIR/victim-$VARIANT.orig path
  [[ -f $orig && -f $orig.path ]] || return 0
  path=$(<"$orig.path")
  cat "$orig" >"$TREE/$path"
  touch -d @1700000000 "$TREE/$path" # gen_tree's fixed mtime
  rm -f "$orig" "$orig.path"
}

on_exit() {
  local rc=$?
  restore_victim || true
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then
    [[ -n $W ]] && echo "kept work dir $W" >&2
  else
    cleanup_work || true
  fi
  exit "$rc"
}

trap on_exit EXIT
trap 'exit 130' INT TERM # so that on_exit runs on Ctrl-C too

export BENCH_DIR TREE SETTLE BUILDAH_ISOLATION=chroot
export -f mark_busy settle warm next_run run_no bh change_one_file \
  drover_cold drover_rebuild buildah_commit_cold buildah_build

# ---------------------------------------------------------------------------
say "setup"
bash "$REPO/scripts/setup.sh"
for t in hyperfine buildah umoci pigz zstd python3 /usr/bin/time; do
  command -v "$t" >/dev/null || die "$t not found"
done
DEF=$BENCH_DIR/bench-$VARIANT.toml
CONTAINERFILE=$BENCH_DIR/Containerfile
export DEF CONTAINERFILE

# The input tree: deterministic, so made once and reused (lib.sh: generated
# beside its final name and renamed, so an interrupted run never leaves half a
# tree). Every mtime is pinned to 1700000000, so anything newer means someone
# edited the shared tree by hand: ensure_tree refuses rather than time a
# different input. First repair the file an interrupted run changed.
if [[ -d $TREE ]]; then restore_victim; fi
ensure_tree
echo "tree: $TREE ($(find "$TREE" -type f | wc -l) files, $(du -sh "$TREE" | cut -f1))"

# drover's definition lives beside the tree (its directory is the build
# context); buildah gets the tree itself as context and this Containerfile.
cat >"$DEF" <<EOF
# written by bench/build.sh
[image]
name = "bench"
tag = "$VARIANT"

[[layer]]
kind = "copy"
src = "$VARIANT"
dest = "/"
EOF
printf 'FROM scratch\nCOPY . /\n' >"$CONTAINERFILE"

if [[ $SKIP_DROVER != 1 ]]; then
  if [[ -z ${DROVER:-} ]]; then
    say "building drover (release)"
    (cd "$REPO" && cargo build --release -p drover)
    DROVER=$REPO/target/release/drover
  fi
  [[ -x $DROVER ]] || die "drover binary $DROVER not found"
  export DROVER
  quick_note
fi

# The file the one-file cases change: the middle one, in path order, of the
# non-empty files under 1 MiB. Its original is saved so it can be restored.
VICTIM=$(cd "$TREE" && find . -type f -size +0 -size -1024k | sort | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }')
VICTIM=${VICTIM#./}
cp "$TREE/$VICTIM" "$BENCH_DIR/victim-$VARIANT.orig"
printf '%s\n' "$VICTIM" >"$BENCH_DIR/victim-$VARIANT.orig.path"
export VICTIM

# Fresh work dir. Every output folder is made now, before old work dirs are
# deleted, so timed writes land in folders that predate the deletions.
STAMP=$(date +%Y%m%d-%H%M%S)
W=$BENCH_DIR/work-$STAMP
RES=$BENCH_DIR/results/$STAMP-$VARIANT
mkdir -p "$RES" "$W"/{drover-gzip,drover-zstd,drover-rss,drover-inc,bh-commit,bh-build,bh-inc,umoci,tar}
export W
for old in "$BENCH_DIR"/work-*; do
  [[ $old == "$W" || ! -d $old ]] && continue
  echo "removing leftover $old"
  (W=$old cleanup_work)
done

# buildah's storage driver: overlay where the kernel allows it, else vfs.
BUILDAH_OK=0
for d in ${BUILDAH_DRIVER:-overlay vfs}; do
  BUILDAH_DRIVER=$d
  p=$W/probe-$d
  mkdir -p "$p/ctx" && echo probe >"$p/ctx/f"
  if ctr=$(bh "$p" from scratch 2>>"$p.log") &&
    bh "$p" copy "$ctr" "$p/ctx" / >>"$p.log" 2>&1 &&
    bh "$p" commit --quiet "$ctr" "oci:$p/oci:probe" >>"$p.log" 2>&1; then
    BUILDAH_OK=1
    break
  fi
  echo "buildah: storage driver $d does not work here:" >&2
  tail -n 3 "$p.log" >&2
done
[[ $BUILDAH_OK == 1 ]] || die "no buildah storage driver works"
export BUILDAH_DRIVER

say "untimed preparation"
# umoci: an empty image unpacked to a bundle, the tree copied into its
# rootfs; the timed part is `umoci repack` (diff + tar + gzip + write).
U=$W/umoci
umoci init --layout "$U/layout"
umoci new --image "$U/layout:empty"
umoci unpack --image "$U/layout:empty" "$U/bundle" >/dev/null
cp -a "$TREE/." "$U/bundle/rootfs/"
# Seed the caches that the no-op and one-file cases rebuild against.
buildah_build "$W/bh-inc"
if [[ $SKIP_DROVER != 1 ]]; then
  SEED_DIGEST=$("$DROVER" --init --store "$W/drover-inc/store" build -f "$DEF" --compression gzip | tail -n 1) ||
    die "drover build of $DEF failed"
  [[ $SEED_DIGEST == sha256:* ]] || die "drover build printed '$SEED_DIGEST', not a digest"
fi

# Conditions, recorded with the results.
{
  echo "date: $(date -u +%FT%TZ)"
  echo "variant: $VARIANT ($TREE)"
  echo "runs: slow=$RUNS fast=$RUNS_FAST warmup=$WARMUP settle=${SETTLE}s; warm page cache"
  echo "host: $(nproc) cpus, $(free -g | awk '/Mem:/ { print $2 }') GiB, kernel $(uname -r)"
  echo "one-file cases append a line to: $VICTIM"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "buildah: $(buildah --version | cut -d' ' -f3) ($BUILDAH_DRIVER driver)"
  echo "umoci: $(umoci --version | cut -d' ' -f3); hyperfine: $(hyperfine --version | cut -d' ' -f2)"
  echo "pigz: $(pigz --version 2>&1); zstd: $(zstd --version | grep -o 'v[0-9.]*')"
  if [[ $SKIP_DROVER != 1 ]]; then
    echo "drover: $("$DROVER" --version 2>/dev/null || echo '?') ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  fi
} | tee "$RES/conditions.txt"

# bench NAME RUNS WARMUP PREPARE COMMAND: one hyperfine case, JSON into $RES.
bench() {
  say "$1"
  hyperfine -S bash --runs "$2" --warmup "$3" --prepare "$4" \
    --command-name "$1" --export-json "$RES/$1.json" "$5" ||
    die "case $1 failed (hyperfine says how above)"
}

# --- cold builds -------------------------------------------------------------
if [[ $SKIP_DROVER != 1 ]]; then
  bench drover-cold-gzip "$RUNS" "$WARMUP" 'settle; next_run; warm "$TREE"' 'drover_cold gzip'

  # Peak RSS of a cold gzip build (hyperfine does not report memory).
  say "drover-rss (peak RSS, cold gzip build)"
  settle
  warm "$TREE"
  RSS_DIGEST=$(/usr/bin/time -f '%M' -o "$RES/drover-rss.kb" \
    "$DROVER" --init --store "$W/drover-rss/store" build -f "$DEF" --compression gzip | tail -n 1)
  [[ $(tail -n 1 "$RES/drover-rss.kb") =~ ^[0-9]+$ ]] ||
    die "no peak RSS figure: $RES/drover-rss.kb holds '$(cat "$RES/drover-rss.kb")'"
  echo "peak RSS: $(<"$RES/drover-rss.kb") KiB"
  if [[ $RSS_DIGEST == "$SEED_DIGEST" ]]; then
    echo "reproducible: two cold builds in different stores gave $RSS_DIGEST" | tee -a "$RES/conditions.txt"
  else
    echo "NOT reproducible: cold builds gave $SEED_DIGEST and $RSS_DIGEST" | tee -a "$RES/conditions.txt"
  fi

  bench drover-cold-zstd "$RUNS" "$WARMUP" 'settle; next_run; warm "$TREE"' 'drover_cold zstd'
fi
bench tar-pigz "$RUNS" "$WARMUP" 'settle; warm "$TREE"' 'tar -C "$TREE" -cf - . | pigz -6 > "$W/tar/out.tar.gz"'
bench tar-zstd "$RUNS" "$WARMUP" 'settle; warm "$TREE"' 'tar -C "$TREE" -cf - . | zstd -3 -T0 -q > "$W/tar/out.tar.zst"'
# repack reads the bundle, not the tree: warm that instead.
bench umoci-repack "$RUNS" "$WARMUP" "settle; warm '$U/bundle'" \
  "umoci repack --image '$U/layout:packed' '$U/bundle'"
# No warm-up for the buildah cases: each run waits ~65 s for the previous
# one to settle, so a warm-up would cost ~1.5 min per case and change nothing.
bench buildah-commit-cold "$RUNS" 0 'settle; next_run; warm "$TREE"' 'buildah_commit_cold'

# --- rebuilds: nothing changed ---------------------------------------------------
if [[ $SKIP_DROVER != 1 ]]; then
  bench drover-noop "$RUNS_FAST" "$WARMUP" 'settle; warm "$TREE"' 'drover_rebuild'
fi
bench buildah-build-noop "$RUNS" 0 'settle; warm "$TREE"' 'buildah_build "$W/bh-inc"'

# --- rebuilds: one file changed ----------------------------------------------------
if [[ $SKIP_DROVER != 1 ]]; then
  bench drover-onefile "$RUNS_FAST" "$WARMUP" 'settle; change_one_file; warm "$TREE"' 'drover_rebuild'
fi
bench buildah-build-onefile "$RUNS" 0 'settle; change_one_file; warm "$TREE"' \
  'buildah_build "$W/bh-inc"'

# --- buildah build --layers, cold (a fresh buildah store each run) -------------------
bench buildah-build-cold "$RUNS" 0 'settle; next_run; warm "$TREE"' \
  'buildah_build "$W/bh-build/$(run_no)"'

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RES/conditions.txt"

# Every case must have left a figure.
CASES=(tar-pigz tar-zstd umoci-repack buildah-commit-cold buildah-build-noop
  buildah-build-onefile buildah-build-cold)
if [[ $SKIP_DROVER != 1 ]]; then
  CASES+=(drover-cold-gzip drover-cold-zstd drover-noop drover-onefile)
fi
require_figures "$RES" "${CASES[@]}"

# ---------------------------------------------------------------------------
say "results ($VARIANT tree, warm page cache, medians)"
python3 - "$RES" "$VARIANT" "$SKIP_DROVER" <<'PY' | tee "$RES/summary.md"
import json, os, sys

res, variant, skip_drover = sys.argv[1], sys.argv[2], sys.argv[3] == "1"

def stats(name):
    p = os.path.join(res, name + ".json")
    if not os.path.exists(p):
        return None
    return json.load(open(p))["results"][0]

def med(name):
    s = stats(name)
    return s["median"] if s else None

def fmt(t):
    if t is None:
        return "—"
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.2f} s"

# name, what it runs, reference median on the large tree (shared bench README)
PEERS = [
    ("buildah-commit-cold", "buildah from scratch + copy + commit (gzip, --timestamp 0)", 17.0),
    ("buildah-build-cold", "buildah build --layers, cold", 26.5),
    ("buildah-build-noop", "buildah build --layers, unchanged", 8.1),
    ("buildah-build-onefile", "buildah build --layers, one file changed", 19.2),
    ("umoci-repack", "umoci repack", 6.9),
    ("tar-pigz", r"tar \| pigz -6", 11.0),
    ("tar-zstd", r"tar \| zstd -3 -T0", 2.2),
]
# case, drover result, peer result, target text, check(drover, peer)
TARGETS = [
    ("cold build, gzip", "drover-cold-gzip", "buildah-commit-cold", "≥ 4× faster", lambda d, p: p / d >= 4),
    ("cold build, gzip", "drover-cold-gzip", "tar-pigz", "≤ peer time", lambda d, p: d <= p),
    ("cold build, zstd", "drover-cold-zstd", "tar-zstd", "≤ 1.3× peer time", lambda d, p: d <= 1.3 * p),
    ("no-op rebuild", "drover-noop", "buildah-build-noop", "< 0.3 s and ≥ 20× faster", lambda d, p: d < 0.3 and p / d >= 20),
    ("one file changed", "drover-onefile", "buildah-build-onefile", "≥ 10× faster", lambda d, p: p / d >= 10),
    ("cold build, gzip", "drover-cold-gzip", "buildah-build-cold", "(info)", None),
    ("cold build, gzip", "drover-cold-gzip", "umoci-repack", "(info)", None),
]
label = {n: what for n, what, _ in PEERS}

print(f"Peers ({variant} tree):\n")
print("| peer | median | min | max | runs | reference (large, shared README) |")
print("|---|---|---|---|---|---|")
for name, what, ref in PEERS:
    s = stats(name)
    if not s:
        sys.exit(f"no figure for {name}")
    print(f"| {what} | {fmt(s['median'])} | {fmt(s['min'])} | {fmt(s['max'])} | {len(s['times'])} | {fmt(ref) if variant == 'large' else '—'} |")

fails = 0
if not skip_drover:
    print("\nTargets:\n")
    print("| case | drover median | peer | peer median | ratio (peer/drover) | target | result |")
    print("|---|---|---|---|---|---|---|")
    for case, d_name, p_name, target, check in TARGETS:
        d, p = med(d_name), med(p_name)
        if d is None or p is None:
            sys.exit(f"no figure for {d_name} or {p_name}")
        ratio = f"{p / d:.1f}× faster" if p >= d else f"{p / d:.2f}× ({d / p:.1f}× slower)"
        result = "" if check is None else ("PASS" if check(d, p) else "FAIL")
        fails += result == "FAIL"
        print(f"| {case} | {fmt(d)} | {label[p_name]} | {fmt(p)} | {ratio} | {target} | {result} |")
    mb = int(open(os.path.join(res, "drover-rss.kb")).read().split()[-1]) * 1024 / 1e6
    result = "PASS" if mb < 200 else "FAIL"
    fails += result == "FAIL"
    print(f"| peak RSS, cold gzip build | {mb:.0f} MB | — | — | — | < 200 MB | {result} |")
    if variant != "large":
        print(f"\n({variant} tree, smoke test: the targets are meant for the large tree)")
open(os.path.join(res, "fails"), "w").write(str(fails))
PY
finish "$RES" $((${#CASES[@]} + (SKIP_DROVER != 1)))
