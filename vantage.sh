#!/usr/bin/env bash
# Vantage launcher: tests and the local demo, one command each.
# (Named vantage.sh because ./vantage is the Django project package.)
#
#   ./vantage.sh test [pytest args]    the test suite on SQLite, then on PostgreSQL
#   ./vantage.sh up [--no-study|--rerun]  the demo network: Docker engine, registry, algorithm
#                                      images, server, three hospital nodes with their data,
#                                      then a federated study of GBSG2 printed next to the
#                                      pooled reference (completed tasks are reused unless
#                                      --rerun); ends with URLs and credentials
#   ./vantage.sh stop [--keep-docker]  stop the server and demo node agents; also the
#                                      registry and dockerd unless --keep-docker
#   ./vantage.sh status                what runs
#   ./vantage.sh manage ARGS...        manage.py in the environment of `up`
#   ./vantage.sh help
#
# Environment:
#   VANTAGE_STATE_DIR   logs, pid files, registry, server data (default ~/.cache/vantage)
#   VANTAGE_PORT        server port on 127.0.0.1 (default 8000)
#   VANTAGE_TEST_DB     sqlite | postgres: test on that database only (default: both)
#   VANTAGE_TEST_DATABASE_URL  PostgreSQL for the tests (default
#                       postgres://postgres@127.0.0.1:5432/vantage_run<pid>: Django creates
#                       and drops test_vantage_run<pid> itself; one name per run, because
#                       several developers' runs share this PostgreSQL)
#   DATABASE_URL        for up/manage: unset means SQLite in $VANTAGE_STATE_DIR/server
#   PYTHON              interpreter for .venv (default python3; 3.11 or newer)
set -uo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE_DIR="${VANTAGE_STATE_DIR:-$HOME/.cache/vantage}"
PORT="${VANTAGE_PORT:-8000}"
VENV="$REPO_DIR/.venv"
VPY="$VENV/bin/python"
SERVER_DATA_DIR="$STATE_DIR/server"
SERVER_PID_FILE="$STATE_DIR/server.pid"
SERVER_LOG="$STATE_DIR/server.log"
TEST_DATABASE_URL="${VANTAGE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/vantage_run$$}"
DOCKER_ENV="$REPO_DIR/scripts/docker-env.sh"
# Pid files in $STATE_DIR that belong to docker-env.sh; every other *.pid is the demo's
# (server.pid, and node agents' node-<slug>.pid).
DOCKER_PID_FILES=" dockerd.pid registry.pid "

say() { printf 'vantage: %s\n' "$*"; }
die() { printf 'vantage: error: %s\n' "$*" >&2; exit 1; }
last_line() { [ -f "$1" ] && grep -v '^\s*$' "$1" | tail -n 1 | cut -c1-300; }
pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
read_pid() { [ -f "$1" ] && head -n 1 "$1" | tr -dc '0-9'; }
cmdline_of() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null; }

# ---------------------------------------------------------------- virtualenv

requirements_hash() {
    { cat "$REPO_DIR"/requirements*.txt 2>/dev/null; "$VPY" -c 'import sys; print(sys.version)' 2>/dev/null; } |
        sha256sum | cut -d' ' -f1
}

venv_current() {
    [ -x "$VPY" ] && "$VPY" -c '' 2>/dev/null &&
        [ "$(cat "$VENV/.vantage-requirements.sha256" 2>/dev/null)" = "$(requirements_hash)" ]
}

ensure_venv() {
    [ -f "$REPO_DIR/requirements-dev.txt" ] || die "no requirements-dev.txt in $REPO_DIR"
    venv_current && return 0
    mkdir -p "$STATE_DIR" || die "cannot create state dir $STATE_DIR"
    # Per tree (several clones may share one state dir): the log sits in the virtualenv.
    local log="$VENV/vantage-pip.log"
    # One installer at a time (several shells share this tree). The lock fd exists only in
    # this subshell, so no long-running child inherits it.
    (
        flock -w 600 8 || die "another ./vantage.sh has held the virtualenv lock for 10 minutes"
        venv_current && exit 0
        if ! { [ -x "$VPY" ] && "$VPY" -c '' 2>/dev/null; }; then
            py="${PYTHON:-python3}"
            command -v "$py" >/dev/null 2>&1 || die "$py not found; set PYTHON to a Python 3.11+ interpreter"
            "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
                die "$py is Python $("$py" -c 'import sys; print(sys.version.split()[0])'); Vantage needs 3.11 or newer (set PYTHON)"
            say "creating virtualenv .venv"
            rm -rf "$VENV"
            local out
            out="$("$py" -m venv "$VENV" 2>&1)" || die "$py -m venv .venv failed: $(printf '%s\n' "$out" | tail -n 1)"
        fi
        say "installing requirements-dev.txt into .venv (log: $log)"
        # From the repository root: requirements.txt names the client as ./client.
        if ! (cd "$REPO_DIR" && "$VPY" -m pip install --disable-pip-version-check -r requirements-dev.txt) >>"$log" 2>&1; then
            rm -f "$VENV/.vantage-requirements.sha256"
            die "pip install -r requirements-dev.txt failed: $(last_line "$log") (see $log)"
        fi
        requirements_hash >"$VENV/.vantage-requirements.sha256"
    ) 8<"$REPO_DIR/requirements-dev.txt" || exit 1
}

