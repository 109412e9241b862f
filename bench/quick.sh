#!/usr/bin/env bash
# Every benchmark in quick mode, one after another: a smoke test that the
# benchmarks still run, not a measurement. CI runs it (.ci/run) so that a
# change that breaks a benchmark cannot land. See bench/README.md.
#
#   bench/quick.sh                                  # builds target/debug/drover first
#   DROVER=target/debug/drover bench/quick.sh       # use an existing binary (CI)
#   bench/quick.sh deploy runtime                   # only these scripts
#
# Each script runs with BENCH_QUICK=1 (tiny inputs, one run, targets
# reported but not enforced); its output goes to a log, and quick.sh prints
# one line per script: its result line (figures, missed targets, results
# directory) and how long it took. At the first script that fails, or that
# ends without its result line, quick.sh prints the end of its log and exits
# 1 naming it. Runs as root (runc, namespaces, buildah), like the scripts.
# packages.sh reaches deb.debian.org (it installs real Debian packages); the
# others send traffic only to loopback.
#
# Knobs (environment):
#   DROVER        drover binary for every script  [cargo build -p drover; target/debug/drover]
#   BENCH_DIR     passed on to the scripts        [/var/tmp/drover-bench]
#   QUICK_LOGS    where the logs go               [$BENCH_DIR/quick-logs/<time>]
#   QUICK_VERBOSE=1  also show each script's output as it runs
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/drover-bench}
ALL=(build deploy drift fleet packages proxy registry roots runtime)

die() { echo "bench/quick.sh: $*" >&2; exit 1; }

if (($#)); then SCRIPTS=("$@"); else SCRIPTS=("${ALL[@]}"); fi
for s in "${SCRIPTS[@]}"; do
  [[ -f $REPO/bench/${s%.sh}.sh ]] || die "no bench/${s%.sh}.sh (scripts: ${ALL[*]})"
done

if [[ -z ${DROVER:-} ]]; then
  echo "bench/quick.sh: building drover (debug: quick mode times nothing that matters)"
  (cd "$REPO" && cargo build -p drover)
  DROVER=$REPO/target/debug/drover
fi
[[ -x $DROVER ]] || die "drover binary $DROVER not found (build it with cargo build -p drover, or set DROVER=)"
DROVER=$(realpath "$DROVER")

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
LOGS=${QUICK_LOGS:-$BENCH_DIR/quick-logs/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$LOGS"

echo "bench/quick.sh: ${#SCRIPTS[@]} benchmark(s) in quick mode with $DROVER; logs in $LOGS"
echo "bench/quick.sh: quick-mode figures mean nothing (tiny inputs, one run$(
  [[ $DROVER == */target/debug/* ]] && echo ', a debug build')); this only checks that every case runs and reports"
start=$SECONDS
lines=()
for s in "${SCRIPTS[@]}"; do
  s=${s%.sh}
  log=$LOGS/$s.log
  t0=$SECONDS
  rc=0
  if [[ ${QUICK_VERBOSE:-0} == 1 ]]; then
    BENCH_QUICK=1 BENCH_STRICT=0 DROVER=$DROVER BENCH_DIR=$BENCH_DIR \
      bash "$REPO/bench/$s.sh" </dev/null 2>&1 | tee "$log" || rc=$?
  else
    BENCH_QUICK=1 BENCH_STRICT=0 DROVER=$DROVER BENCH_DIR=$BENCH_DIR \
      bash "$REPO/bench/$s.sh" </dev/null >"$log" 2>&1 || rc=$?
  fi
  took=$((SECONDS - t0))
  # The scripts' last word (lib.sh's finish): "bench: <script>: ok: ...".
  result=$(grep "^bench: $s.sh: ok: " "$log" | tail -n 1 || true)
  if ((rc != 0)) || [[ -z $result ]]; then
    {
      echo
      echo "---- last 40 lines of $log ----"
      tail -n 40 "$log"
      echo "----"
      if ((rc != 0)); then
        echo "bench/quick.sh: FAILED: bench/$s.sh exited $rc after ${took} s (full log: $log)"
      else
        echo "bench/quick.sh: FAILED: bench/$s.sh exited 0 but printed no result line (full log: $log)"
      fi
    } >&2
    exit 1
  fi
  line=$(printf '%-12s %4d s  %s' "$s.sh" "$took" "${result#bench: "$s.sh": ok: }")
  lines+=("$line")
  echo "  ok  $line"
done
echo "bench/quick.sh: all ${#SCRIPTS[@]} benchmark(s) ran in quick mode in $((SECONDS - start)) s:"
printf '  %s\n' "${lines[@]}"
