#!/usr/bin/env bash
# Run drover's fuzz targets (the proptest properties in drover-core's
# `fuzz.rs` files) for a long time: scripts/fuzz.sh [duration]
#
#   scripts/fuzz.sh            # 10 minutes
#   scripts/fuzz.sh 1h         # durations: 90, 90s, 30m, 1h
#   FUZZ_CASES=5000 scripts/fuzz.sh 2h
#
# Each round runs every target once with FUZZ_CASES cases (default 2000; a
# tenth of that for the targets that build a store per case), each round
# with fresh random seeds, until the time is up. A failing case is shrunk
# and saved by proptest under crates/drover-core/proptest-regressions/
# (commit those files: every later run, `cargo test` included, tries them
# first); its report goes to $FUZZ_OUT (default /tmp/drover-fuzz.<pid>).
# At the end: per target, rounds, cases run and failures. Exit 1 if any
# target failed.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

duration=${1:-10m}
case $duration in
  *h) seconds=$((${duration%h} * 3600)) ;;
  *m) seconds=$((${duration%m} * 60)) ;;
  *s) seconds=${duration%s} ;;
  *[!0-9]* | '') echo "fuzz.sh: $duration is not a duration (e.g. 90, 30m, 1h)" >&2; exit 2 ;;
  *) seconds=$duration ;;
esac
cases=${FUZZ_CASES:-2000}
out=${FUZZ_OUT:-/tmp/drover-fuzz.$$}
mkdir -p "$out"

# One build, then a private copy of the test binary: rebuilding the
# workspace during a long run must not swap it out from under us.
exe=$(cargo test -p drover-core --lib --no-run 2>&1 |
  sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))/\1/p' | tail -1)
[[ -n $exe ]] || { echo "fuzz.sh: could not build drover-core's tests" >&2; exit 1; }
bin="$out/drover_core-tests"
cp "$exe" "$bin"
# The tests run where cargo runs them, so proptest finds its regression files.
cd crates/drover-core

mapfile -t targets < <("$bin" --list fuzz:: 2>/dev/null | sed -n 's/: test$//p')
[[ ${#targets[@]} -gt 0 ]] || { echo "fuzz.sh: no fuzz targets found" >&2; exit 1; }

declare -A rounds=() ran=() failed=()
for t in "${targets[@]}"; do rounds[$t]=0 ran[$t]=0 failed[$t]=0; done

echo "fuzz.sh: ${#targets[@]} targets for ${seconds}s, $cases cases a round; reports in $out"
end=$((SECONDS + seconds))
round=0
while ((SECONDS < end)); do
  round=$((round + 1))
  for t in "${targets[@]}"; do
    left=$((end - SECONDS))
    ((left > 0)) || break
    n=$cases
    # These build a store (SQLite, files) per case: a hundred times slower.
    [[ $t == *unpack::fuzz::hostile_layers* || $t == *the_store_reads* ]] && n=$((cases / 10))
    log="$out/round-$round.${t//::/.}.log"
    if PROPTEST_CASES=$n timeout "$left" "$bin" --exact "$t" --test-threads=1 >"$log" 2>&1; then
      rounds[$t]=$((rounds[$t] + 1))
      ran[$t]=$((ran[$t] + n))
      rm -f "$log"
    else
      rc=$?
      if ((rc == 124)); then
        echo "$(date -u +%T) $t: stopped at the deadline (round $round not counted)"
        rm -f "$log"
        break
      fi
      rounds[$t]=$((rounds[$t] + 1))
      failed[$t]=$((failed[$t] + 1))
      echo "$(date -u +%T) $t: FAILED in round $round; see $log"
      grep -m1 -E 'Test failed|panicked' "$log" || true
    fi
  done
  echo "$(date -u +%T) round $round done"
done

echo
printf '%-80s %7s %10s %8s\n' target rounds cases failures
status=0
for t in "${targets[@]}"; do
  printf '%-80s %7d %10d %8d\n' "$t" "${rounds[$t]}" "${ran[$t]}" "${failed[$t]}"
  ((failed[$t] == 0)) || status=1
done
git status --short -- proptest-regressions 2>/dev/null | sed 's/^/new regression file: /' || true
exit $status
