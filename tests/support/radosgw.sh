#!/usr/bin/env bash
# A single-node Ceph S3 server (radosgw) on 127.0.0.1 for the S3 tests: one monitor, one OSD
# keeping its data in RAM (memstore), one radosgw, all from one ceph.conf in DIR.
#
#   tests/support/radosgw.sh start DIR   start it (stopping what an earlier run left in DIR),
#                                        wait until S3 answers and create a user; then write
#                                        DIR/s3.env with endpoint=, access_key=, secret_key=,
#                                        region= lines
#   tests/support/radosgw.sh stop DIR    kill its processes and remove DIR
#   tests/support/radosgw.sh status DIR  exit 0 when S3 answers
#
# ctest runs start and stop as the setup and cleanup of the "radosgw" fixture (tests/CMakeLists.txt).
# Needs ceph-mon, ceph-osd, radosgw and ceph-common (packaging/install-deps). Start gives up after
# MODELFS_RADOSGW_TIMEOUT seconds (default 90), printing the tail of each daemon's log.
# MODELFS_RADOSGW_MEMSTORE_BYTES sizes the in-memory OSD (default 1 GiB).
set -euo pipefail

die() { echo "radosgw.sh: $*" >&2; exit 1; }
[[ $# -eq 2 ]] || die "usage: radosgw.sh start|stop|status DIR"
CMD=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
CONF="$DIR/ceph.conf"
TIMEOUT=${MODELFS_RADOSGW_TIMEOUT:-90}
MEMSTORE_BYTES=${MODELFS_RADOSGW_MEMSTORE_BYTES:-1073741824}
ACCESS_KEY=modelfstestaccess
SECRET_KEY=modelfs-test-secret-0123456789abcdef
REGION=us-east-1

log() { echo "radosgw.sh: $*"; }

# Processes this script started are recorded in DIR/pids (one "pid name" a line). Before killing
# one, check it is still ours: its command line names our ceph.conf (pids get reused).
ours() {
  local pid=$1
  [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$CONF"
}

# SIGKILL: the data is thrown away anyway, and a clean shutdown would only spend time on it
# (the in-memory OSD saves its store to disk when it stops).
stop_all() {
  [[ -f $DIR/pids ]] || return 0
  local pid name i left
  while read -r pid name; do
    if ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done <"$DIR/pids"
  for ((i = 0; i < 100; i++)); do
    left=0
    while read -r pid name; do
      if ours "$pid"; then left=1; fi
    done <"$DIR/pids"
    [[ $left == 0 ]] && break
    sleep 0.1
  done
  rm -f "$DIR/pids"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

s3_answers() {
  local port=$1
  [[ $(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' -m 2 "http://127.0.0.1:$port/" \
        2>/dev/null || true) == 200 ]]
}

# Starts "$@" in its own session, detached from ctest's pipes (ctest waits for them to close).
spawn() {
  local name=$1
  shift
  setsid "$@" </dev/null >>"$DIR/log/$name.out" 2>&1 &
  echo "$! $name" >>"$DIR/pids"
  disown $!
}

DEADLINE=$((SECONDS + TIMEOUT))
fail() {
  echo "radosgw.sh: $*" >&2
  local f
  for f in "$DIR"/log/*; do
    [[ -s $f ]] || continue
    echo "--- tail of $f ---" >&2
    tail -n 25 "$f" >&2
  done
  stop_all
  exit 1
}
# Runs a command that must finish before the deadline.
bounded() {
  local left=$((DEADLINE - SECONDS))
  [[ $left -gt 0 ]] || fail "gave up after ${TIMEOUT}s (while running: $*)"
  timeout "$left" "$@" >>"$DIR/log/setup.log" 2>&1 || fail "failed (exit $?): $*"
}
# Waits until "$@" succeeds, or fails with `what` at the deadline.
wait_for() {
  local what=$1
  shift
  until "$@" >/dev/null 2>&1; do
    [[ $SECONDS -lt $DEADLINE ]] || fail "gave up after ${TIMEOUT}s waiting for $what"
    local pid name
    while read -r pid name; do
      kill -0 "$pid" 2>/dev/null || fail "$name (pid $pid) exited while waiting for $what"
    done <"$DIR/pids"
    sleep 0.5
  done
}

case "$CMD" in
  stop)
    stop_all
    rm -rf "$DIR"
    log "stopped"
    exit 0
    ;;
  status)
    [[ -f $DIR/s3.env ]] || exit 1
    port=$(sed -n 's/^endpoint=http:\/\/127.0.0.1:\([0-9]*\)$/\1/p' "$DIR/s3.env")
    s3_answers "$port"
    exit
    ;;
  start) ;;
  *) die "unknown command '$CMD' (start, stop or status)" ;;
esac

for p in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool curl python3 \
         setsid timeout; do
  command -v "$p" >/dev/null 2>&1 ||
    die "$p is not installed (packaging/install-deps installs ceph-mon ceph-osd radosgw ceph-common)"
done

stop_all
rm -rf "$DIR"
mkdir -p "$DIR"/{log,run,mon,osd,rgw}
: >"$DIR/pids"

MON_PORT=$(free_port)
RGW_PORT=$(free_port)
while [[ $RGW_PORT == "$MON_PORT" ]]; do RGW_PORT=$(free_port); done
FSID=$(python3 -c 'import uuid; print(uuid.uuid4())')

cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon_host = v1:127.0.0.1:$MON_PORT
ms_bind_msgr2 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
run_dir = $DIR/run
admin_socket = $DIR/run/\$name.asok
pid_file = $DIR/run/\$name.pid
log_file = $DIR/log/\$name.log
keyring = $DIR/keyring
mon_data = $DIR/mon/\$name
osd_data = $DIR/osd/\$name
rgw_data = $DIR/rgw/\$name
osd_objectstore = memstore
memstore_device_bytes = $MEMSTORE_BYTES
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
# A client that sends a command to the monitor before it has the monitor map sends a zero fsid
# and gets EPERM (Ceph 16); an OSD doing that at start-up exits. So the OSD asks nothing at
# start-up: this script places it in the CRUSH map, retrying.
osd_crush_update_on_start = false
osd_class_update_on_start = false
mon_max_pg_per_osd = 1000
# A test machine's disk may be fuller than a real monitor would accept (it stops at 5% free).
mon_data_avail_warn = 2
mon_data_avail_crit = 1
# radosgw creates its pools one after another, each a new OSD map: propose them at once rather
# than once a second.
paxos_propose_interval = 0.05
paxos_min_wait = 0.01
# One OSD on one host: no peers to wait for, no scrubbing during tests.
osd_scrub_auto_repair = false
osd_scrub_begin_hour = 0
osd_scrub_end_hour = 0
mgr_initial_modules =
# Small, quick and quiet: this is a test server.
osd_memory_target = 268435456
bluestore_cache_size = 0
debug_ms = 0
log_to_stderr = false
err_to_stderr = true
[mon]
mon_initial_members = a
[client.rgw.a]
# tcp_nodelay: without it a small ranged GET waits ~40 ms (Nagle against the client's delayed ACK),
# which no real S3 endpoint does; diff-only downloads make many of them.
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw_dns_name = localhost
rgw_enable_usage_log = false
rgw_thread_pool_size = 64
EOF

log "starting in $DIR (monitor 127.0.0.1:$MON_PORT, S3 http://127.0.0.1:$RGW_PORT)"

# --- monitor ----------------------------------------------------------------------------------
bounded ceph-authtool --create-keyring "$DIR/mon.keyring" --gen-key -n mon. --cap mon 'allow *'
bounded monmaptool --create --fsid "$FSID" --addv a "[v1:127.0.0.1:$MON_PORT]" "$DIR/monmap"
bounded ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/monmap" --keyring "$DIR/mon.keyring"
spawn mon.a ceph-mon -c "$CONF" -i a -f
wait_for "the monitor" timeout 5 ceph -c "$CONF" --connect-timeout 3 mon stat

# --- OSD, in memory ---------------------------------------------------------------------------
# With a uuid, "osd create" is idempotent, so it can be retried: a monitor that has just started
# sometimes refuses the first commands (EPERM, "problem getting command descriptions").
OSD_UUID=$(python3 -c 'import uuid; print(uuid.uuid4())')
osd_create() {
  OSD_ID=$(timeout 10 ceph -c "$CONF" osd create "$OSD_UUID" 2>>"$DIR/log/setup.log")
}
wait_for "ceph osd create" osd_create
[[ $OSD_ID == 0 ]] || fail "expected OSD id 0, got '$OSD_ID'"
mkdir -p "$DIR/osd/osd.0"
bounded ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID"
spawn osd.0 ceph-osd -c "$CONF" -i 0 -f
crush_add() { timeout 10 ceph -c "$CONF" osd crush add osd.0 1.0 host=localhost root=default; }
wait_for "the OSD in the CRUSH map" crush_add
osd_up() { timeout 5 ceph -c "$CONF" osd dump 2>/dev/null | grep -q '^osd\.0 up'; }
wait_for "the OSD to come up" osd_up

# --- radosgw ----------------------------------------------------------------------------------
mkdir -p "$DIR/rgw/client.rgw.a"
# radosgw can meet the same early-command race and exit: start it again, a few times.
for ((attempt = 1; ; attempt++)); do
  spawn rgw.a radosgw -c "$CONF" -n client.rgw.a -f
  RGW_PID=$(awk '$2 == "rgw.a" { p = $1 } END { print p }' "$DIR/pids")
  while ! s3_answers "$RGW_PORT" && kill -0 "$RGW_PID" 2>/dev/null; do
    [[ $SECONDS -lt $DEADLINE ]] || fail "gave up after ${TIMEOUT}s waiting for radosgw to answer on 127.0.0.1:$RGW_PORT"
    sleep 0.5
  done
  s3_answers "$RGW_PORT" && break
  [[ $attempt -lt 3 ]] || fail "radosgw exited $attempt times"
  sed -i "/^$RGW_PID rgw.a\$/d" "$DIR/pids"
  log "radosgw exited; starting it again"
done
user_create() {
  timeout 20 radosgw-admin -c "$CONF" user create --uid=modelfs-test --display-name="modelfs tests" \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >>"$DIR/log/setup.log" 2>&1 ||
    timeout 20 radosgw-admin -c "$CONF" user info --uid=modelfs-test 2>/dev/null | grep -qF "$ACCESS_KEY"
}
wait_for "the S3 user" user_create

# The first bucket and the first object each make radosgw create pools (a couple of seconds
# apiece); pay for that here rather than in the first test's time limit.
warm() {
  local url="http://127.0.0.1:$RGW_PORT/modelfs-warmup" code
  for args in "-X PUT $url" "-X PUT --data-binary warm $url/object"; do
    # shellcheck disable=SC2086
    code=$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' -m 30 --aws-sigv4 "aws:amz:$REGION:s3" \
      -u "$ACCESS_KEY:$SECRET_KEY" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' $args) || true
    [[ $code == 200 ]] || return 1
  done
}
wait_for "a first signed bucket and object" warm

cat >"$DIR/s3.env.tmp" <<EOF
endpoint=http://127.0.0.1:$RGW_PORT
access_key=$ACCESS_KEY
secret_key=$SECRET_KEY
region=$REGION
EOF
mv "$DIR/s3.env.tmp" "$DIR/s3.env"
log "ready after ${SECONDS}s: http://127.0.0.1:$RGW_PORT ($DIR/s3.env)"
