#!/usr/bin/env bash
# SIPp (Debian `sip-tester`) placing calls at screenpop, and the same calls at Kamailio (Debian
# `kamailio`) forwarding statelessly to a sink: the reference for SIP ingest speed on the same
# machine. For each rate of a ladder it reports INVITEs sent (SIPp), received (screenpop's
# /metrics; the sink's count behind Kamailio), pops received by the agents, loss, and who used
# the CPU; the max sustained rate is the highest rate with nothing lost. See benches/README.md.
#
# Run with: benches/sipp/run.sh            (from anywhere; builds the release binaries first)
#
# Environment (default in brackets):
#   RATES              calls/s to try, in order ["1000 2000 5000 10000 15000 20000 25000 30000 40000"]
#   STEP_SECS          seconds of calls per rate: SIPp -m = rate × STEP_SECS [5]
#   RING_MS            how long each call rings before its CANCEL (SIPp -d) [200]
#   AGENTS             agents holding a WebSocket to screenpop, one extension each [200]
#   WS                 "0": no agent holds a WebSocket (calls are resolved and tracked, nothing
#                      is pushed): the SIP path alone [1]
#   SIPP               SIPp instances sharing each rate (SIPp is single-threaded) [1]
#   TARGETS            what to load, in order ["sink kamailio screenpop"]; `sink` is SIPp
#                      straight to the sink: SIPp's own ceiling, and proof the sink keeps up
#   KAMAILIO_CHILDREN  Kamailio's UDP worker processes [2: one per core of the bench machine]
#   KAMAILIO_RCVBUF    Kamailio's -b: the most its socket receive buffer may grow to [its
#                      default, 262144 (the kernel doubles it: 512 KiB)]
#   PIN                "1": SIPp on CPU 0, the target and its helpers on CPU 1 [0]
#   KEEP               "1": keep the run directory (logs, SIPp statistics) [0]
#   RING_TIMEOUT       screenpop's [sip] ring_timeout ["120s", its default]
#   SCREENPOP_BIN      the daemon to measure [target/release/screenpop, built here]
#
# A ladder stops at the first rate that loses anything, or that SIPp does not reach (< 90 %).
# Loopback only, free ports only. Every process started here is ended by its PID on exit (the
# EXIT trap); each SIPp run is bounded by -m and -timeout, so the whole run is bounded too
# (about STEP_SECS + 4 s per rate and target: ~3 minutes with the defaults).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/benches/sipp"
RATES=${RATES:-"1000 2000 5000 10000 15000 20000 25000 30000 40000"}
STEP_SECS=${STEP_SECS:-5}
RING_MS=${RING_MS:-200}
RING_TIMEOUT=${RING_TIMEOUT:-120s}
AGENTS=${AGENTS:-200}
SIPP=${SIPP:-1}
TARGETS=${TARGETS:-"sink kamailio screenpop"}
KAMAILIO_CHILDREN=${KAMAILIO_CHILDREN:-2}
KAMAILIO_RCVBUF=${KAMAILIO_RCVBUF:-}
PIN=${PIN:-0}
KEEP=${KEEP:-0}
WS=${WS:-1}

command -v sipp >/dev/null || { echo "sipp missing: apt-get install sip-tester" >&2; exit 1; }
KAMAILIO=$(command -v kamailio || echo /usr/sbin/kamailio)
[[ -x $KAMAILIO ]] || { echo "kamailio missing: apt-get install kamailio" >&2; exit 1; }
MODULES=""
for d in /usr/lib/x86_64-linux-gnu/kamailio/modules /usr/lib/aarch64-linux-gnu/kamailio/modules \
         /usr/lib/kamailio/modules /usr/lib64/kamailio/modules /usr/local/lib64/kamailio/modules \
         /usr/local/lib/kamailio/modules; do
    if [[ -f $d/maxfwd.so ]]; then MODULES=$d; break; fi
done
[[ -n $MODULES ]] || { echo "kamailio modules (maxfwd.so) not found" >&2; exit 1; }

echo "building (cargo build --release --bin screenpop --example sipp_peers)…" >&2
(cd "$ROOT" && cargo build --release --quiet --bin screenpop --example sipp_peers)
SCREENPOP=${SCREENPOP_BIN:-"$ROOT/target/release/screenpop"}
PEERS="$ROOT/target/release/examples/sipp_peers"

RUN=$(mktemp -d /tmp/screenpop-sipp.XXXXXX)
PIDS=()

