#!/usr/bin/env bash
# Package-layer benchmark: drover installing a locked set of Debian packages
# into a layer, beside mmdebstrap installing exactly the same packages from
# the same local package cache. See bench/README.md.
#
#   bench/packages.sh                 # nginx (31 packages) and python (~100); ~5 min
#   BENCH_QUICK=1 bench/packages.sh   # nginx only, 1 run each: smoke test
#   DROVER=/path/to/drover bench/packages.sh   # use an existing binary
#
# Knobs (environment):
#   BENCH_DIR       work dir and results                     [/var/tmp/drover-bench]
#   BENCH_SETS      package sets, of: nginx python           [nginx python; quick: nginx]
#   DROVER          use this drover binary instead of building target/release/drover
#   BENCH_RUNS      timed runs of the builds                 [3; quick: 1]
#   BENCH_RUNS_FAST timed runs of no-op rebuilds, resolving  [10; quick: 1]
#   BENCH_COLD_PEER 1 = also one cold mmdebstrap run per set, apt-get
#                   downloading from deb.debian.org          [1; quick: 0]
#   BENCH_KEEP=1    keep the work dir (stores, repositories, tarballs)
#   BENCH_STRICT=1  exit 1 if a target fails (never in quick mode)
#
# Network: deb.debian.org only (drover's cold builds and locking, the cold
# mmdebstrap run). Everything else reads the local package cache. Runs as
# root (mmdebstrap --mode=root).

# The single-quoted hyperfine commands below expand $W, $DROVER, ... in
# hyperfine's own shell, on purpose:
# shellcheck disable=SC2016
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/drover-bench}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  SETS=${BENCH_SETS:-nginx} RUNS=${BENCH_RUNS:-1} RUNS_FAST=${BENCH_RUNS_FAST:-1}
  WARMUP=0 COLD_PEER=${BENCH_COLD_PEER:-0}
else
  SETS=${BENCH_SETS:-nginx python} RUNS=${BENCH_RUNS:-3} RUNS_FAST=${BENCH_RUNS_FAST:-10}
  WARMUP=1 COLD_PEER=${BENCH_COLD_PEER:-1}
fi
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd) # absolute: hyperfine's shells use it too
W= # the work dir, once made

say() { printf '\n== %s\n' "$*"; }
die() { echo "bench/packages.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

((EUID == 0)) || die "run as root (mmdebstrap --mode=root)"
for s in $SETS; do
  case $s in nginx | python) ;; *) die "no package set '$s' (BENCH_SETS= nginx python)" ;; esac
done

# ---------------------------------------------------------------------------
# Helpers, exported: hyperfine runs --prepare and the timed commands in fresh
# `bash -c` shells (-S bash).

# Read a directory's files so that the timed run finds them in the page
# cache (this machine reclaims pages idle for ~30 s). The package cache is
# read before every build, drover's or mmdebstrap's: the local repository
# mmdebstrap reads is hard links to the very same files.
warm() { tar -C "$1" -cf - . | cat >/dev/null; }
next_run() {
  local n=0
  [[ -f $W/run ]] && n=$(<"$W/run")
  echo $((n + 1)) >"$W/run"
}
run_no() { cat "$W/run"; }

