# Shared by the bench scripts: source it after setting REPO (and, for
# ensure_tree, TREE, GEN_TREE and VARIANT), and after defining say and die.
# Sourcing it sets an ERR trap (see on_err below).
# shellcheck shell=bash

# Percent of all CPUs busy over 2 s, from /proc/stat.
cpu_busy() {
  local a b
  a=$(head -n 1 /proc/stat)
  sleep 2
  b=$(head -n 1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {
    n = split(a, x); split(b, y)
    for (i = 2; i <= n; i++) { d = y[i] - x[i]; t += d; if (i == 5 || i == 6) idle += d }
    printf "%.0f", t ? 100 * (t - idle) / t : 0 }'
}

# The input trees: large and small come from gen_tree.sh (in ../shared, which
# a fresh clone may lack); tiny, quick mode's default, is made here, so that
# quick mode needs nothing outside the repository: the same kinds of content
# as gen_tree's (text, logs, binary-like, random), folders, executables,
# symlinks (one dangling), every mtime 1700000000; 200 files, ~3 MB, so that
# even a debug build of drover gets through quick mode in seconds.
make_tiny_tree() { # $1 = the new tree (must not exist)
  python3 - "$1" <<'PY'
import os, random, sys
out = sys.argv[1]
rng = random.Random("tiny:42")
MTIME = 1700000000
os.umask(0o022)
WORDS = ["alpha", "beta", "gamma", "delta", "init", "config", "server", "error",
         "value", "return", "static", "struct", "import", "module", "request"]
dirs = ["bin", "etc", "etc/app", "lib", "usr", "usr/bin", "usr/lib", "usr/share",
        "usr/share/doc", "opt", "opt/app", "opt/app/lib", "opt/app/static", "var",
        "var/log", "srv"]
dirs += [f"usr/share/doc/pkg{i:02}" for i in range(14)]
os.mkdir(out)
for d in dirs:
    os.mkdir(os.path.join(out, d))
files = []
for i in range(200):
    kind = rng.choice(["text", "text", "log", "elf", "rand"])
    size = min(int(rng.lognormvariate(8.3, 1.6)), 600_000)
    if kind == "text":
        data = " ".join(rng.choice(WORDS) for _ in range(size // 6 + 1)).encode()[:size]
    elif kind == "log":
        data = b"".join(b"2023-11-14 22:13:%02d INFO request %d served\n" % (j % 60, j)
                        for j in range(size // 40 + 1))[:size]
    elif kind == "elf":
        data = bytes(size // 2) + rng.randbytes(size - size // 2)
    else:
        data = rng.randbytes(size)
    d = rng.choice(dirs)
    path = os.path.join(d, f"{kind}{i:03}" + (".sh" if d.endswith("bin") else ".dat"))
    with open(os.path.join(out, path), "wb") as f:
        f.write(data)
    os.chmod(os.path.join(out, path), 0o755 if d.endswith("bin") else 0o644)
    files.append(path)
links = [(f"lib/libtiny.so.{i}", os.path.relpath(files[i * 7], "lib")) for i in range(8)]
links += [("usr/lib/absolute", "/" + files[3]), ("opt/app/dangling", "missing/nowhere")]
for path, target in links:
    os.symlink(target, os.path.join(out, path))
for root, ds, fs in os.walk(out, topdown=False):
    for name in ds + fs:
        os.utime(os.path.join(root, name), (MTIME, MTIME), follow_symlinks=False)
os.utime(out, (MTIME, MTIME))
PY
}

# Make the $VARIANT tree at $TREE unless it is there, and refuse a tree that
# was edited since (every mtime is pinned).
ensure_tree() {
  if [[ ! -d $TREE ]]; then
    echo "making the $VARIANT tree in $TREE (once)"
    rm -rf "$TREE.partial"
    case $VARIANT in
      large | small)
        [[ -f $GEN_TREE ]] || die "gen_tree.sh not found at $GEN_TREE (set GEN_TREE=)"
        bash "$GEN_TREE" "$VARIANT" "$TREE.partial"
        ;;
      tiny) make_tiny_tree "$TREE.partial" ;;
      *) die "no such tree: $VARIANT (BENCH_TREE= large, small or tiny)" ;;
    esac
    mv "$TREE.partial" "$TREE"
  fi
  local changed
  if changed=$(find "$TREE" -newermt @1700000000 -print -quit) && [[ -n $changed ]]; then
    die "$changed was modified after $TREE was made; delete $TREE to have it regenerated"
  fi
}

# Use $DROVER if given, else build the release binary; sets BUILT=yes|no
# (read by the scripts that source this).
# shellcheck disable=SC2034
build_drover() {
  if [[ -z ${DROVER:-} ]]; then
    say "building drover (release)"
    (cd "$REPO" && cargo build --release -p drover)
    DROVER=$REPO/target/release/drover
    BUILT=yes
  else
    BUILT=no
  fi
  [[ -x $DROVER ]] || die "drover binary $DROVER not found"
}

# --- quick mode and failing loudly ------------------------------------------
# Whatever stops a script under set -e at its top level says where and what,
# so that no benchmark stops in silence. (Not inside functions: set -e stops
# the script there before the call returns; functions die with a message.)
on_err() { echo "bench/${0##*/}: stopped at line $1 (exit $2): $3" >&2; }
trap 'on_err "$LINENO" "$?" "$BASH_COMMAND"' ERR

# BENCH_QUICK=1 is a smoke test (bench/quick.sh runs every script that way in
# CI): small inputs, one run, targets reported but never enforced. Every
# script still exits non-zero when a case fails or leaves no figure.

quick() { [[ ${BENCH_QUICK:-0} == 1 ]]; }

# Whether a missed target makes the script exit 1: BENCH_STRICT=1, and never
# in quick mode.
strict() { [[ ${BENCH_STRICT:-0} == 1 ]] && ! quick; }

# Say what quick-mode figures are worth; call once $DROVER is known.
quick_note() {
  quick || return 0
  echo "quick mode (BENCH_QUICK=1): a smoke test: small inputs, one run, targets reported but not enforced; its figures mean nothing"
  case ${DROVER:-} in
    */target/debug/*) echo "quick mode: $DROVER is a debug build: its figures mean even less than that" ;;
  esac
  if [[ ${BENCH_STRICT:-0} == 1 ]]; then echo "quick mode: BENCH_STRICT=1 is ignored"; fi
  return 0
}

# Fail unless every named case left a figure: $1 = results dir, then the
# case names; <dir>/<case>.json must be hyperfine's export with a positive,
# finite median.
require_figures() {
  local res=$1
  shift
  python3 - "$res" "$@" <<'PY' || die "a case left no figure (see above); results so far: $res"
import json, math, os, sys
res, names = sys.argv[1], sys.argv[2:]
missing = []
for name in names:
    try:
        m = json.load(open(os.path.join(res, name + ".json")))["results"][0]["median"]
        ok = isinstance(m, (int, float)) and math.isfinite(m) and m > 0
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        ok = False
    if not ok:
        missing.append(name)
if missing:
    print("no figure for: " + ", ".join(missing), file=sys.stderr)
    sys.exit(1)
PY
}

# The script's last line, which bench/quick.sh shows: figures, missed
# targets and where the results are. $1 = results dir, $2 = how many
# figures; reads <dir>/fails (missed targets) and fails if the summary
# (<dir>/summary.md) is missing or empty.
finish() {
  local res=$1 figures=$2 fails
  [[ -s $res/summary.md ]] || die "no summary in $res/summary.md"
  [[ -s $res/fails ]] || die "no count of missed targets in $res/fails"
  fails=$(<"$res/fails")
  [[ $fails =~ ^[0-9]+$ ]] || die "$res/fails holds '$fails', not a count"
  echo
  if ((fails > 0)) && strict; then
    echo "bench: ${0##*/}: FAILED: $figures figures, $fails target(s) missed and BENCH_STRICT=1; results: $res" >&2
    exit 1
  fi
  local mode=""
  if quick; then mode=" (quick mode: not enforced)"; fi
  echo "bench: ${0##*/}: ok: $figures figures, $fails target(s) missed$mode; results: $res"
}