# Ends every process started here, by PID: SIGTERM, up to 3 s, then SIGKILL (to the process
# group for Kamailio, which leads a group of its own with its workers).
cleanup() {
    local pid deadline
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    deadline=$((SECONDS + 3))
    for pid in "${PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 ]]; then echo "run directory kept: $RUN" >&2; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'echo "run.sh: line $LINENO failed (exit $?)" >&2' ERR
trap 'exit 130' INT TERM

# Forgets a PID once its process has ended.
forget() {
    local keep=() pid
    for pid in "${PIDS[@]}"; do [[ $pid == "$1" ]] || keep+=("$pid"); done
    PIDS=("${keep[@]}")
}

# Ends one started process by PID (and its group, when it leads one).
stop() {
    local pid=$1 deadline=$((SECONDS + 3))
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget "$pid"
}

# Command prefixes pinning SIPp and the target to a CPU each when PIN=1 (taskset execs the
# command: the PID stays the process's own).
ON_SIPP_CPU=() ON_TARGET_CPU=()
if [[ $PIN == 1 ]]; then ON_SIPP_CPU=(taskset -c 0) ON_TARGET_CPU=(taskset -c 1); fi

# Datagrams the kernel dropped on the UDP sockets bound to 127.0.0.1:PORT (receive buffer full).
udp_drops() {
    awk -v p="$(printf ':%04X' "$1")" '$2 ~ p"$" { s += $NF } END { print s + 0 }' /proc/net/udp
}

# A value from a `name value` counters file.
count() { awk -v k="$2" '$1 == k { print $2; found = 1 } END { if (!found) print 0 }' "$1"; }

# The sum of a metric's samples whose labels contain every given `key="value"`.
metric() {
    local text=$1 name=$2; shift 2
    awk -v name="$name" -v want="$*" '
        index($0, name) == 1 {
            n = split(want, w, " "); ok = 1
            for (i = 1; i <= n; i++) if (index($0, w[i]) == 0) ok = 0
            if (ok) s += $NF
        }
        END { printf "%d\n", s + 0 }' <<<"$text"
}

# Waits until `$@` prints the same thing twice 300 ms apart (at most 5 s).
settle() {
    local last="" now i
    for ((i = 0; i < 17; i++)); do
        now=$("$@")
        [[ $now == "$last" ]] && return 0
        last=$now
        sleep 0.3
    done
}

# CPU time, in clock ticks: of the whole machine (busy, all CPUs), of given PIDs, of a
# process group, and of this shell's reaped children (the SIPp runs).
TICK=$(getconf CLK_TCK)
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
pid_ticks() {
    local pid s=0 t
    for pid in "$@"; do
        t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
        s=$((s + t))
    done
    echo "$s"
}
group_ticks() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v g="$1" '$5 == g { s += $14 + $15 } END { print s + 0 }'
}
# (Sets CHILD_TICKS: `times` in a command substitution would report the subshell's children.)
children_ticks() {
    times >"$RUN/times"
    CHILD_TICKS=$(awk -v hz="$TICK" 'NR == 2 {
        s = 0
        for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); s += p[1] * 60 + p[2] }
        printf "%d\n", s * hz }' "$RUN/times")
}
# Ticks over seconds, as cores: "0.93".
cores() { awk -v t="$1" -v s="$2" -v hz="$TICK" 'BEGIN { printf "%.2f", (s > 0 ? t / hz / s : 0) }'; }
now() { echo "$EPOCHREALTIME"; }

CALLERS="$RUN/callers.csv"
"$PEERS" callers --agents "$AGENTS" --count 1000 --out "$CALLERS"

# The target's processes, for the CPU columns: TARGET_TICKS and HELPER_TICKS print ticks.
TARGET_TICKS=(echo 0) HELPER_TICKS=(echo 0)