# drover, cold: a fresh, empty store; every .deb comes from deb.debian.org.
drover_cold() { # $1 = set
  "$DROVER" --init --store "$W/cold-$1/$(run_no)" build -f "$W/sets/$1/drover.toml" >/dev/null
}
# drover, warm package cache: a fresh store whose package cache is the seed
# store's, hard-linked in (made by warm_store, untimed): no layer cache, no
# blobs, nothing downloaded.
warm_store() { # $1 = set
  local s=$W/warm-$1/$(run_no)
  mkdir -p "$s"
  cp -al "$W/seed/packages" "$s/packages"
}
drover_warm() { # $1 = set
  "$DROVER" --init --store "$W/warm-$1/$(run_no)" build -f "$W/sets/$1/drover.toml" >/dev/null
}
# drover, no-op rebuild: the seed store, which built the image already.
drover_noop() { # $1 = set
  "$DROVER" --init --store "$W/seed" build -f "$W/sets/$1/drover.toml" >/dev/null
}
# drover, resolving: the whole `drover lock --update --offline` (indexes
# from the seed store's package cache, signatures checked, closure resolved,
# lock compared), on a copy of the definition so the builds' lock stays.
drover_resolve() { # $1 = set
  "$DROVER" --init --store "$W/seed" lock --update --offline -f "$W/resolve/$1/drover.toml" 2>/dev/null
}
# mmdebstrap, warm: the lock's packages, from a copy:// repository whose
# pool is hard links to drover's cached .debs (apt copies them into the
# chroot's /var/cache/apt/archives, as copy:// does), extract variant,
# tarball. Its temp root lives in the work dir, on the store's file system.
mmdebstrap_warm() { # $1 = set
  TMPDIR=$W/tmp mmdebstrap --quiet --variant=extract --mode=root --format=tar \
    --include="$(<"$W/list-$1")" bookworm "$W/mm/$1-warm.tar" \
    "deb [trusted=yes] copy://$W/repo-$1 ./" 2>>"$W/mm/$1-warm.log"
}
# mmdebstrap, cold: the same packages at the lock's versions, apt-get
# downloading indexes and .debs from deb.debian.org (the lock's suites).
mmdebstrap_cold() { # $1 = set
  TMPDIR=$W/tmp mmdebstrap --quiet --variant=extract --mode=root --format=tar \
    --include="$(<"$W/pinned-$1")" bookworm "$W/mm/$1-cold.tar" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main" 2>>"$W/mm/$1-cold.log"
}

on_exit() {
  local rc=$?
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
trap 'exit 130' INT TERM

export -f warm next_run run_no drover_cold warm_store drover_warm drover_noop \
  drover_resolve mmdebstrap_warm mmdebstrap_cold

# ---------------------------------------------------------------------------
say "setup"
bash "$REPO/scripts/setup.sh"
for t in hyperfine mmdebstrap dpkg-scanpackages python3; do
  command -v "$t" >/dev/null || die "$t not found (scripts/setup.sh installs it)"
done
build_drover
DROVER=$(realpath "$DROVER")
export DROVER
quick_note

STAMP=$(date +%Y%m%d-%H%M%S)
W=$BENCH_DIR/packages-work-$STAMP
RES=$BENCH_DIR/results/$STAMP-packages
mkdir -p "$RES" "$W"/{sets,resolve,seed,mm,tmp}
export W
for old in "$BENCH_DIR"/packages-work-*; do
  [[ $old == "$W" || ! -d $old ]] && continue
  echo "removing leftover $old"
  rm -rf "$old"
done

# The definitions: examples/nginx as committed (with its committed lock),
# and bench/packages/python, locked now (see its header for why its lock is
# not committed). The resolve case works on copies.
say "untimed preparation: locks, the seed store (warm package cache), mmdebstrap's repositories"
for s in $SETS; do
  case $s in
    nginx) cp -a "$REPO/examples/nginx" "$W/sets/nginx" ;;
    python) cp -a "$REPO/bench/packages/python" "$W/sets/python" ;;
  esac
  # nginx: keeps the committed lock (the definition matches it); python:
  # resolves online, filling the seed store's index cache.
  "$DROVER" --init --store "$W/seed" lock -f "$W/sets/$s/drover.toml"
  mkdir -p "$W/resolve/$s"
  cp "$W/sets/$s/drover.toml" "$W/sets/$s/drover.lock" "$W/resolve/$s/"
  # Fill the index cache for the resolve case (online, untimed).
  "$DROVER" --init --store "$W/seed" lock --update -f "$W/resolve/$s/drover.toml"
  # Seed build: downloads every .deb into the seed store's package cache.
  "$DROVER" --init --store "$W/seed" build -f "$W/sets/$s/drover.toml" | tail -n 1
done

