#!/usr/bin/env bash
# compare.sh - tapswitch against the kernel bridge and vde_switch, tap to tap
# between network namespaces (bench/tapbench.sh), interleaved round-robin,
# then the medians and the ratios the performance issue asks for.
#
# Usage: bench/compare.sh [-n ROUNDS] [-o OUTDIR] [-m MODES] [-r REV]
#        bench/compare.sh -R OUTDIR    (report on an earlier run again)
#   -n ROUNDS  rounds of every mode, at least 3 (default 3)
#   -o OUTDIR  where results go (default bench/results/<UTC timestamp>);
#              it must not exist or be empty, so that the medians are of
#              this run's lines only: results.txt (one tapbench line per
#              run), raw/ (iperf3 JSON, ping output, switch logs),
#              machine.txt, load.txt (load average before each run),
#              summary.md
#   -m MODES   space-separated subset of: bridge bridge-nogso vde tapswitch
#              tapswitch-nooffload tapswitch-nowarm vde-cascade tapswitch-cascade (default:
#              all that can run here)
#   -r REV     build tapswitch from git revision REV (git archive into the
#              temporary directory) instead of the work tree, so that edits
#              in progress do not leak into the numbers
#
# The report gives each ratio of medians to two decimals, with the verdict
# on that printed value, and how many status=ok runs each median is of;
# the UDP ratio is at the payload length the run used (its results.txt
# keys udp<LEN>_pps), whatever BX_UDP_LEN is when -R reports it.
#
# tapswitch is built from this repository with `go build -o` into a
# temporary directory and run as
#   tapswitch serve --tap bxt0 --tap bxt1 --ctl none --log-level warn
# The tapswitch-nooffload mode (taps without IFF_VNET_HDR, so every TCP
# segment crosses the switch as its own frame) runs only when `serve --help`
# lists --tap-offload; otherwise it is skipped with a note.
#
# The tapswitch-nowarm mode (`--warm-interval 0`: no timer wakeups while
# traffic is sparse) runs only when `serve --help` lists --warm-interval;
# it shows what those wakeups do to the round trip.
#
# The cascade modes put a stream socket between the taps, the path of a VM
# behind QEMU's -netdev stream: two switches, one tap each, joined by one
# socket (bench/cascade.sh). tapswitch-cascade runs two `tapswitch serve`,
# the second connecting to the first's unix stream listener; vde-cascade two
# vde_switch joined by `dpipe vde_plug = vde_plug`. Their *_sw_cpu columns
# are the wrapper script's, not the switches'.
#
# Rounds are interleaved (A B C D A B C D ...) so that drift and the load of
# other work on the machine spread over every mode alike. tapbench.sh's BX_*
# knobs pass through (BX_DURATION, BX_UDP_LEN, ...). Needs root, iproute2,
# iperf3, ping, jq, ethtool, vde_switch (Debian vde2) and Go.
#
# Origin: extends the team's shared/bench/runall.sh (the round-robin loop);
# the table comes from bench/summarize.sh (a copy of shared/bench/summarize.sh).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
ROUNDS=3
OUT=
MODES=
REV=
REPORT_ONLY=
usage() { sed -n '2,/^set /s/^# \{0,1\}//p' "$0" | grep -v '^set ' >&2; exit 2; }
while getopts n:o:m:r:R:h opt; do
  case $opt in
    R) REPORT_ONLY=1; OUT=$OPTARG ;;
    r) REV=$OPTARG ;;
    n) ROUNDS=$OPTARG ;;
    o) OUT=$OPTARG ;;
    m) MODES=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || usage

