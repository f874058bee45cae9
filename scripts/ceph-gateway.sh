#!/usr/bin/env bash
# A throwaway single-node Ceph cluster with a RADOS Gateway (S3) on 127.0.0.1, for the object-storage tests.
#
#   scripts/ceph-gateway.sh start   start one mon, one memstore OSD and radosgw in $CEPH_GATEWAY_DIR, wait for S3 to
#                                   answer, create a user, write $CEPH_GATEWAY_DIR/env and print it
#   scripts/ceph-gateway.sh env     print the env file of the running gateway (source it: AWS_ENDPOINT_URL, keys)
#   scripts/ceph-gateway.sh restart stop the gateway daemon (radosgw, by its PID, checked to be ours) and start it
#                                   again on the same port; the monitor and the OSD, hence the data, stay up
#   scripts/ceph-gateway.sh stop    stop the daemons this script started (by the PIDs in their pid files, checked to
#                                   be ours) and remove the directory
#
# Installs nothing: it needs `apt-get install -y radosgw ceph-mon ceph-osd` (Debian 12, Ceph 16; about 72 s).
# Settings (environment): CEPH_GATEWAY_DIR (default ${TMPDIR:-/tmp}/tfjs-checkpoint-ceph-$PORT),
# CEPH_GATEWAY_PORT (S3 port, default 7480), CEPH_GATEWAY_MON_PORT (default PORT + 1). Two clusters on different
# ports and directories run side by side. Everything binds to 127.0.0.1; auth is none (never expose it).
set -euo pipefail

PORT=${CEPH_GATEWAY_PORT:-7480}
MON_PORT=${CEPH_GATEWAY_MON_PORT:-$((PORT + 1))}
DIR=${CEPH_GATEWAY_DIR:-${TMPDIR:-/tmp}/tfjs-checkpoint-ceph-$PORT}
CONF=$DIR/ceph.conf
ENV_FILE=$DIR/env
DAEMONS=(client.rgw.a osd.0 mon.a) # stop order

log() { echo "ceph-gateway: $*" >&2; }

# `ceph <args>` against our monitor, up to 5 attempts 1 s apart; prints the successful attempt's stdout.
mon_retry() {
  local attempt out
  for attempt in 1 2 3 4 5; do
    if out=$(timeout 60 ceph -c "$CONF" "$@" 2>>"$DIR/log/setup.log"); then
      printf '%s\n' "$out"
      return 0
    fi
    echo "ceph $* failed (attempt $attempt)" >>"$DIR/log/setup.log"
    sleep 1
  done
  return 1
}

# The PID of a daemon we started, or nothing: its pid file's PID, only if that process still runs with our conf.
our_pid() {
  local f=$DIR/run/$1.pid pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CONF"; then echo "$pid"; fi
}

# Stops one daemon we started: SIGTERM, then SIGKILL after 10 s.
stop_daemon() {
  local name=$1 pid i
  pid=$(our_pid "$name")
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name ($pid) did not stop in 10 s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

stop() {
  local name
  for name in "${DAEMONS[@]}"; do stop_daemon "$name"; done
  rm -rf "$DIR"
}

# Waits for S3 to answer on PORT (up to 120 s).
wait_http() {
  local i
  for ((i = 0; i < 600; i++)); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && return 0
    sleep 0.2
  done
  curl -s -o /dev/null "http://127.0.0.1:$PORT/"
}

restart() {
  [[ -n $(our_pid mon.a) && -f $ENV_FILE ]] || { log "not running in $DIR"; exit 1; }
  local t0=$SECONDS
  stop_daemon client.rgw.a
  rm -f "$DIR/run/client.rgw.a.asok"
  radosgw -c "$CONF" -n client.rgw.a </dev/null >/dev/null 2>&1
  wait_http
  log "the gateway answers again on http://127.0.0.1:$PORT after $((SECONDS - t0)) s"
}

start() {
  local missing=()
  for bin in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph curl; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
  done
  if ((${#missing[@]})); then
    log "missing ${missing[*]}: install with apt-get install -y radosgw ceph-mon ceph-osd"
    exit 3
  fi
  if [[ -n $(our_pid mon.a) ]]; then
    log "already running in $DIR"
    cat "$ENV_FILE"
    return 0
  fi
  rm -rf "$DIR"
  mkdir -p "$DIR"/{run,log,mon,osd,rgw}
  local fsid osd_uuid access secret
  fsid=$(cat /proc/sys/kernel/random/uuid)
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  access=$(head -c 10 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
  secret=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
  cat >"$CONF" <<CONF
[global]
fsid = $fsid
mon host = [v1:127.0.0.1:$MON_PORT]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
run dir = $DIR/run
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
mon data = $DIR/mon
osd data = $DIR/osd
osd objectstore = memstore
memstore device bytes = 4294967296
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd fast shutdown = false
# The OSD places itself in the CRUSH map at boot with a mon command that races its first monmap ("wrong fsid",
# seen under load): the script adds it to the map itself instead.
osd crush update on start = false
osd class update on start = false
osd max object name len = 460
osd max object namespace len = 64
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$PORT
rgw data = $DIR/rgw
rgw gc obj min wait = 2
rgw gc processor period = 5
rgw gc processor max time = 5
CONF
  # Any failure from here on leaves nothing running.
  trap 'log "start failed at: $BASH_COMMAND (logs were in $DIR/log)"; tail -n 20 "$DIR"/log/*.log >&2 2>/dev/null || true; stop' ERR
  local t0=$SECONDS
  monmaptool --create --clobber --fsid "$fsid" --addv a "[v1:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
  ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/monmap" >/dev/null
  ceph-mon -c "$CONF" -i a </dev/null >/dev/null 2>&1
  local id
  # Both are idempotent (the same uuid gets the same id; adding an item again updates it), so a monitor command that
  # fails while the new monitor settles is tried again (the bench saw one `osd crush add` fail once); each attempt's
  # output goes to log/setup.log.
  id=$(mon_retry osd create "$osd_uuid")
  mon_retry osd crush add "osd.$id" 1 root=default >/dev/null
  ceph-osd -c "$CONF" -i "$id" --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1
  ceph-osd -c "$CONF" -i "$id" </dev/null >/dev/null 2>&1
  radosgw -c "$CONF" -n client.rgw.a </dev/null >/dev/null 2>&1
  wait_http
  timeout 60 radosgw-admin -c "$CONF" -n client.rgw.a user create --uid=tfjs-checkpoint --display-name=tfjs-checkpoint \
    --access-key="$access" --secret="$secret" >/dev/null
  trap - ERR
  cat >"$ENV_FILE" <<ENV
AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
AWS_ACCESS_KEY_ID=$access
AWS_SECRET_ACCESS_KEY=$secret
AWS_REGION=us-east-1
CEPH_GATEWAY_DIR=$DIR
ENV
  log "S3 answers on http://127.0.0.1:$PORT after $((SECONDS - t0)) s ($DIR)"
  cat "$ENV_FILE"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  restart) restart ;;
  env)
    [[ -n $(our_pid mon.a) && -f $ENV_FILE ]] || { log "not running in $DIR"; exit 1; }
    cat "$ENV_FILE"
    ;;
  *)
    echo "usage: $0 start|restart|stop|env" >&2
    exit 2
    ;;
esac
