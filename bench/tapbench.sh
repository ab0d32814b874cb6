#!/usr/bin/env bash
# tapbench.sh - baseline benchmark for a (user-space) virtual Ethernet switch.
#
# Origin: the team's shared benchmark script (shared/bench/tapbench.sh,
# sha256 b2b288e3...), copied so that the repository is self-contained.
# Changes from that copy: BX_PERF (a perf profile of the switch process),
# BX_LOCK_WAIT (wait for another run instead of failing; the lock file is
# therefore left in place at exit, since removing it would let a waiter
# and a newcomer lock different files), a run whose ping lost packets is
# status=partial with errors=ping_loss (ping exits 0 when any reply came
# back, and only its exit status was checked), rtt_p50_us (ping without -q,
# the median of the replies' times), and this header. The lock
# (/run/bx-tapbench/lock) and every name are kept, so this copy and the
# shared one exclude each other. bench/compare.sh runs it; see
# docs/performance.md.
#
# Usage: tapbench.sh MODE [RUN_LABEL]
#
# MODE
#   bridge         kernel reference: veth pairs from bxa/bxb into a Linux
#                  bridge (offloads left at their defaults: TSO/GSO on, so TCP
#                  moves ~64 KiB super-frames through the bridge).
#   bridge-nogso   same, but TSO/GSO/GRO off on every veth and on the bridge,
#                  so the kernel also has to move MTU-sized frames (the
#                  per-frame work a tap switch without vnet_hdr sees).
#   vde            vde_switch (vde2) with both taps (-t bxt0 -t bxt1).
#   cmd:COMMAND    any user-space switch. COMMAND is run with bash -c 'exec
#                  COMMAND' inside netns bxsw and must open the taps bxt0 and
#                  bxt1 itself (also exported as $BX_TAP_A / $BX_TAP_B), e.g.
#                  cmd:/path/naive-switch bxt0 bxt1
#
# Topology (nothing is created in, or sends to, the root namespace):
#   netns bxa [bxt0 198.18.0.1/24] -- netns bxsw [switch] -- [bxt1 198.18.0.2/24] netns bxb
# Tap modes: bxt0/bxt1 are created as persistent taps in bxsw, the switch
# (running in bxsw) opens them by name, the script waits until both carry
# carrier (= a reader is attached) and then moves them into bxa/bxb with
# `ip link set bxtN netns bxX`. The switch's fds keep working after the move.
# Bridge modes: bxt0/bxt1 are veth ends whose peers bxv0/bxv1 sit on bridge
# bxbr in bxsw.
#
# Measurements (client in bxa, server in bxb):
#   ping  -c $BX_PING_COUNT -i $BX_PING_INTERVAL        -> rtt_*_us, idle latency
#         (rtt_us is ping's mean; rtt_p50_us the median of the replies' times)
#   iperf3 TCP, 1 stream, $BX_DURATION s                -> tcp_gbps, tcp_retr
#   iperf3 UDP, -l $BX_UDP_LEN -b $BX_UDP_RATE, 1 stream -> udp64_pps (received),
#                 udp64_sent_pps, udp64_loss (%), and from the link counters
#                 udp64_sw_in_pps (frames the switch took from bxt0: for a tap,
#                 frames its reader read; the rest were dropped at the full tap
#                 queue) and udp64_sw_out_pps (frames it delivered into bxt1).
#                 sent - sw_in: dropped before the switch; sw_in - sw_out: lost
#                 in the switch; sw_out - pps: dropped by the receiving stack.
#   CPU during the TCP / UDP runs: *_sw_cpu = switch process utime+stime in
#   cores (1.00 = one core busy; NA for kernel modes), *_busy_cores = whole
#   machine, in cores: nproc - (idle+iowait+steal) / wall time (/proc/stat).
#
# Output: exactly one line on stdout (progress goes to stderr), e.g.
#   mode=vde run=1 tcp_gbps=2.1 ... status=ok
# It is also appended to $BX_RESULTS if set.
#
# Environment knobs (defaults in brackets):
#   BX_DURATION [10]  BX_UDP_LEN [64]  BX_UDP_RATE [0 = unlimited; iperf3 -b]
#   BX_UDP_PPS    offered UDP packets/s instead of BX_UDP_RATE (fixed-rate run)
#   BX_PING_COUNT [200]  BX_PING_INTERVAL [0.01]  BX_MTU [unset = 1500]
#   BX_NAME       label printed as mode= (default: MODE, or cmd:<basename>)
#   BX_TAP_OPTS   extra `ip tuntap add` flags, e.g. "multi_queue" or "vnet_hdr"
#   BX_PRECREATE  [1] create persistent taps before starting the switch;
#                 0 = the switch creates them itself (script waits for them)
#   BX_BR_NF      [0] value for bridge-nf-call-{ip,ip6,arp}tables inside bxsw
#   BX_OUTDIR     if set, raw iperf3 JSON / ping / switch logs are kept there
#   BX_PIDSTAT    [0] 1 = also record `pidstat -t` of the switch during TCP
#   BX_PERF       [0] 1 = `perf record -g` the switch process during the TCP
#                 and the UDP run (user-space switches only), kept in BX_OUTDIR
#                 as <mode>.run<N>.{tcp,udp}.perf.data (needs perf)
#   BX_RESULTS    if set, the result line is appended to this file
#   BX_SWITCH_TIMEOUT [10] seconds to wait for the switch to attach the taps
#   BX_LOCK_WAIT  [0] seconds to wait for another tapbench.sh run (this copy
#                 or the shared one) to finish; 0 = fail at once
#
# Safety: all names are fixed and prefixed "bx"; cleanup (also on error or
# signal) removes exactly those links/namespaces and kills only the PIDs this
# script started (PID + start time recorded in /run/bx-tapbench/pids).
# Needs root, iproute2, iperf3, ping, jq; vde_switch for vde; ethtool for
# bridge-nogso.