# run_sipp TARGET ADDR SCENARIO RATE: runs SIPp (SIPP instances, sharing the rate) at RATE calls/s
# for RATE × STEP_SECS calls against ADDR. Sets SENT (INVITEs), FAILED (calls SIPp counted failed), ACHIEVED (calls/s
# SIPp reached, summed over the instances), SIPP_KDROPS (datagrams the kernel dropped on SIPp's
# own socket: responses lost on the way back; sampled every 100 ms while SIPp runs) and CPU
# ("sipp/target/helpers/other" in cores, over the run).
run_sipp() {
    local target=$1 addr=$2 scenario=$3 rate=$4 i dir calls each_rate pids=() samplers=() rc p
    local t0 m0 s0 tg0 h0 secs machine sipp tgt helpers
    calls=$((rate * STEP_SECS / SIPP))
    each_rate=$((rate / SIPP))
    SENT=0 ACHIEVED=0 FAILED=0 SIPP_KDROPS=0
    children_ticks
    t0=$(now) m0=$(machine_ticks) s0=$CHILD_TICKS tg0=$("${TARGET_TICKS[@]}") h0=$("${HELPER_TICKS[@]}")
    for ((i = 0; i < SIPP; i++)); do
        dir="$RUN/sipp-$target-$rate-$i"
        mkdir -p "$dir"
        mapfile -t p < <("$PEERS" ports 3)
        (cd "$dir" && exec "${ON_SIPP_CPU[@]}" sipp -sf "$HERE/$scenario" -inf "$CALLERS" \
            -i 127.0.0.1 -p "${p[0]}" -mp "${p[1]}" -cp "${p[2]}" \
            -r "$each_rate" -rp 1000 -m "$calls" -d "$RING_MS" -nr -recv_timeout 5000 \
            -buff_size 4194304 -max_sched_loops 10000 -max_recv_loops 10000 -nostdin -timeout "$((STEP_SECS * 3 + 10))s" \
            -trace_stat -stf stat.csv -fd 100ms -trace_screen "$addr" >sipp.log 2>&1) &
        pids+=($!)
        PIDS+=($!)
        # The sampler ends with SIPp; its last line is SIPp's count.
        (while kill -0 "${pids[-1]}" 2>/dev/null; do udp_drops "${p[0]}"; sleep 0.1; done \
            >"$dir/kdrops") &
        samplers+=($!)
    done
    for ((i = 0; i < SIPP; i++)); do
        rc=0
        wait "${pids[$i]}" || rc=$?
        forget "${pids[$i]}"
        # SIPp exits 0 when every call succeeded, 1 when some failed; anything else is fatal.
        if ((rc > 1)); then
            echo "SIPp failed (exit $rc):" >&2
            tail -5 "$RUN/sipp-$target-$rate-$i/sipp.log" >&2
        fi
        wait "${samplers[$i]}" || true
    done
    secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')
    machine=$(($(machine_ticks) - m0))
    children_ticks
    sipp=$((CHILD_TICKS - s0))
    tgt=$(($("${TARGET_TICKS[@]}") - tg0))
    helpers=$(($("${HELPER_TICKS[@]}") - h0))
    CPU="$(cores "$sipp" "$secs")/$(cores "$tgt" "$secs")/$(cores "$helpers" "$secs")"
    # The rest of the machine: /proc/stat is sampled at each tick and misses short runs that
    # per-process times count, so this reads low (clamped at 0); it flags a busy machine.
    machine=$((machine - sipp - tgt - helpers))
    CPU+="/$(cores $((machine > 0 ? machine : 0)) "$secs")"
    # More than a quarter of a core elsewhere: the step measured a shared machine.
    BUSY=$(awk -v t="$machine" -v s="$secs" -v hz="$TICK" 'BEGIN { print (t / hz / s > 0.25) }')
    for ((i = 0; i < SIPP; i++)); do
        dir="$RUN/sipp-$target-$rate-$i"
        SENT=$((SENT + $(awk '/INVITE ---------->/ { print $3; exit }' "$dir"/*_screen.log 2>/dev/null || echo 0)))
        FAILED=$((FAILED + $(awk -F';' 'END { print $18 + 0 }' "$dir/stat.csv")))
        SIPP_KDROPS=$((SIPP_KDROPS + $(awk 'END { print $1 + 0 }' "$dir/kdrops")))
        # The rate SIPp reached: calls created by its last 100 ms sample before the last call,
        # over the time since it started.
        ACHIEVED=$((ACHIEVED + $(awk -F';' -v m="$calls" '
            NR > 1 && $12 < m { split($1, s, "\t"); split($3, c, "\t"); t = c[3] - s[3]; n = $12 }
            END { printf "%d", (t > 0 ? n / t : 0) }' "$dir/stat.csv")))
    done
}

RESULTS="$RUN/results.txt"
{
    echo "# $(date -u +%FT%TZ) $(nproc) CPUs; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# RATES='$RATES' STEP_SECS=$STEP_SECS RING_MS=$RING_MS AGENTS=$AGENTS WS=$WS RING_TIMEOUT=$RING_TIMEOUT SIPP=$SIPP PIN=$PIN KAMAILIO_CHILDREN=$KAMAILIO_CHILDREN KAMAILIO_RCVBUF=${KAMAILIO_RCVBUF:-default}"
    echo "# cpu = cores used during the SIPp run: SIPp / target / helpers (sink, agents) / everything else"
    echo "# kdrops = datagrams the kernel dropped (receive buffer full) at the target's socket / at SIPp's"
    printf '%-9s %7s %8s %7s %7s %6s %7s %6s %6s %-11s %-23s %s\n' target asked achieved sent \
        received lost pops popsLost failed kdrops cpu notes
} | tee "$RESULTS"

# One line of the table; updates BEST[target] when nothing was lost; sets STOP when the ladder
# should end (loss, or SIPp below 90 % of the rate asked).
declare -A BEST
report() {
    local target=$1 rate=$2 received=$3 pops=$4 pops_lost=$5 kdrops=$6 notes=$7 lost
    lost=$((SENT - received))
    if ((BUSY)); then notes="BUSY MACHINE; $notes"; fi
    printf '%-9s %7d %8d %7d %7d %6d %7s %6s %6d %-11s %-23s %s\n' "$target" "$rate" "$ACHIEVED" \
        "$SENT" "$received" "$lost" "$pops" "$pops_lost" "$FAILED" "$kdrops/$SIPP_KDROPS" "$CPU" "$notes" |
        tee -a "$RESULTS"
    STOP=0
    if ((lost == 0 && SENT > 0 && FAILED == 0)) && [[ $pops_lost == "-" || $pops_lost == 0 ]]; then
        if ((ACHIEVED > ${BEST[$target]:-0})); then BEST[$target]=$ACHIEVED; fi
    else
        STOP=1
    fi
    if ((ACHIEVED * 10 < rate * 9)); then STOP=1; fi
}

start_sink() {
    SINK_PORT=$("$PEERS" ports 1)
    "${ON_TARGET_CPU[@]}" "$PEERS" sink --port "$SINK_PORT" --out "$RUN/sink.counts" \
        >"$RUN/sink.log" 2>&1 &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    while [[ ! -s $RUN/sink.counts ]]; do sleep 0.05; done
}

sink_invites() { count "$RUN/sink.counts" invite; }

ladder_sink() {
    local rate before drops0
    start_sink
    TARGET_TICKS=(pid_ticks "$SINK_PID") HELPER_TICKS=(echo 0)
    for rate in $RATES; do
        before=$(sink_invites) drops0=$(udp_drops "$SINK_PORT")
        run_sipp sink "127.0.0.1:$SINK_PORT" invite-stateless.xml "$rate"
        settle sink_invites >/dev/null
        report sink "$rate" $(($(sink_invites) - before)) - - $(($(udp_drops "$SINK_PORT") - drops0)) ""
        ((STOP)) && break
        sleep 1
    done
    stop "$SINK_PID"
}

ladder_kamailio() {
    local rate before port drops0 sink_drops0 kpid kdir="$RUN/kamailio"
    start_sink
    port=$("$PEERS" ports 1)
    mkdir -p "$kdir"
    # setsid: Kamailio and its workers get a process group of their own, which stop() ends.
    "${ON_TARGET_CPU[@]}" setsid "$KAMAILIO" -DD -E -m 64 -M 8 -f "$HERE/kamailio-forward.cfg" \
        -Y "$kdir" -L "$MODULES" -l "udp:127.0.0.1:$port" -n "$KAMAILIO_CHILDREN" \
        -A "SINK_PORT=$SINK_PORT" ${KAMAILIO_RCVBUF:+-b "$KAMAILIO_RCVBUF"} >"$kdir/kamailio.log" 2>&1 &
    kpid=$!
    PIDS+=("$kpid")
    "$PEERS" probe "127.0.0.1:$port" || { tail "$kdir/kamailio.log" >&2; exit 1; }
    TARGET_TICKS=(group_ticks "$kpid") HELPER_TICKS=(pid_ticks "$SINK_PID")
    sleep 0.5
    for rate in $RATES; do
        before=$(sink_invites) drops0=$(udp_drops "$port") sink_drops0=$(udp_drops "$SINK_PORT")
        run_sipp kamailio "127.0.0.1:$port" invite-stateless.xml "$rate"
        settle sink_invites >/dev/null
        report kamailio "$rate" $(($(sink_invites) - before)) - - $(($(udp_drops "$port") - drops0)) \
            "sink kdrops $(($(udp_drops "$SINK_PORT") - sink_drops0))"
        ((STOP)) && break
        sleep 1
    done
    stop "$kpid"
    stop "$SINK_PID"
}

ladder_screenpop() {
    local rate sip http pid apid text i port
    "$PEERS" config --agents "$AGENTS" --ring-timeout "$RING_TIMEOUT" --out "$RUN/screenpop.toml"
    SCREENPOP_LOG=warn "${ON_TARGET_CPU[@]}" "$SCREENPOP" run --config "$RUN/screenpop.toml" \
        >"$RUN/screenpop.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for ((i = 0; i < 100; i++)); do
        grep -q '^  HTTP ' "$RUN/screenpop.log" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || { cat "$RUN/screenpop.log" >&2; exit 1; }
        sleep 0.1
    done
    sip=$(awk '$1 == "SIP" && $2 == "udp" { print $3; exit }' "$RUN/screenpop.log")
    http=$(awk '$1 == "HTTP" { print $2; exit }' "$RUN/screenpop.log")
    [[ -n $sip && -n $http ]] || { cat "$RUN/screenpop.log" >&2; exit 1; }
    port=${sip##*:}
    "$PEERS" probe "$sip"
    if [[ $WS == 1 ]]; then
        "${ON_TARGET_CPU[@]}" "$PEERS" agents --http "$http" --agents "$AGENTS" \
            --out "$RUN/agents.counts" >"$RUN/agents.log" 2>&1 &
        apid=$!
        PIDS+=("$apid")
        for ((i = 0; i < 300; i++)); do
            grep -q 'signed in' "$RUN/agents.log" 2>/dev/null && break
            kill -0 "$apid" 2>/dev/null || { cat "$RUN/agents.log" >&2; exit 1; }
            sleep 0.1
        done
        grep -q 'signed in' "$RUN/agents.log" || { echo "agents did not sign in" >&2; exit 1; }
    else
        # No agent connected: the daemon resolves and tracks every call but pushes nothing.
        apid=$$
        echo "ringing 0" >"$RUN/agents.counts"
    fi
    TARGET_TICKS=(pid_ticks "$pid") HELPER_TICKS=(echo 0)
    if [[ $WS == 1 ]]; then HELPER_TICKS=(pid_ticks "$apid"); fi
    sleep 1
    metrics() { curl -sf "http://$http/metrics"; }
    invites() { metric "$(metrics)" screenpop_sip_messages_total 'method="INVITE"'; }
    pops() { count "$RUN/agents.counts" ringing; }
    for rate in $RATES; do
        local inv0 pop0 push0 drops0 kd0 inv push drops popsgot
        text=$(metrics)
        inv0=$(metric "$text" screenpop_sip_messages_total 'method="INVITE"')
        push0=$(metric "$text" screenpop_push_messages_total 'type="ringing"')
        drops0=$(metric "$text" screenpop_drops_total)
        pop0=$(pops) kd0=$(udp_drops "$port")
        run_sipp screenpop "$sip" invite.xml "$rate"
        settle invites >/dev/null
        settle pops >/dev/null
        text=$(metrics)
        echo "$text" >"$RUN/metrics-$rate.txt"
        inv=$(($(metric "$text" screenpop_sip_messages_total 'method="INVITE"') - inv0))
        push=$(($(metric "$text" screenpop_push_messages_total 'type="ringing"') - push0))
        drops=$(($(metric "$text" screenpop_drops_total) - drops0))
        popsgot=$(($(pops) - pop0))
        local pops_lost=$((inv - popsgot))
        if [[ $WS != 1 ]]; then popsgot=- pops_lost=-; fi
        report screenpop "$rate" "$inv" "$popsgot" "$pops_lost" $(($(udp_drops "$port") - kd0)) \
            "pushed $push, drops_total +$drops"
        if ((drops > 0)); then
            grep '^screenpop_drops_total\|^screenpop_push_drops_total' <<<"$text" | sed 's/^/    /' |
                tee -a "$RESULTS"
        fi
        ((STOP)) && break
        sleep 1
    done
    if [[ $WS == 1 ]]; then
        echo "    agents' frames: $(tr '\n' ' ' <"$RUN/agents.counts")" | tee -a "$RESULTS"
        stop "$apid"
    fi
    stop "$pid"
}

for target in $TARGETS; do
    "ladder_$target"
done

{
    echo
    echo "max sustained (calls/s SIPp reached with nothing lost):"
    for target in $TARGETS; do echo "  $target ${BEST[$target]:-0}"; done
    if [[ -n ${BEST[kamailio]:-} && -n ${BEST[screenpop]:-} ]]; then
        awk -v s="${BEST[screenpop]}" -v k="${BEST[kamailio]}" \
            'BEGIN { printf "  screenpop / kamailio = %.2f\n", s / k }'
    fi
    echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$RESULTS"