require_django_project() {
    [ -f "$REPO_DIR/manage.py" ] && [ -f "$REPO_DIR/vantage/settings.py" ] ||
        die "no Django project in $REPO_DIR (manage.py, vantage/settings.py)"
}

# ---------------------------------------------------------------- test

postgres_problem() {
    # Prints why PostgreSQL behind URL $1 cannot be reached (nothing when it can). Connects
    # to the maintenance database "postgres", as Django does to create the test database,
    # and drops test_vantage_run<pid> databases left by runs whose process is gone.
    DB_URL="$1" "$VPY" - <<'EOF' 2>&1
import os
import re
from urllib.parse import urlsplit, urlunsplit
try:
    import psycopg
    parts = urlsplit(os.environ["DB_URL"])
    with psycopg.connect(urlunsplit(("postgresql", parts.netloc, "/postgres", "", "")),
                         connect_timeout=5, autocommit=True) as conn:
        names = [row[0] for row in conn.execute(
            "SELECT datname FROM pg_database WHERE datname ~ '^test_vantage_run[0-9]+$'")]
        for name in names:
            if not os.path.exists(f"/proc/{re.sub('[^0-9]', '', name)}"):
                try:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                except psycopg.Error:
                    pass  # still in use: leave it
except Exception as exc:
    text = str(exc).strip()
    print(text.splitlines()[0].strip() if text else type(exc).__name__)
EOF
}

run_pytest() {
    # run_pytest LABEL DATABASE_URL|"" [pytest args]
    local label="$1" url="$2" start=$SECONDS rc=0
    shift 2
    say "pytest on $label"
    if [ -n "$url" ]; then
        (cd "$REPO_DIR" && DATABASE_URL="$url" "$VPY" -m pytest "$@") || rc=$?
    else
        (cd "$REPO_DIR" && env -u DATABASE_URL "$VPY" -m pytest "$@") || rc=$?
    fi
    local took=$((SECONDS - start))
    case "$rc" in
        0) say "pytest on $label: passed (${took}s)" ;;
        5) if [ "${VANTAGE_TEST_SECOND_PASS:-0}" = 1 ]; then
               say "pytest on $label: every selected test is database_independent and ran in the first pass"; rc=0
           else
               say "pytest on $label: FAILED: no tests were collected (${took}s)"; rc=1
           fi ;;
        *) say "pytest on $label: FAILED (pytest exit code $rc, ${took}s)" ;;
    esac
    return "$rc"
}

cmd_test() {
    require_django_project
    local dbs
    case "${VANTAGE_TEST_DB:-}" in
        "") dbs="sqlite postgres" ;;
        sqlite|postgres) dbs="$VANTAGE_TEST_DB" ;;
        *) die "VANTAGE_TEST_DB must be sqlite or postgres (or unset for both), not '$VANTAGE_TEST_DB'" ;;
    esac
    ensure_venv
    if [[ "$dbs" == *postgres* ]]; then
        local why
        why="$(postgres_problem "$TEST_DATABASE_URL")"
        [ -z "$why" ] ||
            die "PostgreSQL for the tests is not reachable at ${TEST_DATABASE_URL%/*} ($why); start it, or run VANTAGE_TEST_DB=sqlite ./vantage.sh test"
    fi
    local db failed="" summary="" second=0
    for db in $dbs; do
        # The second pass leaves out the tests marked database_independent (tests/conftest.py).
        if [ "$db" = sqlite ]; then
            VANTAGE_TEST_SECOND_PASS=$second run_pytest SQLite "" "$@" || failed="$failed SQLite"
        else
            VANTAGE_TEST_SECOND_PASS=$second run_pytest PostgreSQL "$TEST_DATABASE_URL" "$@" || failed="$failed PostgreSQL"
        fi
        second=1
    done
    [ -z "$failed" ] || die "tests failed on:$failed"
    say "tests passed on: $dbs"
}

# ---------------------------------------------------------------- up / stop

