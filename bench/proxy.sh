#!/usr/bin/env bash
# Proxy benchmark: wrk against a backend directly, through drover's reverse
# proxy (`drover __proxy`, the proxy of `drover serve` with fixed backends)
# and through nginx as a reverse proxy (the peer), all on loopback; checks
# drover's targets. See bench/README.md.
#
#   bench/proxy.sh                  # 3 rounds of 10 s per case, ~7 min
#   BENCH_QUICK=1 bench/proxy.sh    # smoke test: 1 round of 2 s per case, ~40 s
#   DROVER=/path/to/drover bench/proxy.sh   # use an existing binary
#
# Backends:
#   nginx  nginx, 1 worker, keep-alive, a 224-byte static file: a backend
#          that costs almost nothing per request, so the proxy's own cost
#          shows in full (the worst case for a proxy)
#   hello  examples/hello under `drover run` (busybox httpd: a new
#          connection and a fork per request, as a real small app)
# Loads (wrk -t1: one wrk thread, as the 2 cores are shared by wrk, the
# proxy and the backend):
#   busy   -c32 (hello: -c8, since busybox httpd's accept queue holds 9 and a
#          dropped SYN costs Linux's 1 s retransmit timer, whatever the path)
#   single -c1: one request at a time, the latency of the path alone
#
# Knobs (environment):
#   BENCH_DIR      work dir; results go to $BENCH_DIR/results/  [/var/tmp/drover-bench]
#   DROVER         use this drover binary instead of building target/release/drover
#   BENCH_ROUNDS   rounds; in each, the paths take turns        [3; quick: 1]
#   BENCH_SECS     seconds of each wrk run                      [10; quick: 2]
#   BACKENDS       backends to run                              ["nginx hello"; not root: nginx]
#   PROXY_THREADS  worker threads of drover's proxy (1: tokio's  [one per CPU]
#                  current-thread scheduler)
#   BENCH_KEEP=1   keep the work dir
#   BENCH_STRICT=1 exit 1 if a target fails (never in quick mode)
#
# The hello image is built with --sign (the store's host key): the default
# deploy policy runs only signed images with drover's provenance.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/drover-bench}
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
  ROUNDS=${BENCH_ROUNDS:-1} SECS=${BENCH_SECS:-2}
else
  ROUNDS=${BENCH_ROUNDS:-3} SECS=${BENCH_SECS:-10}
fi
if [[ $(id -u) == 0 ]]; then BACKENDS=${BACKENDS:-nginx hello}; else BACKENDS=${BACKENDS:-nginx}; fi

say() { printf '\n== %s\n' "$*"; }
die() { echo "bench/proxy.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"

# ---------------------------------------------------------------------------
say "setup"
# wrk and nginx (the fast backend and the peer proxy) are in
# scripts/setup.sh's list.
bash "$REPO/scripts/setup.sh"
for tool in wrk nginx python3 busybox; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/setup.sh installs it)"
done
if [[ " $BACKENDS " == *" hello "* && $(id -u) != 0 ]]; then
  die "the hello backend runs under drover run: run as root, or BACKENDS=nginx"
fi
build_drover
if [[ $BUILT == yes ]]; then DROVER_FROM=built; else DROVER_FROM=given; fi
quick_note

