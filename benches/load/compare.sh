#!/usr/bin/env bash
# keel vs etcd, same machine, same client, same parameters: starts a 3-member keel cluster and
# a 3-member etcd cluster (Debian's etcd-server) on 127.0.0.1, runs each workload of the
# etcd-load tool against both, and prints the figures and keel/etcd ratios.
#
#   bash benches/load/compare.sh            # default parameters
#   TOTAL=50000 bash benches/load/compare.sh
#   RUNS=5 WORKLOADS="put:64 range-l:64" bash benches/load/compare.sh
#
# RUNS (default 1): each workload runs that many times against each cluster, alternating
# keel and etcd, and the table gives the median ops/s and the median p99 of each (so one
# slow run of a noisy machine does not decide the ratio); the raw figures list every run.
# WORKLOADS (default: all): which "workload:clients" pairs to run.
#
# Needs: etcd (apt-get install etcd-server), a release build of keel and etcd-load (built here).
set -euo pipefail
cd "$(dirname "$0")/../.."

TOTAL=${TOTAL:-20000}
RUNS=${RUNS:-1}
WORKLOADS=${WORKLOADS:-"put:1 put:16 put:64 range-l:64 range-s:64 txn:64 keepalive:16 watch:16"}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ -f "$work/pids" ]; then
    while read -r p; do kill -9 "$p" 2>/dev/null || true; done <"$work/pids"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 1; }
# One cargo command for both: building the packages separately unifies features differently
# and compiles RocksDB's C++ twice.
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release -q -p keel-server --bin keel -p keel-benches --bin etcd-load
fi
KEEL=target/release/keel
LOAD=target/release/etcd-load

# start_cluster <binary> <base port> <token>: three members, client ports base+0,2,4.
start_cluster() {
  local bin=$1 base=$2 token=$3 initial="" i
  for i in 0 1 2; do
    initial+="m$i=http://127.0.0.1:$((base + 2 * i + 1)),"
  done
  initial=${initial%,}
  for i in 0 1 2; do
    "$bin" --name "m$i" --data-dir "$work/$token-m$i" \
      --listen-client-urls "http://127.0.0.1:$((base + 2 * i))" \
      --advertise-client-urls "http://127.0.0.1:$((base + 2 * i))" \
      --listen-peer-urls "http://127.0.0.1:$((base + 2 * i + 1))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((base + 2 * i + 1))" \
      --initial-cluster "$initial" --initial-cluster-token "$token" \
      --initial-cluster-state new >"$work/$token-m$i.log" 2>&1 &
    echo $! >>"$work/pids"
  done
  local eps="127.0.0.1:$base,127.0.0.1:$((base + 2)),127.0.0.1:$((base + 4))"
  for _ in $(seq 1 200); do
    if ETCDCTL_API=3 etcdctl --endpoints "$eps" put ready 1 >/dev/null 2>&1; then
      echo "$eps"
      return
    fi
    sleep 0.1
  done
  echo "cluster $token did not start" >&2
  exit 1
}

# Below Linux's ephemeral port range (32768-60999): a port there can be held by an outgoing
# connection of an earlier run, and a member that cannot listen dies at start.
keel_eps=$(start_cluster "$KEEL" 22379 keel)
etcd_eps=$(start_cluster etcd 23379 etcd)

field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

printf '%-10s %-8s %12s %12s %8s %10s %10s %8s\n' workload clients keel_ops/s etcd_ops/s ratio keel_p99 etcd_p99 p99_ratio
# median of the numbers on stdin
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

run() {
  local workload=$1 clients=$2 k e i
  : >"$work/ko"; : >"$work/eo"; : >"$work/kp"; : >"$work/ep"
  for i in $(seq 1 "$RUNS"); do
    k=$("$LOAD" --endpoints "$keel_eps" --workload "$workload" --clients "$clients" --total "$TOTAL" --label keel)
    e=$("$LOAD" --endpoints "$etcd_eps" --workload "$workload" --clients "$clients" --total "$TOTAL" --label etcd)
    echo "$k" >>"$work/raw"
    echo "$e" >>"$work/raw"
    field "$k" ops_per_s >>"$work/ko"; field "$e" ops_per_s >>"$work/eo"
    field "$k" p99_ms >>"$work/kp"; field "$e" p99_ms >>"$work/ep"
  done
  local ko eo kp ep
  ko=$(median <"$work/ko"); eo=$(median <"$work/eo")
  kp=$(median <"$work/kp"); ep=$(median <"$work/ep")
  printf '%-10s %-8s %12s %12s %8.2f %10s %10s %8.2f\n' "$workload" "$clients" "$ko" "$eo" \
    "$(awk "BEGIN{print $ko/$eo}")" "$kp" "$ep" "$(awk "BEGIN{print $kp/$ep}")"
}

for pair in $WORKLOADS; do
  run "${pair%%:*}" "${pair##*:}"
done
echo
echo "raw figures:"
cat "$work/raw"
