#!/usr/bin/env bash
# Fleet scale benchmark: 10, 100 and 1,000 simulated hosts on one
# PostgreSQL. Each host is a real `hosts` row doing what a joined serve does
# against the database every pass (heartbeat, fleet check, agent pass over
# its placements, route read and proxy beat, LISTEN for changes); a leader
# places a fleet-wide rollout (S services x R replicas over every host) and
# NOTIFYs. Measures the decision time, the time until every host saw its
# placements, statements and commits per host-pass, PostgreSQL's CPU and its
# connections, and pgbench's simple-update TPS on the same cluster as a
# scale. See bench/README.md ("Fleet scale benchmark").
#
#   bench/fleet.sh                    # N = 10, 100, 1000 (~3 min)
#   BENCH_QUICK=1 bench/fleet.sh      # smoke test: N = 10, 2 s of steady state (~10 s)
#   FLEET_SIM=/path/to/fleet_sim bench/fleet.sh   # an existing simulator binary
#
# Knobs (environment):
#   BENCH_DIR     work dir; results go to $BENCH_DIR/results/   [/var/tmp/drover-bench]
#   FLEET_SIM     the simulator (cargo build --release -p drover-core --example fleet_sim)
#   HOSTS         host counts to run, in turn                    ["10 100 1000"; quick: 10]
#   SERVICES      services in the rollout                        [10]
#   STEADY        seconds of steady state measured per N         [15; quick: 2]
#   WORKERS       simulator workers (each: 3 connections)        [min(N, 32)]
#   READ_FIRST    also run the largest N with the fleet check reading
#                 before it takes the write lock (the first fix)  [1; quick: 0]
#
# Runs as root: the throwaway cluster runs as the `postgres` user (initdb
# refuses root), on a unix socket and 127.0.0.1 only, and is deleted after.
# Nomad and Kubernetes cannot be installed here (no binary downloads), so
# there is no peer; pgbench on the same cluster gives the figures a scale.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/drover-bench}
SERVICES=${SERVICES:-10}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  HOSTS=${HOSTS:-10} STEADY=${STEADY:-2}
else
  HOSTS=${HOSTS:-10 100 1000} STEADY=${STEADY:-15}
fi

say() { printf '\n== %s\n' "$*"; }
die() { echo "bench/fleet.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

[[ $(id -u) == 0 ]] || die "run as root (the cluster runs as the postgres user)"
id postgres >/dev/null 2>&1 || die "no postgres user (scripts/setup.sh installs PostgreSQL 15)"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[[ -x $PGBIN/initdb ]] || die "PostgreSQL not installed (scripts/setup.sh)"
command -v python3 >/dev/null || die "python3 is needed for the summary"

if [[ -z ${FLEET_SIM:-} ]]; then
  if quick; then
    say "building the simulator (debug: quick mode times nothing that matters)"
    (cd "$REPO" && cargo build -p drover-core --example fleet_sim)
    FLEET_SIM=${CARGO_TARGET_DIR:-$REPO/target}/debug/examples/fleet_sim
  else
    say "building the simulator (release)"
    (cd "$REPO" && cargo build --release -p drover-core --example fleet_sim)
    FLEET_SIM=${CARGO_TARGET_DIR:-$REPO/target}/release/examples/fleet_sim
  fi
fi
[[ -x $FLEET_SIM ]] || die "simulator $FLEET_SIM not found"
quick_note

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
RES=$BENCH_DIR/results/$(date +%Y%m%d-%H%M%S)-fleet
mkdir -p "$RES"
W=$(mktemp -d /tmp/drover-fleet-XXXXXX)
chmod 755 "$W"
PGDATA=$W/data SOCK=$W/sock
mkdir -p "$SOCK"
chown postgres: "$W" "$SOCK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
  if [[ -f $PGDATA/postmaster.pid ]]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$W"
}
trap cleanup EXIT

say "a throwaway PostgreSQL cluster in $W (port $PORT, pg_stat_statements)"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U drover --auth=trust --encoding=UTF8 --locale=C -N >"$RES/initdb.log"
# Default durability (fsync, synchronous_commit): commits cost what they
# would on a real fleet's database. max_connections is 300: the simulator
# uses 2 per worker thread, not per host (see the README's Fleet scale).
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$W/pg.log" -w -o "-p $PORT -k $SOCK \
  -c listen_addresses=127.0.0.1 -c max_connections=300 \
  -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all" start >/dev/null
PSQL=(as_pg "$PGBIN/psql" -h "$SOCK" -p "$PORT" -U drover -X -q -v ON_ERROR_STOP=1)
{
  echo "date: $(date -u +%FT%TZ)"
  echo "postgres: $("$PGBIN/postgres" --version)"
  echo "cpus: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "simulator: $FLEET_SIM"
  echo "services: $SERVICES; steady: $STEADY s; hosts: $HOSTS"
} >"$RES/conditions.txt"

