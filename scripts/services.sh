#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ are reachable where DATABASE_URL and AMQP_URL point.
#
# Local services (URL host 127.0.0.1 / localhost / ::1) are installed from Debian's packages
# and started when they are not listening; remote ones are only checked.
# Idempotent, and quick (well under a second) when everything is already up.
#
# Exit codes: 0 all reachable, 2 a service is missing and could not be installed or started.
set -euo pipefail

DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/waitroom}"
AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"

say() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 2; }

# ---------------------------------------------------------------- helpers

# url_host_port URL DEFAULT_PORT -> prints "host port"
# Handles scheme://user:pass@host:port/path?query and [ipv6]:port. Empty host -> 127.0.0.1.
url_host_port() {
    local rest="${1#*://}" default_port="$2" hostport host port
    hostport="${rest%%[/?]*}"      # drop /path and ?query
    hostport="${hostport##*@}"     # drop user:password@
    if [[ "$hostport" == \[* ]]; then          # [::1]:5432
        host="${hostport#\[}"; host="${host%%\]*}"
        port="${hostport##*\]}"; port="${port#:}"
    elif [[ "$hostport" == *:* ]]; then
        host="${hostport%%:*}"; port="${hostport##*:}"
    else
        host="$hostport"; port=""
    fi
    echo "${host:-127.0.0.1} ${port:-$default_port}"
}

is_local() {
    case "$1" in 127.0.0.1|localhost|::1) return 0 ;; *) return 1 ;; esac
}

# tcp_up HOST PORT: can we open a TCP connection within 1 s? (bash's /dev/tcp, no extra tools)
tcp_up() {
    timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# wait_tcp HOST PORT SECONDS
wait_tcp() {
    local deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        tcp_up "$1" "$2" && return 0
        sleep 0.5
    done
    tcp_up "$1" "$2"
}

# as_root CMD...: run directly when root, through sudo otherwise.
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*' (not root and no sudo); install/start it by hand"
    fi
}

