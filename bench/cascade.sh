#!/usr/bin/env bash
# cascade.sh - two switches joined by one stream socket, each with one of
# the benchmark's taps: the path a VM takes behind a stream socket (QEMU's
# -netdev stream, vde_plug), with real TCP stacks at both ends. compare.sh's
# cascade modes run it as tapbench.sh's switch command.
#
# Usage: cascade.sh tapswitch BIN [SERVE FLAGS...]
#        cascade.sh vde
#   tapswitch: BIN serve --tap $BX_TAP_A --listen unix://DIR/s.sock, and
#              BIN serve --tap $BX_TAP_B --connect unix://DIR/s.sock (the
#              QEMU stream protocol: a 4-byte length before each frame),
#              both with --ctl none --log-level warn and the flags given.
#   vde:       vde_switch -t $BX_TAP_A and vde_switch -t $BX_TAP_B joined
#              by dpipe vde_plug = vde_plug (vde's own stream framing).
#
# It runs until SIGTERM or SIGINT, or until one of its processes ends, then
# ends the others, by the PIDs it started them with, and removes its
# directory. tapbench.sh measures the CPU of this script's PID only
# (*_sw_cpu), which is not the switches': those figures mean nothing here.
set -u
A=${BX_TAP_A:-bxt0}
B=${BX_TAP_B:-bxt1}
DIR=$(mktemp -d /tmp/bx-cascade.XXXXXX)
pids=()
stop() {
  trap - TERM INT EXIT
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  wait
  rm -rf "$DIR"
  exit 0
}
trap stop TERM INT EXIT
die() { echo "cascade: $*" >&2; exit 1; }
wait_for() { # wait_for PATH: until it exists, at most 5 s
  local i
  for i in $(seq 50); do [ -e "$1" ] && return 0; sleep 0.1; done
  die "$1 did not appear"
}

case ${1:-} in
  tapswitch)
    [ $# -ge 2 ] || die "usage: cascade.sh tapswitch BIN [FLAGS...]"
    BIN=$2
    shift 2
    "$BIN" serve --tap "$A" --listen "unix://$DIR/s.sock" --ctl none --log-level warn "$@" &
    pids+=($!)
    wait_for "$DIR/s.sock"
    "$BIN" serve --tap "$B" --connect "unix://$DIR/s.sock" --ctl none --log-level warn "$@" &
    pids+=($!)
    ;;
  vde)
    vde_switch -s "$DIR/a.ctl" -M "$DIR/a.mgmt" -t "$A" -d -p "$DIR/a.pid" || die "vde_switch $A failed"
    wait_for "$DIR/a.pid"
    pids+=("$(cat "$DIR/a.pid")")
    vde_switch -s "$DIR/b.ctl" -M "$DIR/b.mgmt" -t "$B" -d -p "$DIR/b.pid" || die "vde_switch $B failed"
    wait_for "$DIR/b.pid"
    pids+=("$(cat "$DIR/b.pid")")
    dpipe vde_plug "$DIR/a.ctl" = vde_plug "$DIR/b.ctl" &
    pids+=($!)
    ;;
  *) die "usage: cascade.sh tapswitch BIN [FLAGS...] | cascade.sh vde" ;;
esac
# Until a signal (the trap ends the rest), or until one of them ends.
wait -n