# From each lock: the package list (mmdebstrap's --include), the pinned list
# (name=version, the cold run) and a local repository: the cached .debs hard
# linked under their archive names, indexed by dpkg-scanpackages.
for s in $SETS; do
  python3 - "$W/sets/$s/drover.lock" "$W/seed/packages/sha256" "$W/repo-$s" \
    "$W/list-$s" "$W/pinned-$s" <<'PY'
import os, sys, tomllib
lock, cache, repo, names, pinned = sys.argv[1:]
pkgs = [p for layer in tomllib.load(open(lock, "rb"))["layer"] for p in layer.get("package", [])]
os.makedirs(repo)
for p in pkgs:
    src = os.path.join(cache, p["sha256"].removeprefix("sha256:"))
    if not os.path.exists(src):
        sys.exit(f"{p['name']} {p['version']} is not in the seed store's package cache ({src})")
    os.link(src, os.path.join(repo, os.path.basename(p["url"])))
open(names, "w").write(",".join(p["name"] for p in pkgs))
open(pinned, "w").write(",".join(f"{p['name']}={p['version']}" for p in pkgs))
print(f"{lock}: {len(pkgs)} packages, {sum(p['size'] for p in pkgs) / 1e6:.1f} MB of .debs")
PY
  (cd "$W/repo-$s" && dpkg-scanpackages -m . >Packages 2>/dev/null)
  tr ',' '\n' <"$W/list-$s" | grep -c . >"$RES/count-$s"
  du -sb "$W/repo-$s" | cut -f1 >"$RES/debbytes-$s"
done

# Each image once more through each tool, untimed: what they write.
for s in $SETS; do
  next_run
  warm_store "$s"
  drover_warm "$s"
  mmdebstrap_warm "$s" || die "mmdebstrap failed for $s: $(tail -n 5 "$W/mm/$s-warm.log")"
  layer=$(find "$W/warm-$s/$(run_no)/blobs" -type f -size +100k -printf '%s\n' 2>/dev/null | sort -n | tail -n 1)
  echo "$s: drover layer blob ${layer:-?} bytes (compressed); mmdebstrap tarball $(stat -c %s "$W/mm/$s-warm.tar") bytes (uncompressed), $(tar -tf "$W/mm/$s-warm.tar" | wc -l) entries" |
    tee -a "$RES/outputs.txt"
done

{
  echo "date: $(date -u +%FT%TZ)"
  echo "sets: $SETS ($(for s in $SETS; do printf '%s=%s packages ' "$s" "$(<"$RES/count-$s")"; done))"
  echo "runs: builds=$RUNS fast=$RUNS_FAST warmup=$WARMUP; page cache warmed before every run"
  echo "host: $(nproc) cpus, $(free -g | awk '/Mem:/ { print $2 }') GiB, kernel $(uname -r)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "mmdebstrap: $(mmdebstrap --version | awk '{ print $2 }'); apt: $(apt-get --version | head -n 1 | awk '{ print $2 }'); hyperfine: $(hyperfine --version | cut -d' ' -f2)"
  echo "drover: $DROVER ($("$DROVER" --version 2>/dev/null || echo '?'), built here: $BUILT, commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'))"
} | tee "$RES/conditions.txt"

# bench NAME RUNS WARMUP PREPARE COMMAND: one hyperfine case, JSON into $RES.
bench() {
  say "$1"
  hyperfine -S bash --runs "$2" --warmup "$3" --prepare "$4" \
    --command-name "$1" --export-json "$RES/$1.json" "$5" ||
    die "case $1 failed (hyperfine says how above)"
}

CASES=()
for s in $SETS; do
  bench "drover-warm-$s" "$RUNS" "$WARMUP" "next_run; warm_store $s; warm '$W/seed/packages'" "drover_warm $s"
  bench "mmdebstrap-warm-$s" "$RUNS" "$WARMUP" "warm '$W/seed/packages'" "mmdebstrap_warm $s"
  bench "drover-noop-$s" "$RUNS_FAST" "$WARMUP" "warm '$W/seed'" "drover_noop $s"
  bench "drover-resolve-$s" "$RUNS_FAST" "$WARMUP" "warm '$W/seed/packages'" "drover_resolve $s"
  bench "drover-cold-$s" "$RUNS" 0 "next_run" "drover_cold $s"
  CASES+=("drover-warm-$s" "mmdebstrap-warm-$s" "drover-noop-$s" "drover-resolve-$s" "drover-cold-$s")
  if [[ $COLD_PEER == 1 ]]; then
    bench "mmdebstrap-cold-$s" 1 0 "true" "mmdebstrap_cold $s"
    CASES+=("mmdebstrap-cold-$s")
  fi