# ---------------------------------------------------------------- report
# median MODE KEY: "MEDIAN N", the median over the N status=ok runs of MODE
# that have a number for KEY ("NA 0" if none).
median() {
  awk -v mode="$1" -v key="$2" '
    { m = ""; st = ""; v = ""
      for (i = 1; i <= NF; i++) {
        if ($i == "mode=" mode) m = 1
        if ($i ~ /^status=/) st = substr($i, 8)
        if (index($i, key "=") == 1) v = substr($i, length(key) + 2)
      }
      if (m && st == "ok" && v ~ /^-?[0-9.]+$/) x[++n] = v + 0 }
    END {
      if (!n) { print "NA 0"; exit }
      for (a = 2; a <= n; a++) { t = x[a]; for (b = a - 1; b >= 1 && x[b] > t; b--) x[b + 1] = x[b]; x[b + 1] = t }
      print ((n % 2) ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2), n }' "$OUT/results.txt"
}
# ratio NAME "A NA" "B NB" TARGET OP: prints a row "NAME | A/B | target |
# met? | NA, NB" from two median outputs (OP "info": no target). The
# verdict is on the ratio as printed, to two decimals, so that a row
# never reads "1.20 | >= 1.2 | no".
ratio() {
  awk -v name="$1" -v a="$2" -v b="$3" -v target="$4" -v op="$5" 'BEGIN {
    t = (op == "info") ? "-" : op " " target
    split(a, x, " "); split(b, y, " "); runs = x[2] + 0 ", " y[2] + 0
    if (x[1] == "NA" || y[1] == "NA" || y[1] == 0) { printf "| %s | NA | %s | NA | %s |\n", name, t, runs; exit }
    r = sprintf("%.2f", x[1] / y[1]); ok = (op == ">=") ? r + 0 >= target : r + 0 <= target
    printf "| %s | %s | %s | %s | %s |\n", name, r, t, (op == "info") ? "-" : ok ? "yes" : "**no**", runs }'
}
# report: summary.md of the runs in $OUT/results.txt.
report() {
  local modes rounds
  modes=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^mode=/) print substr($i, 6)}' "$OUT/results.txt" | awk '!s[$0]++' | tr '\n' ' ')
  rounds=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^run=/) print substr($i, 5)}' "$OUT/results.txt" | sort -n | tail -1)
  {
  echo "## tapbench medians (min-max), $rounds interleaved rounds"
  echo
  "$HERE/summarize.sh" "$OUT/results.txt"
  echo
  echo "## Targets (ratios of medians)"
  echo
  echo "| ratio | measured | target | met | ok runs in the medians (numerator, denominator) |"
  echo "|---|---|---|---|---|"
  ts_tcp=$(median tapswitch tcp_gbps)
  ratio "TCP Gbit/s tapswitch / vde" "$ts_tcp" "$(median vde tcp_gbps)" 3 ">="
  ratio "TCP Gbit/s tapswitch / bridge" "$ts_tcp" "$(median bridge tcp_gbps)" 0.3 ">="
  ratio "TCP Gbit/s tapswitch / bridge-nogso" "$ts_tcp" "$(median bridge-nogso tcp_gbps)" 0 info
  # The UDP payload length of the run, from its result lines' keys
  # (udp<LEN>_pps), not from this shell's BX_UDP_LEN.
  lens=$(grep -o ' udp[0-9]*_pps=' "$OUT/results.txt" | tr -dc '0-9\n' | awk '!s[$0]++') || true
  for u in ${lens:-64}; do
    ratio "UDP ${u} B pps tapswitch / vde" "$(median tapswitch "udp${u}_pps")" "$(median vde "udp${u}_pps")" 1.2 ">="
  done
  # ping's mean, and the median of the replies' times (rtt_p50_us), which
  # one reply held up by the host for 10 ms does not move.
  ratio "ping RTT tapswitch / vde" "$(median tapswitch rtt_us)" "$(median vde rtt_us)" 1 "<="
  ratio "ping RTT p50 tapswitch / vde" "$(median tapswitch rtt_p50_us)" "$(median vde rtt_p50_us)" 1 "<="
  if echo " $modes " | grep -q ' tapswitch-nooffload '; then
    ratio "TCP Gbit/s tapswitch-nooffload / vde" "$(median tapswitch-nooffload tcp_gbps)" "$(median vde tcp_gbps)" 0 info
  fi
  if echo " $modes " | grep -q ' tapswitch-nowarm '; then
    ratio "ping RTT tapswitch-nowarm / vde" "$(median tapswitch-nowarm rtt_us)" "$(median vde rtt_us)" 0 info
    ratio "ping RTT p50 tapswitch-nowarm / vde" "$(median tapswitch-nowarm rtt_p50_us)" "$(median vde rtt_p50_us)" 0 info
  fi
  if echo " $modes " | grep -q ' tapswitch-cascade ' && echo " $modes " | grep -q ' vde-cascade '; then
    ratio "TCP Gbit/s tapswitch-cascade / vde-cascade" "$(median tapswitch-cascade tcp_gbps)" "$(median vde-cascade tcp_gbps)" 0 info
    for u in ${lens:-64}; do
      ratio "UDP ${u} B pps tapswitch-cascade / vde-cascade" "$(median tapswitch-cascade "udp${u}_pps")" "$(median vde-cascade "udp${u}_pps")" 0 info
    done
    ratio "ping RTT tapswitch-cascade / vde-cascade" "$(median tapswitch-cascade rtt_us)" "$(median vde-cascade rtt_us)" 0 info
  fi
  echo
  echo '```'
  cat "$OUT/machine.txt"
  echo "load average (1, 5, 15 min) before each run:"
  cat "$OUT/load.txt"
  echo '```'
  } | tee "$OUT/summary.md"
}
if [ -n "$REPORT_ONLY" ]; then
  [ -s "$OUT/results.txt" ] || { echo "compare: no $OUT/results.txt" >&2; exit 1; }
  report
  exit 0
fi

# ---------------------------------------------------------------- runs
case $ROUNDS in ''|*[!0-9]*) echo "compare: -n wants a number" >&2; exit 2 ;; esac
[ "$ROUNDS" -ge 3 ] || { echo "compare: at least 3 rounds (-n 3): a median of fewer says little" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "compare: must run as root (network namespaces, taps)" >&2; exit 1; }
OUT=${OUT:-$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)}
# tapbench.sh appends to results.txt, and load.txt is appended to: an
# earlier run's lines would mix into the medians.
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null || echo x)" ]; then
  echo "compare: $OUT exists and is not empty; give -o a new or empty directory" >&2; exit 2
fi
mkdir -p "$OUT/raw"