mkdir -p "$BENCH_DIR"
W=$(mktemp -d "$BENCH_DIR/proxy-work-XXXXXX")
chmod 0755 "$W" # nginx workers run as www-data and read the page from here
STAMP=$(date +%Y%m%d-%H%M%S)
RES=$BENCH_DIR/results/$STAMP-proxy
mkdir -p "$RES/wrk"
STORE=$W/store
PIDS=() # background processes to stop at exit
d() { "$DROVER" --init --store "$STORE" "$@"; }
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -d $STORE ]]; then
    ids=$(d --json ps 2>/dev/null | python3 -c 'import json,sys; print(" ".join(i["id"] for i in json.load(sys.stdin)["items"]))' || true)
    # shellcheck disable=SC2086  # one word per id
    if [[ -n $ids ]]; then d rm --force $ids >/dev/null 2>&1 || true; fi
  fi
  [[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$W"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_http() { # $1 = url: until it answers 200, at most 10 s
  local i
  for ((i = 0; i < 100; i++)); do
    busybox wget -q -O /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  die "$1 did not answer within 10 s"
}
# Starts `drover __proxy` in front of $2; sets the variable named $1 to its port.
start_drover_proxy() { # $1 = variable, $2 = backend address
  local out=$W/proxy-$1.out i addr=
  local threads=()
  [[ -z ${PROXY_THREADS:-} ]] || threads=(--threads "$PROXY_THREADS")
  # Made here, not by the background job's redirection: the loop below may
  # read it before that job has run (sed then fails, and set -e ends the run).
  : >"$out"
  "$DROVER" __proxy --listen 127.0.0.1:0 --backend "$2" "${threads[@]}" >"$out" 2>"$W/proxy-$1.err" &
  PIDS+=($!)
  printf -v "PID_$1" '%s' "$!"
  for ((i = 0; i < 100; i++)); do
    addr=$(sed -n 's/^listening on //p' "$out")
    [[ -z $addr ]] || break
    sleep 0.1
  done
  [[ -n $addr ]] || die "drover __proxy did not start: $(cat "$W/proxy-$1.err")"
  printf -v "$1" '%s' "${addr##*:}"
}

# --- backends and proxies ----------------------------------------------------
mkdir -p "$W"/{www,nginx-backend/tmp,nginx-proxy/tmp}
bash "$REPO/examples/hello/make-rootfs.sh" >/dev/null
cp "$REPO/examples/hello/rootfs/www/index.html" "$W/www/index.html"

NGINX_BACKEND=$(free_port)
cat >"$W/nginx-backend/nginx.conf" <<EOF
# written by bench/proxy.sh: the fast backend
worker_processes 1;
daemon off;
pid $W/nginx-backend/nginx.pid;
error_log $W/nginx-backend/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000; # a new connection now and then is not what this measures
  client_body_temp_path $W/nginx-backend/tmp;
  server { listen 127.0.0.1:$NGINX_BACKEND; root $W/www; }
}
EOF
nginx -p "$W/nginx-backend" -e "$W/nginx-backend/error.log" -c "$W/nginx-backend/nginx.conf" &
PIDS+=($!)
wait_http "http://127.0.0.1:$NGINX_BACKEND/"
echo "nginx backend on :$NGINX_BACKEND"

declare -A DIRECT=([nginx]=$NGINX_BACKEND)
if [[ " $BACKENDS " == *" hello "* ]]; then
  # Signed: the default deploy policy runs only signed images.
  d build --sign -f "$REPO/examples/hello/drover.toml" >/dev/null 2>"$W/build.err" ||
    die "drover build --sign of examples/hello failed: $(tail -n 5 "$W/build.err")"
  d policy check hello:1.0 >"$W/policy.txt" 2>&1 ||
    die "the store's deploy policy refuses hello:1.0: $(cat "$W/policy.txt")"
  HELLO=$(free_port)
  d run hello:1.0 -p "$HELLO" >/dev/null || die "drover run hello:1.0 failed"
  wait_http "http://127.0.0.1:$HELLO/"
  DIRECT[hello]=$HELLO
  echo "hello (busybox httpd under drover run) on :$HELLO"
fi