done

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RES/conditions.txt"
require_figures "$RES" "${CASES[@]}"

# ---------------------------------------------------------------------------
say "results (medians)"
python3 - "$RES" "$SETS" "$COLD_PEER" <<'PY' | tee "$RES/summary.md"
import json, os, sys

res, sets, cold_peer = sys.argv[1], sys.argv[2].split(), sys.argv[3] == "1"

def med(name):
    p = os.path.join(res, name + ".json")
    return json.load(open(p))["results"][0]["median"] if os.path.exists(p) else None

def fmt(t):
    if t is None:
        return "—"
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.2f} s"

def ratio(peer, drover):
    if peer is None or drover is None:
        return "—"
    return f"{peer / drover:.1f}× faster" if peer >= drover else f"{drover / peer:.1f}× slower"

def count(s):
    return open(os.path.join(res, f"count-{s}")).read().strip()

HOW = {
    "cold": ("fresh empty store: .debs from deb.debian.org (lock given: no indexes)",
             "apt-get: indexes and .debs from deb.debian.org, `--include=name=version,…`"),
    "warm": ("fresh store, package cache hard-linked from a store that has the .debs; no layer cache",
             "`copy://` repository whose pool is hard links to drover's cached .debs (apt copies them into the chroot)"),
}
print("drover `build` of a locked packages layer beside `mmdebstrap --variant=extract --mode=root "
      "--format=tar --include=<the lock's packages>` (bookworm); page cache warm; ratio = mmdebstrap / drover\n")
print("| set | case | drover | reads its packages from | mmdebstrap | reads its packages from | ratio |")
print("|---|---|---|---|---|---|---|")
for s in sets:
    n = count(s)
    for case in ("warm", "cold"):
        d, m = med(f"drover-{case}-{s}"), med(f"mmdebstrap-{case}-{s}")
        dh, mh = HOW[case]
        if case == "cold" and not cold_peer:
            mh = "(not run)"
        print(f"| {s} ({n} pkgs) | {case} package cache | {fmt(d)} | {dh} | {fmt(m)} | {mh} | {ratio(m, d)} |")
    print(f"| {s} ({n} pkgs) | no-op rebuild | {fmt(med(f'drover-noop-{s}'))} | layer cache hit | — | — | — |")
    print(f"| {s} ({n} pkgs) | resolve: `drover lock --update --offline` | {fmt(med(f'drover-resolve-{s}'))} | indexes from the package cache | — | — | — |")

fails = 0
print("\n| target | set | figure | result |")
print("|---|---|---|---|")
def target(text, s, fig, ok):
    global fails
    fails += not ok
    print(f"| {text} | {s} | {fig} | {'PASS' if ok else 'MISS'} |")
for s in sets:
    d, m = med(f"drover-warm-{s}"), med(f"mmdebstrap-warm-{s}")
    target("warm-cache build ≥ 3× faster than mmdebstrap", s, f"{m / d:.1f}×", m / d >= 3)
for s in sets:
    t = med(f"drover-noop-{s}")
    target("no-op rebuild < 0.3 s", s, fmt(t), t < 0.3)
big = "python" if "python" in sets else sets[-1]
t = med(f"drover-resolve-{big}")
target(f"resolving ~100 packages < 1 s (whole `lock --update --offline`)", f"{big} ({count(big)} pkgs)", fmt(t), t < 1)
if big != "python":
    print("\n(the resolve target is meant for the python set, ~100 packages; quick mode resolves nginx)")
open(os.path.join(res, "fails"), "w").write(str(fails))
PY
finish "$RES" "${#CASES[@]}"