BUILD=$(mktemp -d /tmp/tapswitch-bench.XXXXXX)
trap 'rm -rf "$BUILD"' EXIT
BIN=$BUILD/tapswitch
if [ -n "$REV" ]; then
  COMMIT=$(git -C "$REPO" rev-parse --verify "$REV^{commit}")
  mkdir "$BUILD/src"
  git -C "$REPO" archive --format=tar "$COMMIT" | tar -x -C "$BUILD/src"
  SRC=$BUILD/src
else
  COMMIT="$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown) (work tree)"
  SRC=$REPO
fi
echo "compare: building tapswitch from $COMMIT into $BIN" >&2
(cd "$SRC" && go build -trimpath -o "$BIN" ./cmd/tapswitch)
SERVE="$BIN serve --tap bxt0 --tap bxt1 --ctl none --log-level warn"

have_nooffload=0 have_nowarm=0
if "$BIN" serve --help 2>&1 | grep -q -- '--tap-offload'; then have_nooffload=1; fi
if "$BIN" serve --help 2>&1 | grep -q -- '--warm-interval'; then have_nowarm=1; fi
if [ -z "$MODES" ]; then
  MODES="bridge bridge-nogso vde tapswitch"
  if [ $have_nooffload = 1 ]; then
    MODES="$MODES tapswitch-nooffload"
  else
    echo "compare: note: serve has no --tap-offload flag; skipping tapswitch-nooffload" >&2
  fi
  if [ $have_nowarm = 1 ]; then
    MODES="$MODES tapswitch-nowarm"
  else
    echo "compare: note: serve has no --warm-interval flag; skipping tapswitch-nowarm" >&2
  fi
  MODES="$MODES vde-cascade tapswitch-cascade"
fi

# mode -> tapbench arguments (MODE, and BX_NAME for the cmd: modes)
tb_mode() {
  case $1 in
    bridge|bridge-nogso|vde) echo "$1" ;;
    tapswitch) echo "cmd:$SERVE" ;;
    tapswitch-nooffload)
      [ $have_nooffload = 1 ] || { echo "compare: serve has no --tap-offload" >&2; return 1; }
      echo "cmd:$SERVE --tap-offload=false" ;;
    tapswitch-nowarm)
      [ $have_nowarm = 1 ] || { echo "compare: serve has no --warm-interval" >&2; return 1; }
      echo "cmd:$SERVE --warm-interval 0" ;;
    vde-cascade) echo "cmd:$HERE/cascade.sh vde" ;;
    tapswitch-cascade) echo "cmd:$HERE/cascade.sh tapswitch $BIN" ;;
    *) echo "compare: unknown mode $1" >&2; return 1 ;;
  esac
}
for m in $MODES; do tb_mode "$m" >/dev/null; done

machine() {
  echo "date:    $(date -u +%FT%TZ)"
  echo "host:    nproc=$(nproc), $(grep -m1 '^model name' /proc/cpuinfo | sed 's/.*: //'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel:  $(uname -r)"
  echo "go:      $(go version | awk '{print $3}')"
  echo "commit:  $COMMIT"
  echo "tools:   $(iperf3 --version 2>/dev/null | head -1 | awk '{print "iperf3", $2}'), vde_switch $(dpkg-query -W -f='${Version}' vde2 2>/dev/null || echo '?')"
  echo "modes:   $MODES"
  echo "rounds:  $ROUNDS, BX_DURATION=${BX_DURATION:-10} BX_UDP_LEN=${BX_UDP_LEN:-64}"
}
# Other people's runs of tapbench.sh (this copy or shared/bench's) hold
# /run/bx-tapbench/lock; start only after it has been free for 20 s, so as
# not to cut into a series of theirs, and wait for it before each run.
wait_quiet() {
  local free=0 waited=0
  mkdir -p /run/bx-tapbench
  while [ $free -lt 20 ]; do
    if flock -n /run/bx-tapbench/lock true; then free=$((free + 1)); else free=0; fi
    sleep 1; waited=$((waited + 1))
    if [ $waited -eq 5 ] && [ $free -lt 5 ]; then echo "compare: another benchmark holds /run/bx-tapbench/lock; waiting" >&2; fi
    [ $waited -lt 1800 ] || { echo "compare: the benchmark lock stayed busy for 30 min" >&2; exit 1; }
  done
}
wait_quiet
{ machine; echo "load before: $(uptime)"; } | tee "$OUT/machine.txt" >&2
echo "compare: results in $OUT" >&2

for r in $(seq "$ROUNDS"); do
  for m in $MODES; do
    tm=$(tb_mode "$m")
    echo "$(date -u +%T) round $r $m: loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/load.txt"
    BX_LOCK_WAIT=${BX_LOCK_WAIT:-900} BX_NAME=$m BX_OUTDIR=$OUT/raw BX_RESULTS=$OUT/results.txt "$HERE/tapbench.sh" "$tm" "$r" >/dev/null ||
      echo "compare: run $r of $m failed (rc=$?)" >&2
    sleep 2
  done
done
echo "load after:  $(uptime)" | tee -a "$OUT/machine.txt" >&2

report
