#!/usr/bin/env bash
# Unpacked roots: disk used by N versions of an image that differ by one
# small layer, with the shared file pool (rootfs/.files, hard links; see
# crates/drover-core/src/store/unpack/pool.rs) and as it would be without
# it. See bench/README.md.
#
#   bench/roots.sh                  # 30 versions of a ~120 MB tree, ~2-4 min
#   BENCH_QUICK=1 bench/roots.sh    # tiny tree, 3 versions: smoke test
#   DROVER=/path/to/drover bench/roots.sh   # use an existing binary
#
# Knobs (environment):
#   BENCH_DIR       trees, work dirs, results          [/var/tmp/drover-bench]
#   GEN_TREE        tree generator         [<repo>/../shared/bench/gen_tree.sh]
#   BENCH_VERSIONS  versions built and unpacked             [30; quick: 3]
#   BENCH_KEEP=1    keep the work dir (the store)
#
# "Without sharing" is `du --count-links` of the roots: every root counted
# whole, which is what one full copy per version costs (what drover did
# before the pool). "With sharing" is `du` of rootfs/, which counts each
# inode once (the roots and the pool).
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/drover-bench}
GEN_TREE=${GEN_TREE:-$REPO/../shared/bench/gen_tree.sh}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  VARIANT=tiny VERSIONS=${BENCH_VERSIONS:-3}
else
  VARIANT=small VERSIONS=${BENCH_VERSIONS:-30}
fi
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
TREE=$BENCH_DIR/$VARIANT
W=

say() { printf '\n== %s\n' "$*"; }
die() { echo "bench/roots.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

on_exit() {
  if [[ -n $W && -d $W && ${BENCH_KEEP:-0} != 1 ]]; then
    # Instances first: their views are mounts. (Word splitting of the ids is meant.)
    # shellcheck disable=SC2046
    "$DROVER" --store "$W/store" rm -f $("$DROVER" --store "$W/store" ps -q 2>/dev/null) >/dev/null 2>&1 || true
    rm -rf "$W"
  fi
}
trap on_exit EXIT

build_drover
quick_note
[[ -x /bin/busybox ]] || die "needs busybox-static at /bin/busybox"
ensure_tree

W=$(mktemp -d "$BENCH_DIR/roots.XXXXXX")
RES=$BENCH_DIR/results/roots-$(date +%Y%m%d-%H%M%S)
mkdir -p "$RES"
say "the base: the $VARIANT tree (twice, seeds 1 and 2, outside quick mode) and busybox"
mkdir -p "$W/ctx/base/a" "$W/ctx/base/bin"
cp -a "$TREE/." "$W/ctx/base/a/"
if ! quick; then
  bash "$GEN_TREE" small "$W/ctx/base/b" 2 >/dev/null
fi
cp /bin/busybox "$W/ctx/base/bin/busybox"
touch -h -d @1700000000 "$W/ctx/base/bin/busybox" "$W/ctx/base/bin" "$W/ctx/base"
du -sh "$W/ctx/base" | tee "$RES/base-size"

D=("$DROVER" --init --store "$W/store")
say "building and unpacking $VERSIONS versions (each: one small layer of its own)"
start=$(date +%s.%N)
for ((v = 1; v <= VERSIONS; v++)); do
  cat >"$W/ctx/v.toml" <<EOF
[image]
name = "roots"
tag = "$v"

[[layer]]
kind = "copy"
src = "base"
dest = "/"

[[layer]]
kind = "file"
dest = "/etc/version"
content = "version $v\n"
EOF
  "${D[@]}" build --sign -f "$W/ctx/v.toml" >/dev/null 2>&1
  # Unpacks the root (the instance's start), then the instance goes: its
  # root stays until gc.
  id=$("${D[@]}" run "roots:$v" -- /bin/busybox true)
  "${D[@]}" rm -f "$id" >/dev/null
done
end=$(date +%s.%N)

roots=("$W"/store/rootfs/[0-9a-f]*/)
((${#roots[@]} == VERSIONS)) || die "expected $VERSIONS roots, found ${#roots[@]}"
without=$(du -s --count-links --block-size=1 "${roots[@]}" | awk '{ s += $1 } END { printf "%.0f\n", s }')
with=$(du -s --block-size=1 "$W/store/rootfs" | awk '{ print $1 }')
pool=$(find "$W/store/rootfs/.files" -type f | wc -l)
python3 - "$without" "$with" "$VERSIONS" "$start" "$end" "$pool" "$RES" <<'PY'
import sys
without, with_, n, start, end, pool, res = sys.argv[1:]
without, with_, n = int(float(without)), int(float(with_)), int(n)
mb = lambda b: b / 1e6
lines = [
    f"versions: {n}",
    f"rootfs/ without sharing (each root counted whole): {mb(without):.0f} MB",
    f"rootfs/ with sharing (du, hard links once): {mb(with_):.0f} MB",
    f"ratio: {without / with_:.1f}x less disk ({100 * (1 - with_ / without):.0f}% saved)",
    f"pool files: {pool}",
    f"build + run + rm of {n} versions: {float(end) - float(start):.1f} s",
]
print("\n".join(lines))
open(f"{res}/summary.md", "w").write("\n".join(lines) + "\n")
open(f"{res}/fails", "w").write("0\n")
PY
say "gc: the roots no instance or release needs go, and the pool files with them"
"${D[@]}" gc | tee "$RES/gc"
left=$(du -s --block-size=1 "$W/store/rootfs" | awk '{ print $1 }')
echo "rootfs/ after gc: $((left / 1000000)) MB" | tee -a "$RES/summary.md"
finish "$RES" 4
