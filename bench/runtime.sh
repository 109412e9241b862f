#!/usr/bin/env bash
# Runtime benchmark: starting and removing drover instances against runc on
# the very bundle drover generates. See bench/README.md.
#
#   bench/runtime.sh                  # the real run, ~1 min (+ cargo build)
#   BENCH_QUICK=1 bench/runtime.sh    # smoke test: 3 runs, 1 fleet round of 10, ~20 s
#   DROVER=/path/to/drover bench/runtime.sh   # use an existing binary
#
# Cases:
#   start->exit  `drover run --wait --rm box:1 -- /bin/true` (embedded driver
#                and --driver runc) against `runc run` of the same bundle
#   fleet        50 detached `drover run ... /bin/sleep 1000`, then one
#                `drover rm --force` of all 50, against 50 `runc run -d` and
#                50 `runc delete --force`
#
# Knobs (environment):
#   BENCH_DIR     work dir; results go to $BENCH_DIR/results/  [/var/tmp/drover-bench]
#   DROVER        use this drover binary instead of building target/release/drover
#   BENCH_RUNS    timed runs of each start->exit case          [30; quick: 3]
#   BENCH_BLOCKS  blocks the start->exit runs are split into; the cases
#                 take turns block by block                    [3; quick: 1]
#   BENCH_WARMUP  warm-up runs of each start->exit block       [3; quick: 1]
#   BENCH_FLEET_ROUNDS  rounds of the fleet case               [3; quick: 1]
#   BENCH_FLEET   instances per fleet round (targets assume 50)  [50; quick: 10]
#   BENCH_KEEP=1  keep the work dir (store, bundles, runc state) for inspection
#   BENCH_STRICT=1  exit 1 if a target fails (never in quick mode)
#
# The image is built with --sign (the store's host key): the default deploy
# policy runs only signed images with drover's provenance.
#
# Everything runs from a warm page cache: the rootfs is a 1 MB busybox tree,
# and every case starts with warm-up runs of the same commands.

# The single-quoted hyperfine commands below expand $DROVER, $S, ... in
# hyperfine's own shell, on purpose:
# shellcheck disable=SC2016
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/drover-bench}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  RUNS=${BENCH_RUNS:-3} BLOCKS=${BENCH_BLOCKS:-1} ROUNDS=${BENCH_FLEET_ROUNDS:-1}
  WARMUP=${BENCH_WARMUP:-1} FLEET=${BENCH_FLEET:-10}
else
  RUNS=${BENCH_RUNS:-30} BLOCKS=${BENCH_BLOCKS:-3} ROUNDS=${BENCH_FLEET_ROUNDS:-3}
  WARMUP=${BENCH_WARMUP:-3} FLEET=${BENCH_FLEET:-50}
fi
PER_BLOCK=$(((RUNS + BLOCKS - 1) / BLOCKS))
RUNS=$((PER_BLOCK * BLOCKS))
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd) # absolute: hyperfine's shells use it too
W= # the work dir, once made