# nginx as the peer proxy: keep-alive to its upstreams, one worker per CPU
# (nginx's advice); it proxies to both backends, one port each.
declare -A PEER DROVER_PORT
peer_servers=
for b in $BACKENDS; do
  PEER[$b]=$(free_port)
  peer_servers+="
  upstream $b { server 127.0.0.1:${DIRECT[$b]}; keepalive 64; }
  server {
    listen 127.0.0.1:${PEER[$b]};
    location / { proxy_pass http://$b; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"
done
cat >"$W/nginx-proxy/nginx.conf" <<EOF
# written by bench/proxy.sh: the peer reverse proxy
worker_processes auto;
daemon off;
pid $W/nginx-proxy/nginx.pid;
error_log $W/nginx-proxy/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $W/nginx-proxy/tmp;
  proxy_temp_path $W/nginx-proxy/tmp;
$peer_servers
}
EOF
nginx -p "$W/nginx-proxy" -e "$W/nginx-proxy/error.log" -c "$W/nginx-proxy/nginx.conf" &
PIDS+=($!)
PEER_MASTER=$!
for b in $BACKENDS; do
  start_drover_proxy "DP_$b" "127.0.0.1:${DIRECT[$b]}"
  v=DP_$b
  DROVER_PORT[$b]=${!v}
  wait_http "http://127.0.0.1:${PEER[$b]}/"
  wait_http "http://127.0.0.1:${DROVER_PORT[$b]}/"
  echo "$b: direct :${DIRECT[$b]}, drover proxy :${DROVER_PORT[$b]}, nginx proxy :${PEER[$b]}"
done

# --- conditions -------------------------------------------------------------
{
  echo "date: $(date -u +%FT%TZ)"
  echo "runs: $ROUNDS round(s) of ${SECS} s per case; backends: $BACKENDS"
  echo "host: $(nproc) cpus, kernel $(uname -r)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "drover: $("$DROVER" --version) $DROVER ($DROVER_FROM, commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')); proxy threads: ${PROXY_THREADS:-one per CPU}"
  echo "wrk: $(wrk -v 2>&1 | head -n 1 || true)"
  echo "nginx: $(nginx -v 2>&1 | cut -d/ -f2); backend 1 worker, peer proxy $(nproc) workers"
} | tee "$RES/conditions.txt"
# With two cores, anything else running inflates every figure, and not
# evenly: the proxied paths need more CPU than the direct one.
busy=$(cpu_busy)
echo "cpu busy in the 2 s before the first case: $busy%" | tee -a "$RES/conditions.txt"
if ((busy >= 10)); then
  echo "warning: the machine is not idle ($busy% cpu busy); figures will be inflated" |
    tee -a "$RES/conditions.txt" >&2
fi

# --- runs ----------------------------------------------------------------------
TICK=$(getconf CLK_TCK)
# CPU ticks (user + system) used so far by the processes $@.
ticks() { cat "${@/#//proc/}" 2>/dev/null | awk '{ t += $14 + $15 } END { print t + 0 }'; }
ticks_of() { # $1 = path, $2 = backend: the proxy's processes
  local v
  case $1 in
    drover) v=PID_DP_$2; ticks "${!v}/stat" ;;
    nginx)
      local workers
      mapfile -t workers < <(pgrep -P "$PEER_MASTER" | sed 's|$|/stat|')
      ticks "${workers[@]}"
      ;;
    *) echo 0 ;;
  esac
}
port_of() { # $1 = path, $2 = backend
  case $1 in
    direct) echo "${DIRECT[$2]}" ;;
    drover) echo "${DROVER_PORT[$2]}" ;;
    nginx) echo "${PEER[$2]}" ;;
  esac
}
conns_of() { # $1 = load, $2 = backend
  case $1 in
    single) echo 1 ;;
    busy) if [[ $2 == hello ]]; then echo 8; else echo 32; fi ;;
  esac
}
PATHS=(direct drover nginx)
printf 'backend\tload\tpath\tround\tout\tcpu_ticks\n' >"$RES/runs.tsv"
run() { # $1 = backend, $2 = load, $3 = path, $4 = round
  local port conns out t0 t1
  port=$(port_of "$3" "$1")
  conns=$(conns_of "$2" "$1")
  out=$RES/wrk/$1-$2-$3-$4.txt
  t0=$(ticks_of "$3" "$1")
  wrk -t1 -c"$conns" -d"${SECS}s" --latency "http://127.0.0.1:$port/" >"$out" 2>&1 ||
    die "wrk failed: $(tail -n 3 "$out")"
  t1=$(ticks_of "$3" "$1")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$out" "$((t1 - t0))" >>"$RES/runs.tsv"
  printf '  %-6s %-7s %-7s %s, p99 %s\n' "$1" "$2" "$3" \
    "$(awk '/Requests\/sec/ { print $2 " req/s" }' "$out")" "$(awk '$1 == "99%" { print $2 }' "$out")"
}

say "warm-up (1 s per path and backend)"
for b in $BACKENDS; do
  for p in "${PATHS[@]}"; do
    wrk -t1 -c8 -d1s "http://127.0.0.1:$(port_of "$p" "$b")/" >/dev/null
  done
