#!/usr/bin/env bash
# Sustained archive_command throughput with every segment waiting (bench/README.md, "WAL push
# throughput"): SEGMENTS real WAL segments of a throwaway PostgreSQL 15 cluster, all marked
# .ready before the first call, then archive_command run on each in order as PostgreSQL's archiver
# does, through `strongbox wal daemon` (each CLI given: e.g. this build and an older one), and
# through `pgbackrest archive-push` with archive-async=y.
#
#   bash bench/wal-push-throughput.sh [CLI...]     (default: dist/bin/strongbox.js; npm run build first)
#
# Environment: SEGMENTS (200), PARALLEL (the daemon's --parallel, 2), PGBACKREST (1: also time
# pgBackRest async, 0: not), CIPHER (1: pgBackRest again, its repository encrypted), ACK (1: the
# daemon with --acknowledge-dir, archive_command bin/strongbox-wal-push), WORK (a directory to work in, removed at the end; default a new one
# in /tmp), KEEP (a directory where the captured segments and their cluster are kept and found
# again by the next run; by default they are removed), MODES ("calls drain", or one of them).
# Each contender runs in each mode, each time into a fresh repository:
# - calls: archive_command on every segment in order; prints segments/s over the whole sequence,
#   median and p95 latency of the calls, CPU ms per segment of the daemon and of the calls (the
#   starts of `wal push`), and the bytes stored;
# - drain: archive_command once, for the first segment, then the time until the repository holds
#   them all, which the daemon (or pgBackRest's async process) pushes on its own: its segments/s
#   without the calls' process starts.
set -euo pipefail

SEGMENTS=${SEGMENTS:-200}
PARALLEL=${PARALLEL:-2}
PGBACKREST=${PGBACKREST:-1}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
here=$(cd "$(dirname "$0")/.." && pwd)
clis=()
for cli in "${@:-$here/dist/bin/strongbox.js}"; do
  [ -f "$cli" ] || { echo "$cli is missing: run npm run build" >&2; exit 1; }
  clis+=("$(realpath "$cli")")
done
node=$(command -v node)
work=${WORK:-$(mktemp -d /tmp/wal-push-bench.XXXXXX)}
mkdir -p "$work"

# As the postgres user when run as root, as PostgreSQL's archiver runs archive_command.
as_server() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
[ "$(id -u)" = 0 ] && chown postgres: "$work"
chmod 755 "$work"