# Chatty installers (apt-get, pg_createcluster) write to a log file, shown only on failure.
LOG="${TMPDIR:-/tmp}/waitroom-services.$EUID.log"   # per user: a root-owned one would not be writable
LOG_STARTED=0
# logged WHAT CMD...: run CMD as root, output to $LOG; on failure show its tail and exit 2.
logged() {
    local what="$1"; shift
    if [[ $LOG_STARTED -eq 0 ]]; then : >"$LOG"; LOG_STARTED=1; fi
    if ! as_root "$@" >>"$LOG" 2>&1; then
        tail -n 20 "$LOG" >&2
        die "$what failed (full log: $LOG)"
    fi
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
    if [[ $APT_UPDATED -eq 0 ]]; then
        say "apt-get update"
        logged "apt-get update" env DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    say "installing $* (apt-get, log: $LOG)"
    logged "apt-get install $*" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

# ---------------------------------------------------------------- PostgreSQL

# Prepend trust lines for local TCP to pg_hba.conf (first matching line wins).
# Only done for a Postgres/cluster this script installed/created itself: Debian's default
# is scram-sha-256 for TCP, and the default DATABASE_URL carries no password.
pg_trust_local_tcp() {
    local hba="/etc/postgresql/$1/main/pg_hba.conf"
    if as_root grep -q '^# waitroom: trust local TCP' "$hba"; then return 0; fi
    say "postgres: configuring trust auth for 127.0.0.1/::1 in $hba (fresh install defaults to scram; the default DATABASE_URL has no password)"
    as_root sed -i '1i # waitroom: trust local TCP (added by scripts/services.sh)\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
}

ensure_postgres() {
    local host port ver changed=0
    read -r host port < <(url_host_port "$DATABASE_URL" 5432)

    if tcp_up "$host" "$port"; then
        say "postgres: already running at $host:$port"
        return 0
    fi
    is_local "$host" || die "postgres: not reachable at $host:$port (remote host: start it there, or set DATABASE_URL)"

    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        apt_install postgresql
        changed=1
    fi
    # Newest configured version; else (no cluster at all) the newest installed server.
    # Version directories are plain numbers ("15", "16"), so ls | sort -V is safe here.
    # shellcheck disable=SC2012
    ver="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1 || true)"
    # shellcheck disable=SC2012
    [[ -n "$ver" ]] || ver="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1 || true)"
    [[ -n "$ver" ]] || die "postgres: no server version under /etc/postgresql or /usr/lib/postgresql"
    if [[ ! -d "/etc/postgresql/$ver/main" ]]; then
        say "postgres: creating cluster $ver/main"
        logged "postgres: pg_createcluster $ver main" pg_createcluster "$ver" main
        changed=1
    fi
    if [[ $changed -eq 1 ]]; then pg_trust_local_tcp "$ver"; fi

    # (grep without -q: an early exit could SIGPIPE pg_lsclusters and fail the pipeline)
    if pg_lsclusters -h "$ver" main 2>/dev/null | grep online >/dev/null; then
        # Running (e.g. started by the package) but not where we looked: reload for new pg_hba.
        as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main reload >&2 || true
    else
        say "postgres: starting cluster $ver/main"
        as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2 \
            || die "postgres: pg_ctlcluster $ver main start failed (see /var/log/postgresql/postgresql-$ver-main.log)"
    fi

    wait_tcp "$host" "$port" 30 \
        || die "postgres: cluster $ver/main started but nothing listens on $host:$port after 30 s (check its port in /etc/postgresql/$ver/main/postgresql.conf)"
    # The port opens slightly before the server accepts connections (recovery, startup).
    if command -v pg_isready >/dev/null 2>&1; then
        local deadline=$((SECONDS + 30))
        until pg_isready -q -h "$host" -p "$port"; do
            ((SECONDS < deadline)) || die "postgres: $host:$port listens but is not ready after 30 s"
            sleep 0.5
        done
    fi
    say "postgres: running at $host:$port"
}

ensure_psql() {
    command -v psql >/dev/null 2>&1 && return 0
    # Not fatal on failure: only scripts and tests use psql, the service itself does not.
    ( apt_install postgresql-client ) || say "postgres: warning: psql client missing and could not be installed"
}

# The strict end-to-end lag (waitroom bench, its tests, bench/run.sh) reads commit
# timestamps: pg_xact_commit_timestamp needs track_commit_timestamp = on, which takes a
# restart. Turned on here for a local Postgres only; WAITROOM_NO_PG_RESTART=1 only warns.
ensure_commit_timestamps() {
    local host port admin ver
    read -r host port < <(url_host_port "$DATABASE_URL" 5432)
    is_local "$host" || return 0
    command -v psql >/dev/null 2>&1 || return 0
    admin="postgres://postgres@$host:$port/postgres"
    [[ "$(psql "$admin" -Atc 'SHOW track_commit_timestamp' 2>/dev/null)" == "off" ]] || return 0
    if [[ -n "${WAITROOM_NO_PG_RESTART:-}" ]]; then
        say "postgres: warning: track_commit_timestamp is off; lag is then measured by the lag table's clock"
        return 0
    fi
    # The cluster listening on this port (pg_lsclusters: Ver Cluster Port Status ...).
    ver="$(pg_lsclusters -h 2>/dev/null | awk -v p="$port" '$3 == p { print $1 " " $2; exit }')"
    [[ -n "$ver" ]] || { say "postgres: warning: track_commit_timestamp is off and no local cluster on port $port to restart"; return 0; }
    say "postgres: turning track_commit_timestamp on and restarting cluster ${ver/ //} (commit-time lag; WAITROOM_NO_PG_RESTART=1 skips this)"
    psql "$admin" -qc "ALTER SYSTEM SET track_commit_timestamp = on" >&2 \
        || die "postgres: ALTER SYSTEM SET track_commit_timestamp failed"
    # shellcheck disable=SC2086
    as_root pg_ctlcluster --skip-systemctl-redirect $ver restart >&2 \
        || die "postgres: restarting cluster $ver failed"
    local deadline=$((SECONDS + 30))
    until psql "$admin" -Atc 'SELECT 1' >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "postgres: not accepting connections 30 s after the restart"
        sleep 0.5
    done
}

# ---------------------------------------------------------------- RabbitMQ

# Is a RabbitMQ node (an Erlang VM running rabbit) alive on this machine? False without pgrep.
rabbit_node_running() {
    pgrep -f 'beam.*rabbit' >/dev/null 2>&1
}

ensure_rabbitmq() {
    local host port
    read -r host port < <(url_host_port "$AMQP_URL" 5672)

    if tcp_up "$host" "$port"; then
        say "rabbitmq: already running at $host:$port"
        return 0
    fi
    is_local "$host" || die "rabbitmq: not reachable at $host:$port (remote host: start it there, or set AMQP_URL)"

    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        apt_install rabbitmq-server
    fi
    # Don't start a second node if one is already booting (its port just isn't open yet).
    if rabbit_node_running; then
        say "rabbitmq: node process exists, waiting for it"
    else
        say "rabbitmq: starting (rabbitmq-server -detached)"
        as_root rabbitmq-server -detached >&2 || die "rabbitmq: rabbitmq-server -detached failed"
    fi

    # Wait for the AMQP port; give up early when the node process died (bad config, name clash).
    local deadline=$((SECONDS + 60)) gone_since=""
    until tcp_up "$host" "$port"; do
        ((SECONDS < deadline)) || die "rabbitmq: nothing listens on $host:$port after 60 s (see /var/log/rabbitmq/)"
        if command -v pgrep >/dev/null 2>&1 && ! rabbit_node_running; then
            gone_since="${gone_since:-$SECONDS}"
            ((SECONDS - gone_since < 5)) \
                || die "rabbitmq: the node exited during startup (see /var/log/rabbitmq/ and /var/lib/rabbitmq/erl_crash.dump)"
        else
            gone_since=""
        fi
        sleep 0.5
    done
    if command -v rabbitmqctl >/dev/null 2>&1; then
        as_root timeout 60 rabbitmqctl -q await_startup >&2 || say "rabbitmq: warning: await_startup did not confirm"
    fi
    say "rabbitmq: running at $host:$port"
}

# ---------------------------------------------------------------- main

ensure_postgres
ensure_psql
ensure_commit_timestamps
ensure_rabbitmq