done
for ((r = 1; r <= ROUNDS; r++)); do
  say "round $r of $ROUNDS"
  for b in $BACKENDS; do
    for load in busy single; do
      # The paths take turns, rotating which goes first, so that a burst of
      # outside activity is shared out instead of landing on one path.
      for ((k = 0; k < ${#PATHS[@]}; k++)); do
        run "$b" "$load" "${PATHS[(k + r - 1) % ${#PATHS[@]}]}" "$r"
      done
    done
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RES/conditions.txt"

# drover's proxies print their counters when they stop.
for b in $BACKENDS; do
  v=PID_DP_$b
  kill -TERM "${!v}"
  wait "${!v}" || true
  echo "drover proxy for $b: $(tail -n 1 "$W/proxy-DP_$b.err")" | tee -a "$RES/conditions.txt"
done

# ---------------------------------------------------------------------------
say "results (medians over $ROUNDS round(s))"
# shellcheck disable=SC2086  # one argument per backend
python3 - "$RES" "$TICK" $BACKENDS <<'PY' | tee "$RES/summary.md"
import csv, os, re, statistics, sys

res, tick, backends = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}

def ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * UNIT[m.group(2)]

def parse(path):
    out = open(path).read()
    r = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
         "n": int(re.search(r"(\d+) requests in", out).group(1))}
    for q in ("50", "99"):
        r["p" + q] = ms(re.search(rf"^\s+{q}%\s+(\S+)", out, re.M).group(1))
    errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["errors"] = errs + (int(m.group(1)) if m else 0)
    return r

cases = {}
for row in csv.DictReader(open(os.path.join(res, "runs.tsv")), delimiter="\t"):
    r = parse(row["out"])
    r["cpu_us"] = int(row["cpu_ticks"]) / tick * 1e6 / max(r["n"], 1)
    cases.setdefault((row["backend"], row["load"], row["path"]), []).append(r)
# Every backend, load and path must have run and served requests.
missing = [f"{b} {load} {path}" for b in backends for load in ("busy", "single")
           for path in ("direct", "drover", "nginx")
           if not any(r["n"] > 0 and r["rps"] > 0 for r in cases.get((b, load, path), []))]
if not backends or missing:
    sys.exit("no figure for: " + (", ".join(missing) or "any backend (BACKENDS is empty)"))

def med(key, k):
    return statistics.median(r[k] for r in cases[key])

LOADS = {"busy": "busy (-c32; hello -c8)", "single": "one at a time (-c1)"}
PATHS = {"direct": "direct", "drover": "drover proxy", "nginx": "nginx proxy (peer)"}
print("| backend | load | path | req/s | p50 | p99 | errors | proxy CPU per request | req/s of each round |")
print("|---|---|---|---|---|---|---|---|---|")
for (b, load, path) in sorted(cases, key=lambda c: (c[0], list(LOADS).index(c[1]), list(PATHS).index(c[2]))):
    key = (b, load, path)
    cpu = "—" if path == "direct" else f"{med(key, 'cpu_us'):.1f} µs"
    rounds = ", ".join(f"{r['rps']:.0f}" for r in cases[key])
    print(f"| {b} | {LOADS[load]} | {PATHS[path]} | {med(key, 'rps'):.0f} | {med(key, 'p50'):.2f} ms | "
          f"{med(key, 'p99'):.2f} ms | {sum(r['errors'] for r in cases[key])} | {cpu} | {rounds} |")

print("\nTargets (drover proxy against direct; the nginx proxy's figures beside, for scale):\n")
print("| backend | load | measure | drover | nginx proxy | target | result |")
print("|---|---|---|---|---|---|---|")
fails = 0
for b in sorted({c[0] for c in cases}):
    for load in LOADS:
        d = (b, load, "direct")
        if d not in cases:
            continue
        def ratio(p):
            return med((b, load, p), "rps") / med(d, "rps")
        def added(p):
            return med((b, load, p), "p99") - med(d, "p99")
        checks = [("added p99", lambda p: f"{added(p):+.2f} ms", "≤ 1 ms", added("drover") <= 1.0)]
        if load == "busy":
            checks.insert(0, ("req/s vs direct", lambda p: f"{ratio(p):.2f}×", "≥ 0.90×", ratio("drover") >= 0.90))
        for what, show, target, ok in checks:
            fails += not ok
            print(f"| {b} | {LOADS[load]} | {what} | {show('drover')} | {show('nginx')} | {target} | {'PASS' if ok else 'FAIL'} |")
        errs = sum(r["errors"] for p in ("drover",) for r in cases[(b, load, p)])
        if errs:
            fails += 1
            print(f"| {b} | {LOADS[load]} | failed requests | {errs} | | 0 | FAIL |")
open(os.path.join(res, "fails"), "w").write(str(fails))
PY
# shellcheck disable=SC2086  # one word per backend
set -- $BACKENDS
finish "$RES" $(($# * 6))