keep=${KEEP:-$work}
cluster=$keep/cluster capture=$keep/capture
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
daemon=
cleanup() {
  [ -z "$daemon" ] || kill -TERM "$daemon" 2>/dev/null || true
  as_server "$PG_BIN/pg_ctl" -D "$cluster" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
[ -z "${KEEP:-}" ] || { mkdir -p "$KEEP"; [ "$(id -u)" != 0 ] || chown postgres: "$KEEP"; }
trap cleanup EXIT
log() { echo "wal-push-bench: $*" >&2; }

segment_names() { ls "$capture" 2>/dev/null | grep -E '^[0-9A-F]{24}$' | sort; }
captured() { segment_names | wc -l; }
if [ "$(captured)" -le "$SEGMENTS" ]; then
  rm -rf "$cluster" "$capture"
  log "capturing $((SEGMENTS + 1)) WAL segments of pgbench -i in $work"
  as_server mkdir -p "$capture"
  as_server "$PG_BIN/initdb" -D "$cluster" -A trust -U postgres >/dev/null
  cat >>"$cluster/postgresql.conf" <<EOF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
wal_level = replica
archive_mode = on
archive_command = 'test ! -f $capture/%f && cp %p $capture/%f'
max_wal_size = 4GB
checkpoint_timeout = 30s
autovacuum = off
EOF
  as_server "$PG_BIN/pg_ctl" -D "$cluster" -l "$work/cluster.log" -o "-p $port -k $work" -w start >/dev/null
  psql_() { as_server "$PG_BIN/psql" -h "$work" -p "$port" -U postgres -d postgres -qAtX "$@"; }
  scale=$(( (SEGMENTS + 1) * 16 / 15 + 10 ))
  as_server "$PG_BIN/pgbench" -h "$work" -p "$port" -U postgres -i -q -s "$scale" postgres >/dev/null 2>&1
  for _ in $(seq 600); do
    [ "$(captured)" -le "$SEGMENTS" ] || break
    psql_ -c 'select pg_switch_wal()' >/dev/null
    sleep 1
  done
  [ "$(captured)" -gt "$SEGMENTS" ] || { echo "captured $(captured) segments, fewer than $((SEGMENTS + 1))" >&2; exit 1; }
  as_server "$PG_BIN/pg_ctl" -D "$cluster" -m fast stop >/dev/null
fi
mapfile -t segments < <(segment_names | head -n "$SEGMENTS")
log "captured ${#segments[@]} segments, $(du -sm "$capture" | cut -f1) MiB"

# What PostgreSQL's archiver does: every .ready written first, then for each segment in order
# archive_command through sh -c in the data directory, .ready renamed .done once it exits 0.
# Prints per call "start end" (EPOCHREALTIME), then the calls' CPU (bash's `times`, children).
# $1: data directory, $2: archive_command with %p as "$1" and %f as "$2"; then the segments.
push_loop='
set -euo pipefail
pgdata=$1 command=$2
shift 2
cd "$pgdata"
for segment in "$@"; do : > "pg_wal/archive_status/$segment.ready"; done
for segment in "$@"; do
  started=$EPOCHREALTIME
  sh -c "$command" archive_command "pg_wal/$segment" "$segment"
  ended=$EPOCHREALTIME
  mv "pg_wal/archive_status/$segment.ready" "pg_wal/archive_status/$segment.done"
  echo "$started $ended"
done
echo cpu
times
'

# The same, but one call, for the first segment; then waits until `sh -c "$3"` counts them all
# in the repository. Prints "start first-call-end all-stored".
drain_loop='
set -euo pipefail
pgdata=$1 command=$2 count=$3
shift 3
cd "$pgdata"
for segment in "$@"; do : > "pg_wal/archive_status/$segment.ready"; done
started=$EPOCHREALTIME
sh -c "$command" archive_command "pg_wal/$1" "$1"
answered=$EPOCHREALTIME
until [ "$(sh -c "$count")" -ge $# ]; do sleep 0.05; done
echo "$started $answered $EPOCHREALTIME"
'

# $1: label, $2: file of the drain's line, $3: CPU seconds or empty, $4: bytes stored.
report_drain() {
  awk -v label="$1" -v n="${#segments[@]}" -v cpu="$3" -v bytes="$4" '{
      daemon = cpu == "" ? "n/a" : sprintf("%.0f ms/segment", cpu * 1000 / n)
      printf "%s, drain: %d segments stored in %.1f s: %.2f segments/s (first call answered in %.0f ms), CPU of the daemon %s, %.1f MB stored\n",
        label, n, $3 - $1, n / ($3 - $1), ($2 - $1) * 1000, daemon, bytes / 1e6 }' "$2"
}

# A data directory of hard links to the captured segments, with the cluster's pg_control.
fake_pgdata() {
  as_server mkdir -p "$1/global" "$1/pg_wal/archive_status"
  as_server cp "$cluster/global/pg_control" "$1/global/"
  for segment in "${segments[@]}"; do as_server ln "$capture/$segment" "$1/pg_wal/$segment"; done
}

# CPU seconds a process and its threads have used (utime + stime).
cpu_seconds() {
  awk -v tick="$(getconf CLK_TCK)" '{ split($0, part, ") "); split(part[2], field, " "); print (field[12] + field[13]) / tick }' "/proc/$1/stat"
}

# Seconds in bash's `times` format (1m2.345s) summed over user and system.
times_seconds() {
  echo "$1" | awk '{ total = 0; for (i = 2; i <= 3; i++) { split($i, t, /[ms]/); total += t[1] * 60 + t[2] } print total }'
}

# $1: label, $2: file of "start end" lines and the cpu line, $3: extra CPU seconds, $4: bytes stored.
report() {
  local n=${#segments[@]}
  grep -E '^[0-9.]+ [0-9.]+$' "$2" >"$2.calls"
  awk '{ print ($2 - $1) * 1000 }' "$2.calls" | sort -n >"$2.latency"
  local first last median p95 calls_cpu
  first=$(head -1 "$2.calls" | cut -d' ' -f1)
  last=$(tail -1 "$2.calls" | cut -d' ' -f2)
  median=$(awk -v n="$n" 'NR == int((n + 1) / 2)' "$2.latency")
  p95=$(awk -v n="$n" 'BEGIN { k = int(n * 0.95); if (k < n * 0.95) k++ } NR == k' "$2.latency")
  calls_cpu=$(times_seconds "cpu $(tail -1 "$2")")
  awk -v label="$1" -v n="$n" -v first="$first" -v last="$last" -v median="$median" -v p95="$p95" \
    -v cpu="$3" -v calls="$calls_cpu" -v bytes="$4" 'BEGIN {
      daemon = cpu == "" ? "n/a" : sprintf("%.0f ms/segment", cpu * 1000 / n)
      printf "%s: %d segments all waiting: %.2f segments/s, latency median %.0f ms, p95 %.0f ms, CPU of the daemon %s, of the archive_command calls %.0f ms/segment, %.1f MB stored\n",
        label, n, n / (last - first), median, p95, daemon, calls * 1000 / n, bytes / 1e6 }'
}

run=0
for cli in "${clis[@]}"; do
  run=$((run + 1))
  for mode in ${MODES:-calls drain}; do
    dir=$work/strongbox-$run-$mode
    as_server mkdir -p "$dir/state"
    base=(STRONGBOX_REPO="$dir/repo" STRONGBOX_STATE_DIR="$dir/state")
    as_server env "${base[@]}" STRONGBOX_PASSWORD=bench "$node" "$cli" init >/dev/null 2>&1
    as_server env "${base[@]}" STRONGBOX_PASSWORD=bench "$node" "$cli" key add --write-only \
      --identity-file-out "$dir/write-only.identity" >/dev/null 2>&1
    env=("${base[@]}" STRONGBOX_IDENTITY_FILE="$dir/write-only.identity" STRONGBOX_WAL_SOCKET="$dir/wal.sock")
    fake_pgdata "$dir/pgdata"
    log "strongbox ($cli): wal daemon --parallel $PARALLEL, ${#segments[@]} segments, $mode"
    # exec: the process started is the daemon itself, whose CPU is read from /proc.
    ack_options=()
    [ "${ACK:-0}" != 1 ] || ack_options=(--acknowledge-dir "$dir/marks")
    as_server bash -c 'exec env "$@"' daemon "${env[@]}" "$node" "$cli" wal daemon \
      --pgdata "$dir/pgdata" --parallel "$PARALLEL" "${ack_options[@]}" 2>"$dir/daemon.log" &
    launcher=$!
    until grep -q listening "$dir/daemon.log" 2>/dev/null; do sleep 0.1; done
    daemon=$(pgrep -f -n -- "$cli wal daemon --pgdata $dir/pgdata")
    command="$(printf '%q ' "${env[@]}") $node $cli wal push %p"
    # ACK=1: the shell client answers from the daemon's marks, Node only when it must.
    [ "${ACK:-0}" != 1 ] ||
      command="$(printf '%q ' "${env[@]}" STRONGBOX_CLI="$node $cli") $here/bin/strongbox-wal-push $dir/marks %p"
    shell_command=${command//%p/\"\$1\"}
    if [ "$mode" = calls ]; then
      as_server bash -c "$push_loop" push-loop "$dir/pgdata" "$shell_command" "${segments[@]}" >"$dir/calls"
    else
      count="ls $dir/repo/wal/${segments[0]:0:8} 2>/dev/null | grep -cE '^[0-9A-F]{24}\$' || true"
      as_server bash -c "$drain_loop" drain-loop "$dir/pgdata" "$shell_command" "$count" "${segments[@]}" >"$dir/calls"
    fi
    cpu=$(cpu_seconds "$daemon")
    kill -TERM "$daemon"
    wait "$launcher" || true
    daemon=
    stored=$(du -sb "$dir/repo/wal" | cut -f1)
    label="strongbox $run ($cli)"
    [ "${ACK:-0}" != 1 ] || label="$label, strongbox-wal-push"
    if [ "$mode" = calls ]; then report "$label" "$dir/calls" "$cpu" "$stored"
    else report_drain "$label" "$dir/calls" "$cpu" "$stored"; fi
    rm -rf "$dir"
  done
done

# pgBackRest as the bench configures it (no encryption), and with CIPHER=1 also encrypting its
# repository (aes-256-cbc), as strongbox always does: the same work, for comparison.
ciphers=(none)
[ "${CIPHER:-0}" != 1 ] || ciphers+=(aes-256-cbc)
if [ "$PGBACKREST" = 1 ] && command -v pgbackrest >/dev/null; then
  for cipher in "${ciphers[@]}"; do
  for mode in ${MODES:-calls drain}; do
    dir=$work/pgbackrest-$cipher-$mode
    cipher_options=
    [ "$cipher" = none ] || cipher_options="repo1-cipher-type=$cipher
repo1-cipher-pass=$(head -c 32 /dev/urandom | base64)"
    name="pgBackRest async"
    [ "$cipher" = none ] || name="pgBackRest async, $cipher"
    as_server mkdir -p "$dir"
    as_server tee "$dir/pgbackrest.conf" >/dev/null <<EOF
[global]
repo1-path=$dir/repo
repo1-retention-full=9
compress-type=zst
process-max=$PARALLEL
log-level-console=warn
log-level-file=off
lock-path=$dir/lock
archive-async=y
spool-path=$dir/spool
$cipher_options

[bench]
pg1-path=$dir/pgdata
pg1-socket-path=$work
pg1-port=$port
pg1-user=postgres
EOF
    as_server "$PG_BIN/pg_ctl" -D "$cluster" -l "$work/cluster.log" -o "-p $port -k $work" -w start >/dev/null
    as_server pgbackrest --config="$dir/pgbackrest.conf" --stanza=bench --pg1-path="$cluster" stanza-create
    as_server "$PG_BIN/pg_ctl" -D "$cluster" -m fast stop >/dev/null
    fake_pgdata "$dir/pgdata"
    log "pgbackrest archive-push, archive-async=y, process-max=$PARALLEL, cipher $cipher, ${#segments[@]} segments, $mode"
    push="pgbackrest --config=$dir/pgbackrest.conf --stanza=bench archive-push \"\$1\""
    # Its async process detaches from the first call: its CPU is not counted (n/a).
    if [ "$mode" = calls ]; then
      as_server bash -c "$push_loop" push-loop "$dir/pgdata" "$push" "${segments[@]}" >"$dir/calls"
    else
      as_server bash -c "$drain_loop" drain-loop "$dir/pgdata" "$push" \
        "find $dir/repo/archive -name '*.zst' | wc -l" "${segments[@]}" >"$dir/calls"
    fi
    as_server flock -w 600 "$dir/lock/bench-archive.lock" true
    stored=$(du -sb "$dir/repo/archive" | cut -f1)
    if [ "$mode" = calls ]; then report "$name" "$dir/calls" "" "$stored"
    else report_drain "$name" "$dir/calls" "" "$stored"; fi
    rm -rf "$dir"
  done
  done
fi