set -Eeuo pipefail

usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac

MODE=$1
RUN_LABEL=${2:-1}

NS_A=bxa NS_B=bxb NS_SW=bxsw
TAP_A=bxt0 TAP_B=bxt1
BR=bxbr VETH_A=bxv0 VETH_B=bxv1
IP_A=198.18.0.1 IP_B=198.18.0.2 PLEN=24
PORT=5201
export BX_TAP_A=$TAP_A BX_TAP_B=$TAP_B

DURATION=${BX_DURATION:-10}
UDP_LEN=${BX_UDP_LEN:-64}
UDP_RATE=${BX_UDP_RATE:-0}
UDP_OFFERED=max
if [ -n "${BX_UDP_PPS:-}" ]; then
  UDP_OFFERED=$BX_UDP_PPS
  UDP_RATE=$(( BX_UDP_PPS * ${BX_UDP_LEN:-64} * 8 ))
elif [ "$UDP_RATE" != 0 ]; then
  UDP_OFFERED=rate:$UDP_RATE
fi
PING_COUNT=${BX_PING_COUNT:-200}
PING_INTERVAL=${BX_PING_INTERVAL:-0.01}
MTU=${BX_MTU:-}
TAP_OPTS=${BX_TAP_OPTS:-}
PRECREATE=${BX_PRECREATE:-1}
BR_NF=${BX_BR_NF:-0}
SWITCH_TIMEOUT=${BX_SWITCH_TIMEOUT:-10}

STATE_DIR=/run/bx-tapbench
PIDS_FILE=$STATE_DIR/pids
WORK=