say() { printf '\n== %s\n' "$*"; }
die() { echo "bench/runtime.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

# ---------------------------------------------------------------------------
# Helpers.

# drover on the benchmark's store; rn = runc with the benchmark's private
# state directory (nothing touches /run/runc or /var/lib/drover).
dr() { "$DROVER" --init --store "$S" "$@"; }
rn() { runc --root "$RUNC_ROOT" "$@"; }

# The ids of a store's instances that are not removed, one a line.
live_instances() { # $1 = store
  "$DROVER" --init --store "$1" --json ps 2>/dev/null |
    python3 -c 'import json, sys; [print(i["id"]) for i in json.load(sys.stdin)["items"] if i["state"] != "deleted"]'
}
running_instances() { # in $S: how many are running
  dr --json ps | python3 -c 'import json, sys; print(sum(i["state"] == "running" for i in json.load(sys.stdin)["items"]))'
}
instance_state() { # $1 = id, in $S
  dr --json ps -a | python3 -c '
import json, sys
print(next((i["state"] for i in json.load(sys.stdin)["items"] if i["id"] == sys.argv[1]), "missing"))' "$1"
}

# A runc bundle: the config.json drover generated for an instance, with the
# per-container fields (hostname, cgroup) made unique, optionally new args.
# Everything else (root, mounts, namespaces, seccomp, capabilities, rlimits)
# is drover's, byte for byte.
make_bundle() { # $1 = dir, $2 = container name, $3... = args (optional)
  local dir=$1 name=$2
  shift 2
  mkdir -p "$dir"
  python3 - "$W/drover-config.json" "$dir/config.json" "$name" "$@" <<'PY'
import json, sys
src, dst, name, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
c = json.load(open(src))
c["hostname"] = name
c["linux"]["cgroupsPath"] = "/drover-bench/" + name
if args:
    c["process"]["args"] = args
json.dump(c, open(dst, "w"), indent=2)
PY
}

# Seconds between two $EPOCHREALTIME values.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }

# One fleet round for drover: FLEET detached instances, then one rm of all.
# Appends "drover round launch delete total" to fleet.tsv.
fleet_drover() { # $1 = round
  local ids=$W/fleet-ids err=$RES/drover.err i t0 t1 t2 n idlist
  : >"$ids"
  t0=$EPOCHREALTIME
  for ((i = 0; i < FLEET; i++)); do
    dr run box:1 -- /bin/sleep 1000 </dev/null >>"$ids" 2>>"$err" ||
      die "drover fleet round $1: drover run #$((i + 1)) failed: $(tail -n 3 "$err")"
  done
  t1=$EPOCHREALTIME
  n=$(running_instances 2>>"$err") || die "drover fleet round $1: drover ps failed: $(tail -n 3 "$err")"
  ((n == FLEET)) || die "drover fleet round $1: $n instances running after launching $FLEET"
  mapfile -t idlist <"$ids"
  dr rm --force "${idlist[@]}" >/dev/null 2>>"$err" ||
    die "drover fleet round $1: drover rm --force failed: $(tail -n 3 "$err")"
  t2=$EPOCHREALTIME
  n=$(live_instances "$S" | wc -l)
  ((n == 0)) || die "drover fleet round $1: $n instances left after rm --force"
  printf 'drover\t%s\t%s\t%s\t%s\n' "$1" "$(elapsed "$t0" "$t1")" "$(elapsed "$t1" "$t2")" \
    "$(elapsed "$t0" "$t2")" | tee -a "$RES/fleet.tsv"
}
# The same for runc: FLEET `runc run -d`, then FLEET `runc delete --force`.
fleet_runc() { # $1 = round
  local err=$RES/runc.err i t0 t1 t2 n
  t0=$EPOCHREALTIME
  for ((i = 0; i < FLEET; i++)); do
    rn run -d --bundle "$W/fleet/b$i" "bench-$i" </dev/null >/dev/null 2>>"$err" ||
      die "runc fleet round $1: runc run -d #$((i + 1)) failed: $(tail -n 3 "$err")"
  done
  t1=$EPOCHREALTIME
  n=$(rn list | grep -c ' running ' || true)
  ((n == FLEET)) || die "runc fleet round $1: $n containers running after launching $FLEET"
  for ((i = 0; i < FLEET; i++)); do
    rn delete --force "bench-$i" </dev/null >/dev/null 2>>"$err" ||
      die "runc fleet round $1: runc delete --force bench-$i failed: $(tail -n 3 "$err")"
  done
  t2=$EPOCHREALTIME
  n=$(rn list -q | wc -l)
  ((n == 0)) || die "runc fleet round $1: $n containers left after delete --force"
  printf 'runc\t%s\t%s\t%s\t%s\n' "$1" "$(elapsed "$t0" "$t1")" "$(elapsed "$t1" "$t2")" \
    "$(elapsed "$t0" "$t2")" | tee -a "$RES/fleet.tsv"
}

# Remove every instance a store still has: the ones `drover ps` lists and
# any other bundle under instances/ (in case ps itself fails), one at a time
# so that one failure does not leave the rest running. If drover cannot
# remove one, kill what runs in its cgroup (/drover/<id>) and try again.
cleanup_drover() { # $1 = store
  local st=$1 id pid left
  mapfile -t left < <({
    live_instances "$st" || true
    find "$st/instances" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null || true
  } | grep -E '^[0-9a-f]{12}$' | sort -u)
  ((${#left[@]})) || return 0
  echo "removing ${#left[@]} leftover drover instance(s) in $st" >&2
  for id in "${left[@]}"; do
    "$DROVER" --init --store "$st" rm --force "$id" >/dev/null 2>&1 && continue
    while IFS= read -r pid; do
      kill -KILL "$pid" 2>/dev/null || true
    done < <(cat /sys/fs/cgroup/*/drover/"$id"/cgroup.procs /sys/fs/cgroup/drover/"$id"/cgroup.procs 2>/dev/null | sort -u)
    sleep 0.5
    "$DROVER" --init --store "$st" rm --force "$id" >/dev/null 2>&1 ||
      echo "could not remove drover instance $id: $("$DROVER" --init --store "$st" rm --force "$id" 2>&1 | tail -n 1)" >&2
  done
}

# Kill and remove whatever a work dir still runs (drover instances, runc
# containers), unmount what may be left under it, then delete it.
cleanup_work() { # $1 = work dir
  local w=$1 id m
  [[ -n $w && -d $w ]] || return 0
  if [[ -d $w/store && -x ${DROVER:-} ]]; then
    cleanup_drover "$w/store"
  fi
  if [[ -d $w/runc-state ]]; then
    while IFS= read -r id; do
      echo "removing leftover runc container $id" >&2
      runc --root "$w/runc-state" delete --force "$id" >/dev/null 2>&1 || true
    done < <(runc --root "$w/runc-state" list -q 2>/dev/null || true)
  fi
  # runc removes each container's cgroup but not their common parent.
  rmdir /sys/fs/cgroup/*/drover-bench /sys/fs/cgroup/drover-bench 2>/dev/null || true
  while IFS= read -r m; do
    umount -l "$m" 2>/dev/null || true
  done < <(awk -v w="$w/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r)
  if [[ ${BENCH_KEEP:-0} == 1 && $w == "$W" ]]; then
    echo "kept work dir $w" >&2
  else
    rm -rf "$w"
  fi
}

on_exit() {
  local rc=$?
  # An interrupt can land while a command's output is redirected to a log;
  # the clean-up reports to the script's own stdout and stderr.
  exec 1>&7 2>&8
  cleanup_work "$W" || true
  exit "$rc"
}

exec 7>&1 8>&2 # the script's own stdout and stderr, for on_exit
trap on_exit EXIT
trap 'exit 130' INT TERM # so that on_exit runs on Ctrl-C too

# ---------------------------------------------------------------------------
say "setup"
((EUID == 0)) || die "run me as root: runc and drover's runtime need namespaces, mounts and cgroups"
echo "running as root"
bash "$REPO/scripts/setup.sh"
for t in hyperfine runc python3 flock; do
  command -v "$t" >/dev/null || die "$t not found"
done
# The image's only program; it must be static (busybox-static), as the image
# has no libc.
[[ -x /bin/busybox ]] || die "/bin/busybox not found (Debian package busybox-static)"

# One runtime benchmark at a time: two would time each other.
exec 9>"$BENCH_DIR/.runtime.lock"
flock -n 9 || die "another bench/runtime.sh is running (lock $BENCH_DIR/.runtime.lock)"

DROVER_FROM="built from the working tree at"
if [[ -n ${DROVER:-} ]]; then
  DROVER_FROM="given by DROVER=; the repo is at"
else
  say "building drover (release)"
  (cd "$REPO" && cargo build --release -p drover)
  DROVER=$REPO/target/release/drover
fi
[[ -x $DROVER ]] || die "drover binary $DROVER not found"
DROVER=$(realpath "$DROVER")
quick_note

# Work dirs of interrupted runs (runtime-work-*; bench/build.sh's are work-*):
# their instances may still be running.
for old in "$BENCH_DIR"/runtime-work-*; do
  [[ -d $old ]] || continue
  echo "removing leftover $old"
  cleanup_work "$old"
done

STAMP=$(date +%Y%m%d-%H%M%S)
W=$BENCH_DIR/runtime-work-$STAMP
RES=$BENCH_DIR/results/$STAMP-runtime
S=$W/store
RUNC_ROOT=$W/runc-state
mkdir -p "$RES" "$W"/{image,fleet} "$RUNC_ROOT"
export DROVER S RUNC_ROOT W
export -f dr rn

say "untimed preparation"
# The image: static busybox with the three applets the cases use.
R=$W/image/rootfs
mkdir -p "$R/bin" "$R/etc" "$R/tmp" "$R/root"
cp /bin/busybox "$R/bin/busybox"
chmod 0755 "$R/bin/busybox"
for a in sh true sleep; do ln -s busybox "$R/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$R/etc/passwd"
cat >"$W/image/drover.toml" <<'EOF'
# written by bench/runtime.sh
[image]
name = "box"
tag = "1"

[[layer]]
kind = "copy"
src = "rootfs"
dest = "/"

[config]
entrypoint = ["/bin/true"]
env = { PATH = "/bin" }
EOF
# Signed with the store's host key: the default deploy policy runs only
# images signed by a trusted key, with drover's provenance.
DIGEST=$(dr build --sign -f "$W/image/drover.toml" | tail -n 1) || die "drover build --sign of box:1 failed"
[[ $DIGEST == sha256:* ]] || die "drover build printed $DIGEST, not a digest"
dr policy check box:1 >"$W/policy.txt" 2>&1 || die "the store's deploy policy refuses box:1: $(cat "$W/policy.txt")"
ROOTFS=$S/rootfs/${DIGEST#sha256:}
echo "image box:1 = $DIGEST"

# The first run unpacks the image; every later one (and runc) uses that root.
dr run --wait --rm box:1 -- /bin/true </dev/null || die "drover run --wait of /bin/true failed"
[[ -x $ROOTFS/bin/busybox ]] ||
  die "drover run did not unpack the image to $ROOTFS (is the unpacker in this build?)"
dr run --wait --rm --driver runc box:1 -- /bin/true </dev/null ||
  die "drover run --driver runc of /bin/true failed"
echo "unpacked root: $ROOTFS"

# The bundle drover generates: a detached instance of /bin/true, run to its
# exit; its config.json is kept, the instance removed.
id=$(dr run box:1 -- /bin/true </dev/null)
for ((i = 0; i < 100; i++)); do
  [[ $(instance_state "$id") == exited ]] && break
  sleep 0.1
done
[[ $(instance_state "$id") == exited ]] || die "instance $id did not exit within 10 s"
cp "$S/instances/$id/config.json" "$W/drover-config.json"
dr rm --force "$id" >/dev/null
# drover runs each instance in a user namespace on an id-mapped view of the
# shared root (gone with the instance). runc 1.1 cannot make id-mapped
# mounts, so its bundle is drover's on the shared root itself, without the
# user namespace: runc as it is usually run. drover does that work on top.
python3 - "$W/drover-config.json" "$ROOTFS" <<'PY' || die "drover's config.json is not what this script expects"
import json, os, sys
path, rootfs = sys.argv[1], sys.argv[2]
c = json.load(open(path))
assert c["process"]["terminal"] is False
assert c["linux"]["cgroupsPath"]
if os.path.realpath(c["root"]["path"]) != os.path.realpath(rootfs):
    assert c["root"]["path"].startswith("/run/drover/views/"), c["root"]
    assert c["linux"]["namespaces"][0]["type"] == "user", c["linux"]["namespaces"]
    c["root"]["path"] = rootfs
    c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "user"]
    for k in ("uidMappings", "gidMappings"):
        c["linux"].pop(k, None)
json.dump(c, open(path, "w"), indent=2)
PY
make_bundle "$W/bundle" bench-x
for ((i = 0; i < FLEET; i++)); do
  make_bundle "$W/fleet/b$i" "bench-$i" /bin/sleep 1000
done
rn run --bundle "$W/bundle" bench-x </dev/null || die "runc run of drover's bundle failed"
echo "bundle: $W/bundle/config.json (drover's, with hostname and cgroupsPath per container)"

# Conditions, recorded with the results.
{
  echo "date: $(date -u +%FT%TZ)"
  echo "runs: start->exit $RUNS each, in $BLOCKS block(s) of $PER_BLOCK (+$WARMUP warm-up) taking turns; fleet $ROUNDS round(s) of $FLEET"
  echo "host: $(nproc) cpus, $(free -g | awk '/Mem:/ { print $2 }') GiB, kernel $(uname -r)"
  echo "cgroups: $([[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]] && echo v2 || echo v1/hybrid)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  dirty=$({ git -C "$REPO" status --porcelain 2>/dev/null || true; } | awk '{ print $NF }' | head -n 10 | paste -sd ' ')
  echo "drover: $("$DROVER" --version 2>/dev/null || echo '?') $DROVER ($DROVER_FROM commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  [[ -z $dirty ]] || echo "uncommitted changes in the working tree (first 10): $dirty"
  echo "runc: $(runc --version | head -n 1); $(runc --version | sed -n 's/^commit: //p')"
  echo "hyperfine: $(hyperfine --version | cut -d' ' -f2)"
  echo "image: box:1 = $DIGEST (static busybox $(busybox 2>&1 | head -n 1 | cut -d' ' -f2))"
  echo "bundle: drover's config.json; root $ROOTFS (read-only, shared); for runc without drover's user namespace and id-mapped view"
} | tee "$RES/conditions.txt"
cp "$W/drover-config.json" "$RES/bundle-config.json"

# With two cores, anything else running (a compile) inflates every figure.
# The load average of these VMs hardly goes below 1 even when idle (kernel
# threads waiting on I/O count), so look at CPU use over 2 s instead.
busy=$(cpu_busy)
echo "cpu busy in the 2 s before the first case: $busy%" | tee -a "$RES/conditions.txt"
if ((busy >= 10)); then
  echo "warning: the machine is not idle ($busy% cpu busy); figures will be inflated" |
    tee -a "$RES/conditions.txt" >&2
fi

# bench NAME BLOCK COMMAND: one block of one hyperfine case, JSON into
# $RES/blocks/NAME.BLOCK.json (merge_blocks makes $RES/NAME.json).
bench() {
  say "$1 (block $2 of $BLOCKS)"
  hyperfine -S bash --runs "$PER_BLOCK" --warmup "$WARMUP" \
    --command-name "$1" --export-json "$RES/blocks/$1.$2.json" "$3" ||
    die "case $1 failed (hyperfine says how above)"
}
# All blocks of a case in one hyperfine-style JSON: every time, and the
# statistics recomputed over all of them.
merge_blocks() { # $1 = case name
  python3 - "$RES" "$1" <<'PY'
import glob, json, os, statistics, sys
res, name = sys.argv[1], sys.argv[2]
blocks = [json.load(open(p))["results"][0]
          for p in sorted(glob.glob(os.path.join(res, "blocks", name + ".*.json")))]
r = dict(blocks[0])
for k in ("times", "exit_codes"):
    r[k] = [x for b in blocks for x in b.get(k) or []]
t = r["times"]
r.update(mean=statistics.mean(t), median=statistics.median(t), min=min(t), max=max(t),
         stddev=statistics.stdev(t) if len(t) > 1 else 0.0, blocks=len(blocks),
         block_medians=[b["median"] for b in blocks])
for k in ("user", "system"):
    r[k] = statistics.mean(b[k] for b in blocks)
json.dump({"results": [r]}, open(os.path.join(res, name + ".json"), "w"), indent=2)
PY
}

# --- start -> exit of /bin/true ----------------------------------------------
# The three cases run in blocks, taking turns (and rotating which goes
# first), so that a burst of outside activity on this 2-core machine is
# shared between them instead of landing on one case.
START_CASES=(drover-embedded drover-runc runc-run)
declare -A START_CMD=(
  [drover-embedded]='dr run --wait --rm box:1 -- /bin/true </dev/null >/dev/null 2>&1'
  [drover-runc]='dr run --wait --rm --driver runc box:1 -- /bin/true </dev/null >/dev/null 2>&1'
  [runc-run]='rn run --bundle "$W/bundle" bench-x </dev/null >/dev/null 2>&1'
)
mkdir -p "$RES/blocks"
for ((b = 1; b <= BLOCKS; b++)); do
  for ((k = 0; k < ${#START_CASES[@]}; k++)); do
    c=${START_CASES[(k + b - 1) % ${#START_CASES[@]}]}
    bench "$c" "$b" "${START_CMD[$c]}"
  done
done
for c in "${START_CASES[@]}"; do merge_blocks "$c"; done

# --- fleet: launch FLEET detached instances, then delete them all ----------------
say "fleet: $FLEET detached instances, launch then delete; $ROUNDS round(s)"
printf 'tool\tround\tlaunch_s\tdelete_s\ttotal_s\n' >"$RES/fleet.tsv"
for ((r = 1; r <= ROUNDS; r++)); do
  # Warm both paths (binaries, rootfs, state database) right before timing;
  # the two tools alternate which goes first.
  dr run --wait --rm box:1 -- /bin/true </dev/null >/dev/null
  rn run --bundle "$W/bundle" bench-x </dev/null >/dev/null
  if ((r % 2)); then
    fleet_drover "$r"
    sleep 2
    fleet_runc "$r"
  else
    fleet_runc "$r"
    sleep 2
    fleet_drover "$r"
  fi
  sleep 2
done

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RES/conditions.txt"
for f in "$RES"/drover.err "$RES"/runc.err; do
  [[ -s $f ]] || rm -f "$f" # kept only when a tool complained
done

# ---------------------------------------------------------------------------
require_figures "$RES" "${START_CASES[@]}"
say "results (medians)"
python3 - "$RES" "$FLEET" <<'PY' | tee "$RES/summary.md"
import csv, json, os, statistics, sys

res, fleet = sys.argv[1], int(sys.argv[2])

def stats(name):
    p = os.path.join(res, name + ".json")
    if not os.path.exists(p):
        return None
    return json.load(open(p))["results"][0]

def fmt(t):
    if t is None:
        return "—"
    if t < 0.1:
        return f"{t * 1000:.1f} ms"
    return f"{t * 1000:.0f} ms" if t < 1 else f"{t:.2f} s"

def ratio(d, p):
    return f"{p / d:.1f}× faster" if p >= d else f"{p / d:.2f}× ({d / p:.1f}× slower)"

START = [
    ("drover-embedded", "`drover run --wait --rm` (embedded)", None),
    ("drover-runc", "`drover run --wait --rm --driver runc`", None),
    ("runc-run", "`runc run`, drover's bundle", 0.024),
]
print("Start → exit of `/bin/true`:\n")
print("| command | median | mean ± σ | min | max | runs | block medians | reference (shared README) |")
print("|---|---|---|---|---|---|---|---|")
med = {}
for name, what, ref in START:
    s = stats(name)
    if not s:
        sys.exit(f"no figure for {name}")
    med[name] = s["median"]
    print(f"| {what} | {fmt(s['median'])} | {fmt(s['mean'])} ± {fmt(s['stddev'])} | "
          f"{fmt(s['min'])} | {fmt(s['max'])} | {len(s['times'])} | "
          f"{', '.join(fmt(m) for m in s.get('block_medians', []))} | {fmt(ref)} |")

rows = list(csv.DictReader(open(os.path.join(res, "fleet.tsv")), delimiter="\t"))
fl = {}
for tool in ("drover", "runc"):
    rs = [r for r in rows if r["tool"] == tool]
    if not rs:
        sys.exit(f"no fleet figure for {tool} in fleet.tsv")
    fl[tool] = {k: [float(r[k + "_s"]) for r in rs] for k in ("launch", "delete", "total")}
print(f"\n{fleet} detached instances (`/bin/sleep 1000`), launched then deleted:\n")
print("| tool | launch median | delete median | total median | per launch | rounds (launch / delete) | reference launch (shared README) |")
print("|---|---|---|---|---|---|---|")
for tool, what, ref in (("drover", f"drover: {fleet} × `drover run`, one `drover rm --force`", None),
                        ("runc", f"runc: {fleet} × `runc run -d`, {fleet} × `runc delete --force`",
                         1.05 if fleet == 50 else None)):
    if tool in fl:
        f = fl[tool]
        m = {k: statistics.median(v) for k, v in f.items()}
        rounds = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(f["launch"], f["delete"]))
        print(f"| {what} | {fmt(m['launch'])} | {fmt(m['delete'])} | {fmt(m['total'])} | "
              f"{fmt(m['launch'] / fleet)} | {rounds} | {fmt(ref)} |")
        for k, v in m.items():
            med[f"{tool}-{k}"] = v

# case, drover result, peer result, target text, check(drover, peer)
TARGETS = [
    ("start → exit", "drover-embedded", "runc-run", "≥ 2× faster", lambda d, p: p / d >= 2),
    ("start → exit", "drover-runc", "runc-run", "(info: drover's overhead on runc)", None),
    ("start → exit", "drover-embedded", "drover-runc", "(info: embedded vs runc driver)", None),
    (f"launch {fleet}", "drover-launch", "runc-launch",
     "< 2 s" if fleet == 50 else "(< 2 s for 50 only)",
     (lambda d, p: d < 2) if fleet == 50 else None),
    (f"delete {fleet}", "drover-delete", "runc-delete", "(info)", None),
    (f"launch + delete {fleet}", "drover-total", "runc-total", "(info)", None),
]
print("\nTargets:\n")
print("| case | drover | drover median | peer | peer median | ratio (peer/drover) | target | result |")
print("|---|---|---|---|---|---|---|---|")
fails = 0
for case, d_name, p_name, target, check in TARGETS:
    d, p = med.get(d_name), med.get(p_name)
    if d is None or p is None:
        sys.exit(f"no figure for {d_name} or {p_name}")
    result = "" if check is None else ("PASS" if check(d, p) else "FAIL")
    fails += result == "FAIL"
    print(f"| {case} | {d_name} | {fmt(d)} | {p_name} | {fmt(p)} | {ratio(d, p)} | {target} | {result} |")
open(os.path.join(res, "fails"), "w").write(str(fails))
PY
finish "$RES" $((${#START_CASES[@]} + 6))
