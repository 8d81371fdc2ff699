#!/usr/bin/env bash
# Fan-out CPU probe (not the benchmark): relay CPU per input packet and per copy for a 1:N
# rule, A/B over several relay binaries, alternated round by round on one topology.
#   gen (raw mode, CPU 0) -> [r0] relay (CPU 1) [r1..rN] -> s0 in N sink namespaces
#   (one `mcrelay sink` each, on CPU 0 as the benchmark does beyond 8 outputs).
# CPU is every thread of every process in the relay namespace (/proc/PID/task/*/schedstat),
# read just before the generator starts and just after it ends, divided by the copies the relay
# sent (its tx_packets; tx_errors are printed). The sinks' UDP layers (/proc/net/snmp
# InDatagrams + RcvbufErrors) show what was read or dropped at a socket by then.
# Usage: scripts/probe-fanout.sh FANOUT RATE SECONDS ROUNDS BIN_A [BIN_B ...]
# SINKARGS="--gro" passes arguments to every sink; SINK_RPS=MASK writes MASK to each sink veth's
# rps_cpus (e.g. 1: the receivers' softirq on CPU 0, off the relay's CPU, as on a wire where the
# receivers are other hosts).
# PERF_DIR=dir also records a perf profile of the relay per run (dir/<round>-<bin>.data; its
# cost is in that run's CPU figure).
# The generator and sinks are dist/mcrelay. Needs root. For published figures use `bun run bench`.
set -u
FANOUT=${1:?fanout}; RATE=${2:?rate}; SECS=${3:?seconds}; ROUNDS=${4:?rounds}; shift 4
BINS=("$@")
[ ${#BINS[@]} -ge 1 ] || { echo "give at least one relay binary" >&2; exit 2; }
P=mcr-$$-fan
M=$(cd "$(dirname "$0")/.." && pwd)/dist/mcrelay
cleanup() {
  for pid in $(jobs -p); do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  ip netns del $P-g 2>/dev/null; ip netns del $P-r 2>/dev/null
  for i in $(seq 1 "$FANOUT"); do ip netns del $P-s$i 2>/dev/null; done
}
trap cleanup EXIT
ip netns add $P-g; ip netns add $P-r
for n in g r; do ip -n $P-$n link set lo up; done
ip -n $P-g link add g0 type veth peer name r0 netns $P-r
ip -n $P-g addr add 10.99.1.1/24 dev g0; ip -n $P-g link set g0 up
ip -n $P-r addr add 10.99.1.2/24 dev r0; ip -n $P-r link set r0 up
ip -n $P-g route add 224.0.0.0/4 dev g0
TO=()
for i in $(seq 1 "$FANOUT"); do
  ip netns add $P-s$i; ip -n $P-s$i link set lo up
  ip -n $P-r link add r$i type veth peer name s0 netns $P-s$i
  ip -n $P-r addr add 10.98.$i.1/24 dev r$i; ip -n $P-r link set r$i up
  ip -n $P-s$i addr add 10.98.$i.2/24 dev s0; ip -n $P-s$i link set s0 up
  ip netns exec $P-s$i sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.s0.rp_filter=0
  if [ -n "${SINK_RPS:-}" ]; then
    for q in $(ip netns exec $P-s$i sh -c 'ls /sys/class/net/s0/queues/ | grep rx-'); do
      ip netns exec $P-s$i sh -c "echo $SINK_RPS > /sys/class/net/s0/queues/$q/rps_cpus"
    done
  fi
  TO+=(--to "239.2.2.2:6000@r$i")
  ip netns exec $P-s$i taskset -c 0 $M sink ${SINKARGS:-} --listen 239.2.2.2:6000@s0 --duration 100000 >/dev/null 2>&1 &
done
sleep 3
udp_in() { # InDatagrams + RcvbufErrors summed over the sink namespaces
  local sum=0 v
  for i in $(seq 1 "$FANOUT"); do
    v=$(ip netns exec $P-s$i awk '/^Udp: [0-9]/ {print $2 + $4; exit}' /proc/net/snmp)
    sum=$((sum + v))
  done
  echo $sum
}
relay_cpu_ns() {
  local sum=0 v
  for p in $(ip netns pids $P-r); do
    v=$(cat /proc/$p/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}')
    sum=$((sum + v))
  done
  echo $sum
}
COUNT=$((RATE * SECS))
echo "fanout $FANOUT, $RATE pps input, $COUNT input packets per run, load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  for b in "${BINS[@]}"; do
    ip netns exec $P-r taskset -c 1 "$b" forward --from 239.1.1.1:5000@r0 "${TO[@]}" --json > /tmp/$P-fwd.json 2>/tmp/$P-fwd.err &
    FWD=$!
    for _ in $(seq 1 150); do grep -q "forwarding" /tmp/$P-fwd.err 2>/dev/null && break; sleep 0.2; done
    sleep 1
    before_rx=$(udp_in); before_cpu=$(relay_cpu_ns)
    if [ -n "${PERF_DIR:-}" ]; then
      pids=$(ip netns pids $P-r | paste -sd, -)
      perf record -q -F 999 -g -p "$pids" -o "$PERF_DIR/$round-$(basename "$b").data" -- sleep $((SECS > 2 ? SECS - 1 : 1)) >/dev/null 2>&1 &
    fi
    ip netns exec $P-g taskset -c 0 $M gen --mode raw --to 239.1.1.1:5000@g0 --rate "$RATE" --count "$COUNT" --size 1316 --json > /tmp/$P-gen.json
    sleep 0.3
    after_cpu=$(relay_cpu_ns)
    [ -n "${PERF_DIR:-}" ] && sleep 1
    sleep 1
    after_rx=$(udp_in)
    kill -INT $FWD; wait $FWD
    sent=$(jq .sent /tmp/$P-gen.json)
    copies=$((after_rx - before_rx))
    cpu=$((after_cpu - before_cpu))
    tx=$(jq '[.workers[].counters.tx_packets] | add' /tmp/$P-fwd.json)
    txerr=$(jq '[.workers[].counters.tx_errors] | add' /tmp/$P-fwd.json)
    calls=$(jq '[.workers[].counters.tx_send_calls // empty] | add // "n/a"' /tmp/$P-fwd.json)
    gso=$(jq '[.workers[].counters.tx_gso_sends] | add' /tmp/$P-fwd.json)
    ringdrops=$(jq '[.workers[].counters.kernel_drops] | add' /tmp/$P-fwd.json)
    restarts=$(jq '[.workers[].restarts // 0] | add' /tmp/$P-fwd.json)
    [ "$restarts" != "0" ] && echo "worker restarts: $restarts; $(jq -c '[.workers[].last_error]' /tmp/$P-fwd.json)"
    awk -v b="$(basename "$b")" -v r="$round" -v s="$sent" -v c="$copies" -v n="$cpu" -v f="$FANOUT" -v calls="$calls" -v gso="$gso" -v tx="$tx" -v txerr="$txerr" -v rd="$ringdrops" -v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
      printf "round %d %-8s input %d  ring drops %d  relay sent %d copies (%d errors)  sinks read/dropped %d  cpu %.3f s  %.2f us/input pkt  %.3f us/copy  send calls %s  gso sends %s  load %s\n",
        r, b, s, rd, tx, txerr, c, n / 1e9, n / 1e3 / s, n / 1e3 / tx, calls, gso, load }'
  done
done