say "pgbench simple-update on the same cluster (a scale for the figures)"
"${PSQL[@]}" -d postgres -c "CREATE DATABASE pgbench"
PGB_SCALE=$( (quick && echo 1) || echo 10)
as_pg "$PGBIN/pgbench" -h "$SOCK" -p "$PORT" -U drover -i -q -s "$PGB_SCALE" pgbench >"$RES/pgbench-init.log" 2>&1
PGB_T=$( (quick && echo 1) || echo 15)
as_pg "$PGBIN/pgbench" -h "$SOCK" -p "$PORT" -U drover -N -c 8 -j 2 -T "$PGB_T" pgbench >"$RES/pgbench.log" 2>&1 \
  || die "pgbench failed: $(tail -n 5 "$RES/pgbench.log")"
PGB_TPS=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$RES/pgbench.log" | head -n 1)
[[ -n $PGB_TPS ]] || die "no TPS in $RES/pgbench.log"
echo "pgbench -N (simple-update), 8 clients, ${PGB_T} s: $PGB_TPS TPS"
echo "$PGB_TPS" >"$RES/pgbench.tps"

RUNS=()
for n in $HOSTS; do RUNS+=("$n:write"); done
if [[ ${READ_FIRST:-$( (quick && echo 0) || echo 1)} == 1 ]]; then
  # shellcheck disable=SC2086  # one word per host count
  RUNS+=("$(printf '%s\n' $HOSTS | sort -n | tail -n 1):read-first")
fi
for run in "${RUNS[@]}"; do
  n=${run%%:*} check=${run#*:}
  say "N = $n hosts, fleet check: $check"
  db=fleet$n${check/-/_}
  if [[ $check == write ]]; then db=fleet$n; fi
  "${PSQL[@]}" -d postgres -c "CREATE DATABASE $db TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
  "${PSQL[@]}" -d "$db" -c "CREATE EXTENSION pg_stat_statements"
  "${PSQL[@]}" -d "$db" -c "SELECT pg_stat_statements_reset()" >/dev/null
  workers=${WORKERS:-$((n < 32 ? n : 32))}
  replicas=$((n / 5 > 3 ? n / 5 : 3))
  "$FLEET_SIM" --url "postgresql:///$db?user=drover&host=$SOCK&port=$PORT" \
    --hosts "$n" --services "$SERVICES" --replicas "$replicas" --workers "$workers" \
    --steady "$STEADY" --check "$check" --pgdata "$PGDATA" --work "$W/sim-$db" | tee "$RES/$db.txt" \
    || die "the simulator failed for N = $n ($check)"
  echo "replicas=$replicas" >>"$RES/$db.txt"
  echo "workers=$workers" >>"$RES/$db.txt"
  echo "check=$check" >>"$RES/$db.txt"
  # The statements the passes ran most, for what breaks first.
  "${PSQL[@]}" -d "$db" -A -F ' | ' -c "SELECT calls, round(total_exec_time::numeric, 0) AS ms, \
    left(regexp_replace(query, '\s+', ' ', 'g'), 90) FROM pg_stat_statements s JOIN pg_database d \
    ON d.oid = s.dbid WHERE d.datname = '$db' ORDER BY total_exec_time DESC LIMIT 8" >"$RES/$db-statements.txt"
done

python3 - "$RES" "$PGB_TPS" "${RUNS[@]}" >"$RES/summary.md" <<'PY'
import os, sys
res, tps, runs = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
def load(run):
    n, check = run.split(":")
    db = f"fleet{n}" if check == "write" else f"fleet{n}{check.replace('-', '_')}"
    out = {}
    for line in open(os.path.join(res, f"{db}.txt")):
        k, _, v = line.strip().partition("=")
        if _:
            out[k] = v
    return out
rows = {(run.split(":")[0] + ("" if run.endswith(":write") else " (check reads first)")): load(run) for run in runs}
need = ["decision_ms", "propagation_p50_ms", "propagation_p99_ms", "statements_per_host_pass",
        "commits_per_s", "pg_cpu_pct", "connections", "hosts_seen", "hosts_placed"]
for n, r in rows.items():
    missing = [k for k in need if k not in r]
    if missing:
        sys.exit(f"N = {n}: no figure for {', '.join(missing)}")
print(f"pgbench simple-update on the same cluster: {tps:.0f} TPS (8 clients)\n")
print("| hosts | placements | decision (place + record) | propagation p50 / p99 | hosts seen | statements / host-pass | commits / host-pass | commits/s | passes / host / s | PG CPU | connections | hosts marked down |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for n, r in rows.items():
    print(f"| {n} | {r['placements']} | {float(r['decision_ms']):.0f} ms ({float(r['place_ms']):.0f} + {float(r['record_ms']):.0f}) "
          f"| {r['propagation_p50_ms']} / {r['propagation_p99_ms']} ms | {r['hosts_seen']}/{r['hosts_placed']} "
          f"| {r['statements_per_host_pass']} | {r['commits_per_host_pass']} | {r['commits_per_s']} "
          f"| {r['passes_per_host_s']} | {r['pg_cpu_pct']} % | {r['connections']} | {r['hosts_marked_down']} |")
open(os.path.join(res, "fails"), "w").write("0")
PY
echo
cat "$RES/summary.md"
finish "$RES" $((${#RUNS[@]} * 7 + 1))
