#!/usr/bin/env bash
# Quick throughput probe (not the benchmark): gen -> dist/mcrelay forward -> sink in three
# namespaces, generator pinned to CPU 0, relay and sink to CPU 1. Prints what the sink got,
# the relay's counters and the worker's CPU time. Usage: scripts/probe-throughput.sh RATE COUNT
# Needs root, dist/mcrelay, jq. For published figures use `bun run bench`.
set -u
trap 'for n in g r s; do ip netns del $P-$n 2>/dev/null; done' EXIT
RATE=${1:-200000}; COUNT=${2:-1000000}
P=mcr-probe-$$
M=$(cd "$(dirname "$0")/.." && pwd)/dist/mcrelay
for n in g r s; do ip netns add $P-$n; ip -n $P-$n link set lo up; done
ip -n $P-g link add g0 type veth peer name r0 netns $P-r
ip -n $P-r link add r1 type veth peer name s0 netns $P-s
ip -n $P-g addr add 10.99.1.1/24 dev g0; ip -n $P-g link set g0 up
ip -n $P-r addr add 10.99.1.2/24 dev r0; ip -n $P-r link set r0 up
ip -n $P-r addr add 10.99.2.1/24 dev r1; ip -n $P-r link set r1 up
ip -n $P-s addr add 10.99.2.2/24 dev s0; ip -n $P-s link set s0 up
ip -n $P-g route add 224.0.0.0/4 dev g0
D=$(mktemp -d)
ip netns exec $P-r taskset -c 1 $M forward --from 239.1.1.1:5000@r0 --to 239.2.2.2:6000@r1 --duration 15 --json > $D/fwd.json 2>$D/fwd.err &
ip netns exec $P-s taskset -c 1 $M sink --listen 239.2.2.2:6000@s0 --duration 15 --idle 2 --json > $D/sink.json 2>/dev/null &
sleep 2
ip netns exec $P-g taskset -c 0 $M gen --to 239.1.1.1:5000@g0 --rate $RATE --count $COUNT --size 1316 --json | jq -c '{sent, rate_pps}'
W=$(for p in $(ip netns pids $P-r); do grep -q "_worker" /proc/$p/cmdline 2>/dev/null && echo $p; done | head -1)
echo "worker cpu ns: $(awk '{s+=$1} END {print s}' /proc/$W/task/*/schedstat)"
sleep 3
wait %2
jq -c '.totals' $D/sink.json
kill -INT %1; wait %1
jq -c '.rules[0] | {packets, out: .outputs[0].packets, err: .outputs[0].send_errors}' $D/fwd.json
jq -c '.workers[0].counters | {rx_frames, kernel_packets, kernel_drops, rx_blocks, polls, tx_errors, tx_gso_sends, coalesced, run_calls}' $D/fwd.json
ip -n $P-r -s link show r0 | grep -A1 RX | tail -1
rm -rf $D