case "$MODE" in
  bridge|bridge-nogso|vde) NAME=${BX_NAME:-$MODE} ;;
  cmd:?*)
    SW_CMD=${MODE#cmd:}
    first=${SW_CMD%% *}
    NAME=${BX_NAME:-cmd:${first##*/}} ;;
  *) echo "tapbench: unknown mode '$MODE'" >&2; usage ;;
esac
NAME=${NAME// /_}

exec 8>&2   # original stderr: log() must not follow per-command redirections
log() { printf '[tapbench %s %s] %s\n' "$(date +%T)" "$NAME" "$*" >&8; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
for t in ip iperf3 ping jq timeout flock awk; do
  command -v "$t" >/dev/null || die "missing tool: $t"
done
[ "$MODE" != vde ] || command -v vde_switch >/dev/null || die "missing vde_switch"
[ "$MODE" != bridge-nogso ] || command -v ethtool >/dev/null || die "missing ethtool"

# ---------------------------------------------------------------- processes
# /proc/PID/stat fields after "pid (comm) ": $1=state $12=utime $13=stime $20=starttime
proc_field() { awk -v f="$2" '{sub(/^.*\) /, ""); print $f}' "/proc/$1/stat" 2>/dev/null; }
alive() { [ -e "/proc/$1" ] && [ "$(proc_field "$1" 1)" != Z ]; }
track() { echo "$1 $(proc_field "$1" 20)" >>"$PIDS_FILE"; }

# Stop one process we started, identified by PID and start time.
stop_pid() {
  local pid=$1 start=$2 i
  [ -e "/proc/$pid" ] || return 0
  [ "$(proc_field "$pid" 20)" = "$start" ] || return 0   # PID reused: not ours
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 30); do alive "$pid" || return 0; sleep 0.1; done
  log "pid $pid ignored SIGTERM, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- cleanup
ns_exists() { [ -e "/run/netns/$1" ]; }
del_link() { # del_link NS DEV
  if ns_exists "$1" && ip -n "$1" link show dev "$2" >/dev/null 2>&1; then
    ip -n "$1" link del dev "$2" 2>/dev/null || true
  fi
}
cleanup_resources() {
  local pid start ns
  if [ -f "$PIDS_FILE" ]; then
    while read -r pid start; do stop_pid "$pid" "$start"; done <"$PIDS_FILE"
    rm -f "$PIDS_FILE"
  fi
  for ns in $NS_A $NS_B $NS_SW; do
    del_link "$ns" $TAP_A; del_link "$ns" $TAP_B
  done
  del_link $NS_SW $VETH_A; del_link $NS_SW $VETH_B; del_link $NS_SW $BR
  for ns in $NS_A $NS_B $NS_SW; do
    if ns_exists "$ns"; then ip netns del "$ns" 2>/dev/null || true; fi
  done
}
on_exit() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  log "cleaning up"
  cleanup_resources
  wait 2>/dev/null
  [ -z "$WORK" ] || rm -rf "$WORK"
  exit $rc
}

mkdir -p "$STATE_DIR"
exec 9>"$STATE_DIR/lock"
if ! flock -n 9; then
  [ "${BX_LOCK_WAIT:-0}" -gt 0 ] || die "another tapbench.sh is running (lock $STATE_DIR/lock)"
  log "another tapbench.sh is running; waiting up to ${BX_LOCK_WAIT}s"
  lock_deadline=$(( $(date +%s) + BX_LOCK_WAIT ))
  # The shared script removes the lock file at exit: after waiting, make
  # sure the file locked is still the one at the path, else lock anew.
  until flock -w "$BX_LOCK_WAIT" 9 && [ "$(stat -L -c %i /proc/$$/fd/9)" = "$(stat -c %i "$STATE_DIR/lock" 2>/dev/null)" ]; do
    [ "$(date +%s)" -lt "$lock_deadline" ] || die "another tapbench.sh still running after ${BX_LOCK_WAIT}s (lock $STATE_DIR/lock)"
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/lock"
  done
fi
if [ -s "$PIDS_FILE" ] || ns_exists $NS_A || ns_exists $NS_B || ns_exists $NS_SW; then
  log "removing leftovers of an earlier run"
  cleanup_resources
fi
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
: >"$PIDS_FILE"
WORK=$(mktemp -d /tmp/bx-tapbench.XXXXXX)
if [ -n "${BX_OUTDIR:-}" ]; then
  mkdir -p "$BX_OUTDIR"
  RAW="$BX_OUTDIR/${NAME//[^A-Za-z0-9_.-]/_}.run${RUN_LABEL}"
else
  RAW="$WORK/raw"
fi

# ---------------------------------------------------------------- topology
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
no_ipv6() { nsx "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2>/dev/null || true; }

for ns in $NS_SW $NS_A $NS_B; do
  ip netns add $ns
  ip -n $ns link set lo up
  no_ipv6 $ns   # no RS/DAD/MLD chatter on the test links
done

SW_PID=
case "$MODE" in
  bridge|bridge-nogso)
    for f in iptables ip6tables arptables; do
      nsx $NS_SW sysctl -qw "net.bridge.bridge-nf-call-$f=$BR_NF" 2>/dev/null || true
    done
    ip -n $NS_SW link add $BR type bridge
    ip -n $NS_SW link add $VETH_A type veth peer name $TAP_A netns $NS_A
    ip -n $NS_SW link add $VETH_B type veth peer name $TAP_B netns $NS_B
    for v in $VETH_A $VETH_B; do
      ip -n $NS_SW link set $v master $BR
      ip -n $NS_SW link set $v up
    done
    ip -n $NS_SW link set $BR up
    if [ "$MODE" = bridge-nogso ]; then
      for v in $VETH_A $VETH_B $BR; do nsx $NS_SW ethtool -K $v tso off gso off gro off >/dev/null; done
      nsx $NS_A ethtool -K $TAP_A tso off gso off gro off >/dev/null
      nsx $NS_B ethtool -K $TAP_B tso off gso off gro off >/dev/null
    fi
    ;;
  vde|cmd:*)
    if [ "$PRECREATE" = 1 ]; then
      # shellcheck disable=SC2086
      nsx $NS_SW ip tuntap add dev $TAP_A mode tap $TAP_OPTS
      # shellcheck disable=SC2086
      nsx $NS_SW ip tuntap add dev $TAP_B mode tap $TAP_OPTS
    fi
    if [ "$MODE" = vde ]; then
      SW_CMD="vde_switch -s $WORK/vde.ctl -M $WORK/vde.mgmt -t $TAP_A -t $TAP_B -d -p $WORK/vde.pid"
      log "starting: $SW_CMD (in netns $NS_SW)"
      # shellcheck disable=SC2086
      nsx $NS_SW $SW_CMD >"$WORK/switch.log" 2>&1 || die "vde_switch failed: $(cat "$WORK/switch.log")"
      for _ in $(seq 50); do [ -s "$WORK/vde.pid" ] && break; sleep 0.1; done
      SW_PID=$(cat "$WORK/vde.pid" 2>/dev/null) || die "vde_switch wrote no pidfile"
    else
      log "starting: $SW_CMD (in netns $NS_SW)"
      # Not via a shell function: $! must be the switch itself (ip netns exec
      # and bash -c both exec, so the PID is preserved).
      ip netns exec $NS_SW bash -c "exec $SW_CMD" </dev/null >"$WORK/switch.log" 2>&1 &
      SW_PID=$!
    fi
    track "$SW_PID"
    # Wait until the switch has attached both taps: a tun/tap device has
    # carrier exactly while some file descriptor is attached to it.
    deadline=$(( $(date +%s) + SWITCH_TIMEOUT ))
    for t in $TAP_A $TAP_B; do
      until ip -n $NS_SW link show dev $t >/dev/null 2>&1 &&
            ip -n $NS_SW link set dev $t up 2>/dev/null &&
            ip -n $NS_SW -o link show dev $t | grep -q LOWER_UP; do
        alive "$SW_PID" || die "switch exited: $(tail -5 "$WORK/switch.log")"
        [ "$(date +%s)" -lt "$deadline" ] || die "switch did not attach $t within ${SWITCH_TIMEOUT}s"
        sleep 0.1
      done
    done
    log "switch pid $SW_PID attached $TAP_A and $TAP_B; moving taps into $NS_A/$NS_B"
    ip -n $NS_SW link set dev $TAP_A netns $NS_A
    ip -n $NS_SW link set dev $TAP_B netns $NS_B
    ;;
esac

for side in "$NS_A $TAP_A $IP_A" "$NS_B $TAP_B $IP_B"; do
  # shellcheck disable=SC2086
  set -- $side
  [ -z "$MTU" ] || ip -n "$1" link set dev "$2" mtu "$MTU"
  ip -n "$1" addr add "$3/$PLEN" dev "$2"
  ip -n "$1" link set dev "$2" up
done

ok=0
for _ in $(seq 20); do
  if nsx $NS_A ping -q -c 1 -W 1 $IP_B >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.25
done
[ $ok = 1 ] || die "no ping $IP_A -> $IP_B through $NAME"
log "ping ok"
if [ -n "$SW_PID" ] && ! ls -l "/proc/$SW_PID/fd" 2>/dev/null | grep -q /dev/net/tun; then
  log "note: switch pid $SW_PID holds no /dev/net/tun fd itself (child process?); *_sw_cpu covers pid $SW_PID only"
fi

# ---------------------------------------------------------------- measurement helpers
cpu_snap() { # -> "idle+iowait+steal busy" in USER_HZ ticks, from /proc/stat
  # Busy time (user/system/softirq) is tick-sampled (TICK_CPU_ACCOUNTING) and
  # undercounts bursty loads; idle time on a NO_HZ kernel is measured exactly.
  # *_busy_cores is therefore computed as ncpu - (idle+iowait+steal)/wall.
  awk '/^cpu / {print $5+$6+$9, $2+$3+$4+$7+$8; exit}' /proc/stat
}
sw_ticks() { # utime+stime of the switch process (all threads); empty for kernel modes
  [ -n "$SW_PID" ] || return 0
  awk '{sub(/^.*\) /, ""); print $12+$13}' "/proc/$SW_PID/stat" 2>/dev/null || echo NA
}
NCPU=$(nproc)
HZ=$(getconf CLK_TCK)
# bgwait cmd... : run cmd as a tracked background child and wait for it, so
# that an INT/TERM trap fires at once instead of after the command finishes.
bgwait() {
  local pid rc=0
  "$@" &
  pid=$!
  track "$pid"
  wait "$pid" || rc=$?
  return $rc
}
# run_measured VAR_PREFIX cmd... : bgwait cmd, sets ${prefix}_busy_cores and ${prefix}_sw_cpu
run_measured() {
  local p=$1; shift
  local c0 c1 s0 s1 t0 t1 rc=0
  c0=$(cpu_snap); s0=$(sw_ticks); t0=$(date +%s.%N)
  bgwait "$@" || rc=$?
  t1=$(date +%s.%N); s1=$(sw_ticks); c1=$(cpu_snap)
  printf -v "${p}_busy_cores" '%s' "$(awk -v a="$c0" -v b="$c1" -v n="$NCPU" -v hz="$HZ" -v t0="$t0" -v t1="$t1" \
    'BEGIN{split(a,x," "); split(b,y," "); w=t1-t0; if (w>0) printf "%.2f", n-(y[1]-x[1])/hz/w; else print "NA"}')"
  if [ -n "$s0" ] && [ "$s0" != NA ] && [ -n "$s1" ] && [ "$s1" != NA ]; then
    printf -v "${p}_sw_cpu" '%s' "$(awk -v a="$s0" -v b="$s1" -v t0="$t0" -v t1="$t1" -v hz="$HZ" \
      'BEGIN{printf "%.2f", (b-a)/hz/(t1-t0)}')"
  else
    printf -v "${p}_sw_cpu" NA
  fi
  return $rc
}
PERF_PID=
perf_start() { # perf_start LABEL: profile the switch until perf_stop
  [ "${BX_PERF:-0}" = 1 ] && [ -n "$SW_PID" ] && [ -n "${BX_OUTDIR:-}" ] || return 0
  command -v perf >/dev/null || { log "BX_PERF: perf missing"; return 0; }
  perf record -q -g -F 997 -p "$SW_PID" -o "$RAW.$1.perf.data" >"$WORK/perf.$1.log" 2>&1 &
  PERF_PID=$!
  track "$PERF_PID"
  sleep 0.5 # let perf attach before the load starts
}
perf_stop() {
  [ -n "$PERF_PID" ] || return 0
  kill -INT "$PERF_PID" 2>/dev/null || true
  wait "$PERF_PID" 2>/dev/null || true
  PERF_PID=
}
start_server() { # one-shot iperf3 server in bxb, bound to the benchmark address
  ip netns exec $NS_B iperf3 -s -1 -B $IP_B -p $PORT >>"$WORK/iperf3-server.log" 2>&1 &
  SRV_PID=$!
  track "$SRV_PID"
  for _ in $(seq 50); do
    nsx $NS_B ss -Hltn "sport = :$PORT" 2>/dev/null | grep -q . && return 0
    sleep 0.1
  done
  die "iperf3 server did not start"
}
finish_server() {
  local i
  for i in $(seq 30); do alive "$SRV_PID" || break; sleep 0.1; done
  alive "$SRV_PID" && kill -TERM "$SRV_PID" 2>/dev/null
  wait "$SRV_PID" 2>/dev/null || true
}
jnum() { jq -r "$1 // \"NA\"" "$2" 2>/dev/null || echo NA; }
link_stat() { # NS DEV rx|tx FIELD -> 64-bit counter from `ip -s -j link`
  ip -n "$1" -s -j link show dev "$2" 2>/dev/null | jq -r ".[0].stats64.$3.$4 // \"NA\"" 2>/dev/null || echo NA
}

status=ok
errs=()
tcp_busy_cores=NA tcp_sw_cpu=NA udp_busy_cores=NA udp_sw_cpu=NA

# ---------------------------------------------------------------- latency (idle)
rtt_us=NA rtt_min_us=NA rtt_max_us=NA rtt_mdev_us=NA rtt_p50_us=NA ping_loss=NA
log "ping -c $PING_COUNT -i $PING_INTERVAL"
if bgwait timeout 60 ip netns exec $NS_A ping -c "$PING_COUNT" -i "$PING_INTERVAL" $IP_B >"$RAW.ping.txt" 2>&1; then :; else
  status=partial; errs+=(ping)
fi
read -r rtt_min_us rtt_us rtt_max_us rtt_mdev_us < <(
  awk -F'[=/ ]+' '/^rtt|^round-trip/ {printf "%.1f %.1f %.1f %.1f\n", $6*1000, $7*1000, $8*1000, $9*1000; f=1}
                  END{if(!f) print "NA NA NA NA"}' "$RAW.ping.txt")
# The median of the replies' times: the mean above moves by 50 µs with one
# reply delayed 10 ms, which on a virtual machine is the host's doing.
rtt_p50_us=$(sed -n 's/.* time=\([0-9.]*\) ms.*/\1/p' "$RAW.ping.txt" | sort -n |
  awk '{ v[NR] = $1 } END { if (!NR) { print "NA"; exit }
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.1f\n", m * 1000 }')
ping_loss=$(sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p' "$RAW.ping.txt"); ping_loss=${ping_loss:-NA}
# ping exits 0 when any reply came back: a run that lost some is not ok
# either (compare.sh and summarize.sh count only status=ok runs).
if [ "$status" = ok ] && [ "$ping_loss" != NA ] && awk -v l="$ping_loss" 'BEGIN { exit !(l > 0) }'; then
  status=partial; errs+=(ping_loss); log "ping lost ${ping_loss}% of its packets"
fi

# ---------------------------------------------------------------- TCP
tcp_gbps=NA tcp_retr=NA
log "iperf3 TCP ${DURATION}s"
start_server
if [ "${BX_PIDSTAT:-0}" = 1 ] && [ -n "$SW_PID" ] && command -v pidstat >/dev/null; then
  # per-thread CPU of the switch, 1 s samples, kept in BX_OUTDIR (or discarded)
  pidstat -h -u -t -p "$SW_PID" 1 "$DURATION" >"$RAW.tcp.pidstat.txt" 2>&1 &
  track $!
fi
perf_start tcp
if run_measured tcp timeout $((DURATION + 30)) ip netns exec $NS_A \
     iperf3 -c $IP_B -p $PORT -t "$DURATION" -J >"$RAW.tcp.json" 2>"$WORK/tcp.err"; then
  tcp_gbps=$(jq -r '.end.sum_received.bits_per_second / 1e9 * 1000 | round / 1000' "$RAW.tcp.json")
  tcp_retr=$(jnum '.end.sum_sent.retransmits' "$RAW.tcp.json")
else
  status=partial; errs+=(tcp); log "TCP failed: $(jnum '.error' "$RAW.tcp.json") $(cat "$WORK/tcp.err")"
fi
perf_stop
finish_server
sleep 1

# ---------------------------------------------------------------- UDP small packets
udp_pps=NA udp_sent_pps=NA udp_loss=NA udp_sw_in_pps=NA udp_sw_out_pps=NA
log "iperf3 UDP -l $UDP_LEN -b $UDP_RATE (offered: $UDP_OFFERED) ${DURATION}s"
start_server
perf_start udp
a_tx0=$(link_stat $NS_A $TAP_A tx packets); b_rx0=$(link_stat $NS_B $TAP_B rx packets)
if run_measured udp timeout $((DURATION + 30)) ip netns exec $NS_A \
     iperf3 -c $IP_B -p $PORT -u -l "$UDP_LEN" -b "$UDP_RATE" -t "$DURATION" -J >"$RAW.udp.json" 2>"$WORK/udp.err"; then
  # sum_sent: packets the client sent; sum_received: what the server got.
  read -r udp_sent_pps udp_pps udp_loss < <(jq -r '.end as $e |
      ($e.sum_sent.packets / $e.sum_sent.seconds) as $s |
      (($e.sum_received.packets - $e.sum_received.lost_packets) / $e.sum_received.seconds) as $r |
      "\($s|round) \($r|round) \($e.sum_received.lost_percent * 100 | round / 100)"' "$RAW.udp.json")
  a_tx1=$(link_stat $NS_A $TAP_A tx packets); b_rx1=$(link_stat $NS_B $TAP_B rx packets)
  secs=$(jnum '.end.sum_sent.seconds' "$RAW.udp.json")
  read -r udp_sw_in_pps udp_sw_out_pps < <(awk -v a0="$a_tx0" -v a1="$a_tx1" -v b0="$b_rx0" -v b1="$b_rx1" -v s="$secs" '
    function r(x0, x1) { return (x0 ~ /^[0-9]+$/ && x1 ~ /^[0-9]+$/ && s > 0) ? sprintf("%.0f", (x1 - x0) / s) : "NA" }
    BEGIN { print r(a0, a1), r(b0, b1) }')
else
  status=partial; errs+=(udp); log "UDP failed: $(jnum '.error' "$RAW.udp.json") $(cat "$WORK/udp.err")"
fi
perf_stop
finish_server

if [ -n "$SW_PID" ] && ! alive "$SW_PID"; then
  status=fail; errs+=(switch_died)
fi
if [ -n "${BX_OUTDIR:-}" ] && [ -s "$WORK/switch.log" ]; then cp "$WORK/switch.log" "$RAW.switch.log"; fi

p=${UDP_LEN}
line="mode=$NAME run=$RUN_LABEL tcp_gbps=$tcp_gbps tcp_retr=$tcp_retr udp${p}_pps=$udp_pps udp${p}_sent_pps=$udp_sent_pps udp${p}_loss=$udp_loss udp${p}_sw_in_pps=$udp_sw_in_pps udp${p}_sw_out_pps=$udp_sw_out_pps udp_offered=$UDP_OFFERED rtt_us=$rtt_us rtt_min_us=$rtt_min_us rtt_max_us=$rtt_max_us rtt_mdev_us=$rtt_mdev_us rtt_p50_us=$rtt_p50_us ping_loss=$ping_loss tcp_sw_cpu=$tcp_sw_cpu tcp_busy_cores=$tcp_busy_cores udp_sw_cpu=$udp_sw_cpu udp_busy_cores=$udp_busy_cores status=$status"
[ ${#errs[@]} -eq 0 ] || line+=" errors=$(IFS=,; echo "${errs[*]}")"
echo "$line"
[ -z "${BX_RESULTS:-}" ] || echo "$(date -u +%FT%TZ) $line" >>"$BX_RESULTS"
[ "$status" != fail ]