server_env() {
    # The environment of the demo server and of `manage`.
    export VANTAGE_DATA_DIR="${VANTAGE_DATA_DIR:-$SERVER_DATA_DIR}"
    export VANTAGE_STATE_DIR="$STATE_DIR"
    mkdir -p "$VANTAGE_DATA_DIR" || die "cannot create $VANTAGE_DATA_DIR"
    # The audit chain's key, made once per demo and kept beside (not in) its database.
    local audit_key="$STATE_DIR/audit.key"
    if [ -z "${VANTAGE_AUDIT_KEY:-}${VANTAGE_AUDIT_KEY_FILE:-}" ]; then
        [ -s "$audit_key" ] || (umask 077 && head -c 48 /dev/urandom | base64 -w0 >"$audit_key") ||
            die "cannot write $audit_key"
        export VANTAGE_AUDIT_KEY_FILE="$audit_key"
    fi
    # The registry the server reads a reviewer's image signature from when they approve a
    # catalogue entry (docs/node.md, "The catalogue"): the demo's, with its credentials.
    if [ -z "${VANTAGE_REGISTRIES_FILE:-}" ]; then
        local registries="$STATE_DIR/server-registries.toml"
        (umask 077 && printf '[registries."127.0.0.1:%s"]\nusername = "vantage"\npassword_file = "%s"\n' \
            "${VANTAGE_REGISTRY_PORT:-5000}" "$STATE_DIR/registry-password" >"$registries") ||
            die "cannot write $registries"
        export VANTAGE_REGISTRIES_FILE="$registries"
    fi
}

health_ok() {
    curl -fs -o /dev/null -m 3 "http://127.0.0.1:$PORT/api/health/" 2>/dev/null
}

port_taken() {
    ss -Hltn "sport = :$PORT" 2>/dev/null | grep -q .
}

our_server_pid() {
    # The pid of the server this launcher started, if it still runs.
    local pid
    pid="$(read_pid "$SERVER_PID_FILE")"
    pid_alive "$pid" && [[ "$(cmdline_of "$pid")" == *vantage.server* ]] &&
        echo "$pid"
}

start_server() {
    local pid
    pid="$(our_server_pid)"
    if [ -n "$pid" ]; then
        if [[ "$(cmdline_of "$pid")" == *" -p $PORT "* ]] && health_ok; then
            say "server: already running (pid $pid)"
            return 0
        fi
        if [[ "$(cmdline_of "$pid")" != *" -p $PORT "* ]] && port_taken; then
            die "port $PORT on 127.0.0.1 is used by another program; stop it or set VANTAGE_PORT"
        fi
        say "server: restarting the server started earlier (pid $pid)"
        stop_pid "$SERVER_PID_FILE" server
    fi
    if port_taken; then
        die "port $PORT on 127.0.0.1 is used by another program; stop it or set VANTAGE_PORT"
    fi
    local server=("$VPY" -m vantage.server)
    say "server: starting python -m vantage.server on 127.0.0.1:$PORT (log: $SERVER_LOG)"
    printf '\n==== %s server start (vantage.sh up)\n' "$(date -Is)" >>"$SERVER_LOG"
    (cd "$REPO_DIR" && exec setsid "${server[@]}" -b 127.0.0.1 -p "$PORT" vantage.asgi:application \
        </dev/null >>"$SERVER_LOG" 2>&1) &
    pid=$!
    echo "$pid" >"$SERVER_PID_FILE"
    local waited=0
    until health_ok; do
        if ! pid_alive "$pid"; then
            rm -f "$SERVER_PID_FILE"
            die "the server exited during startup: $(last_line "$SERVER_LOG") (see $SERVER_LOG)"
        fi
        [ "$waited" -ge 120 ] && die "the server did not answer /api/health/ within 60s (see $SERVER_LOG)"
        sleep 0.5; waited=$((waited + 1))
    done
    say "server: running (pid $pid)"
}

