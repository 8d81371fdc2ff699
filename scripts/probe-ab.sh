#!/usr/bin/env bash
# 1:1 A/B probe (not the benchmark): relay CPU per packet and the sink's p99 for several relay
# binaries, alternated round by round on one topology.
#   gen (raw mode, CPU 0) -> [r0] BIN forward (CPU 1) [r1] -> s0 sink (CPU 1), 1316 B, group rewrite
# CPU is every thread of every process in the relay namespace (/proc/PID/task/*/schedstat), read
# just before the generator starts and just after it ends, divided by the packets sent. Each round
# prints the steal ticks of CPU 0 and CPU 1 (/proc/stat, 10 ms each) before and after it.
# Usage: scripts/probe-ab.sh RATE COUNT ROUNDS BIN_A [BIN_B ...]
# SINKARGS="--gro" passes options to the sink (the benchmark's sinks use --gro); DUMP=1 prints
# the worker's counters. The generator and sink are each BIN itself, or TOOLS=PATH for all (to
# compare relays with the same generator and sink). Needs root and jq.
# For published figures use `bun run bench`.
set -u
RATE=${1:?rate}; COUNT=${2:?count}; ROUNDS=${3:?rounds}; shift 3
[ $# -ge 1 ] || { echo "give at least one relay binary" >&2; exit 2; }
P=mcr-$$-ab
D=$(mktemp -d)
cleanup() {
  for pid in $(jobs -p); do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  for n in g r s; do ip netns del $P-$n 2>/dev/null; done
  rm -rf "$D"
}
trap cleanup EXIT
for n in g r s; do ip netns add $P-$n; ip -n $P-$n link set lo up; done
ip -n $P-g link add g0 type veth peer name r0 netns $P-r
ip -n $P-r link add r1 type veth peer name s0 netns $P-s
ip -n $P-g addr add 10.99.1.1/24 dev g0; ip -n $P-g link set g0 up
ip -n $P-r addr add 10.99.1.2/24 dev r0; ip -n $P-r link set r0 up
ip -n $P-r addr add 10.99.2.1/24 dev r1; ip -n $P-r link set r1 up
ip -n $P-s addr add 10.99.2.2/24 dev s0; ip -n $P-s link set s0 up
ip -n $P-g route add 224.0.0.0/4 dev g0
relay_cpu_ns() {
  local sum=0 v p
  for p in $(ip netns pids $P-r); do
    v=$(cat /proc/$p/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}')
    sum=$((sum + ${v:-0}))
  done
  echo $sum
}
steal() { awk '/^cpu0 /{a=$9} /^cpu1 /{b=$9} END{print a","b}' /proc/stat; }
for r in $(seq 1 "$ROUNDS"); do
  for B in "$@"; do
    T=${TOOLS:-$B}
    ip netns exec $P-r taskset -c 1 "$B" forward --from 239.1.1.1:5000@r0 --to 239.2.2.2:6000@r1 --duration 120 --json > $D/fwd.json 2>$D/fwd.err &
    F=$!
    ip netns exec $P-s taskset -c 1 "$T" sink ${SINKARGS:-} --listen 239.2.2.2:6000@s0 --duration 120 --idle 1 --json > $D/sink.json 2>/dev/null &
    S=$!
    sleep 1.5
    st0=$(steal); c0=$(relay_cpu_ns)
    ip netns exec $P-g taskset -c 0 "$T" gen --mode raw --to 239.1.1.1:5000@g0 --rate "$RATE" --count "$COUNT" --size 1316 --json > $D/gen.json
    c1=$(relay_cpu_ns); st1=$(steal)
    wait $S
    kill -INT $F; wait $F
    [ -n "${DUMP:-}" ] && jq -c '.workers[0].counters' $D/fwd.json
    echo "round $r $(basename "$B") sent $(jq .sent $D/gen.json) got $(jq '.totals.received // 0' $D/sink.json)" \
      "cpu_ns_per_pkt $(( (c1 - c0) / COUNT )) p99_us $(jq -c '.streams[0].latency_us.p99 // empty' $D/sink.json)" \
      "[send_calls,gso_sends,ring_drops] $(jq -c '[.workers[0].counters.tx_send_calls, .workers[0].counters.tx_gso_sends, .workers[0].counters.kernel_drops]' $D/fwd.json)" \
      "steal_ticks $st0 -> $st1"
  done
done