cmd_up() {
    require_django_project
    local start=$SECONDS
    mkdir -p "$STATE_DIR" || die "cannot create state dir $STATE_DIR"
    ensure_venv
    local err="$STATE_DIR/docker-env.err"
    if ! VANTAGE_STATE_DIR="$STATE_DIR" "$DOCKER_ENV" up 2>"$err"; then
        die "./vantage.sh up needs a Docker engine, registry and base image, and they could not be set up: $(last_line "$err" | sed 's/^docker-env: error: //')"
    fi
    rm -f "$err"
    server_env
    local log="$STATE_DIR/migrate.log"
    (cd "$REPO_DIR" && "$VPY" manage.py migrate --noinput) >"$log" 2>&1 ||
        die "manage.py migrate failed: $(last_line "$log") (see $log)"
    local seed_file="$STATE_DIR/demo-seed.json" seed_err="$STATE_DIR/demo-seed.err"
    # Owner-only: the summary carries the demo passwords.
    (umask 077 && cd "$REPO_DIR" && "$VPY" manage.py demo_seed --json >"$seed_file") 2>"$seed_err" ||
        die "manage.py demo_seed failed: $(last_line "$seed_err")"
    start_server
    # The demo network and its study: algorithm images, three node agents, the analyses.
    (cd "$REPO_DIR" && "$VPY" -m demo up --seed "$seed_file" --server "http://127.0.0.1:$PORT" \
        --state-dir "$STATE_DIR" --registry-port "${VANTAGE_REGISTRY_PORT:-5000}" \
        --elapsed "$((SECONDS - start))" "$@") ||
        die "the demo did not complete (what runs keeps running: ./vantage.sh status, ./vantage.sh stop)"
}

stop_pid() {
    # stop_pid PIDFILE NAME: SIGTERM to the process (and its process group when it leads
    # one), wait up to 20s, then SIGKILL.
    local file="$1" name="$2" pid i
    pid="$(read_pid "$file")"
    if ! pid_alive "$pid"; then rm -f "$file"; return 0; fi
    local cmd; cmd="$(cmdline_of "$pid")"
    if [[ "$cmd" != *"$REPO_DIR"* && "$cmd" != *manage.py* && "$cmd" != *vantage* ]]; then
        say "$file names pid $pid, which is not a Vantage process ($cmd); removed the stale pid file"
        rm -f "$file"; return 0
    fi
    say "stopping $name (pid $pid)"
    if [ "$(ps -o pgid= -p "$pid" | tr -d ' ')" = "$pid" ]; then
        kill -TERM -- "-$pid" 2>/dev/null
    else
        kill -TERM "$pid" 2>/dev/null
    fi
    for ((i = 0; i < 40; i++)); do
        pid_alive "$pid" || { rm -f "$file"; return 0; }
        sleep 0.5
    done
    say "$name did not stop within 20s; killing it"
    kill -KILL "$pid" 2>/dev/null
    rm -f "$file"
}

cmd_stop() {
    local keep_docker=0 arg
    for arg in "$@"; do
        case "$arg" in
            --keep-docker) keep_docker=1 ;;
            *) die "unknown option '$arg' for stop (only --keep-docker)" ;;
        esac
    done
    local file name
    # Node agents first (they talk to the server), the server last.
    for file in "$STATE_DIR"/*.pid; do
        [ -e "$file" ] || continue
        name="$(basename "$file" .pid)"
        [[ "$DOCKER_PID_FILES" == *" $name.pid "* || "$name" == server ]] && continue
        stop_pid "$file" "$name"
    done
    stop_pid "$SERVER_PID_FILE" server
    if [ "$keep_docker" -eq 0 ]; then
        VANTAGE_STATE_DIR="$STATE_DIR" "$DOCKER_ENV" down || die "scripts/docker-env.sh down failed"
    fi
    say "stopped"
}

cmd_status() {
    local pid file name
    pid="$(our_server_pid)"
    if [ -n "$pid" ] && health_ok; then
        say "server: running on http://127.0.0.1:$PORT/ (pid $pid, log $SERVER_LOG)"
    elif [ -n "$pid" ]; then
        say "server: runs (pid $pid) but http://127.0.0.1:$PORT/api/health/ does not answer"
    else
        say "server: not running"
    fi
    for file in "$STATE_DIR"/*.pid; do
        [ -e "$file" ] || continue
        name="$(basename "$file" .pid)"
        [[ "$DOCKER_PID_FILES" == *" $name.pid "* || "$name" == server ]] && continue
        pid="$(read_pid "$file")"
        if pid_alive "$pid"; then say "$name: running (pid $pid)"; else say "$name: not running (stale $file)"; fi
    done
    VANTAGE_STATE_DIR="$STATE_DIR" "$DOCKER_ENV" status
}

cmd_manage() {
    require_django_project
    ensure_venv
    server_env
    cd "$REPO_DIR" && exec "$VPY" manage.py "$@"
}

usage() {
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
}

main() {
    local cmd="${1:-help}"
    [ $# -gt 0 ] && shift
    case "$cmd" in
        test) cmd_test "$@" ;;
        up) cmd_up "$@" ;;
        stop|down) cmd_stop "$@" ;;
        status) cmd_status ;;
        manage) cmd_manage "$@" ;;
        help|-h|--help) usage ;;
        *) printf "vantage: error: unknown command '%s' (try ./vantage.sh help)\n" "$cmd" >&2; exit 2 ;;
    esac
}

main "$@"
