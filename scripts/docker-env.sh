#!/usr/bin/env bash
# Local container runtime for Vantage: Docker engine, algorithm registry, base image.
#
#   scripts/docker-env.sh engine      install (if missing) and start dockerd
#   scripts/docker-env.sh registry    start the algorithm registry on 127.0.0.1
#   scripts/docker-env.sh base-image  build vantage/algorithm-base:bookworm-1 (cached)
#   scripts/docker-env.sh up          engine + registry + base-image
#   scripts/docker-env.sh check       docker login + push/pull of a tiny image to the registry
#   scripts/docker-env.sh status      what runs, where, and the credentials file
#   scripts/docker-env.sh down        stop the registry and dockerd that this script started
#
# Idempotent: whatever already works is reused. Quiet apart from progress lines; every
# failure ends with one line "docker-env: error: ..." and a non-zero exit.
#
# Environment:
#   VANTAGE_STATE_DIR      state dir (default ~/.cache/vantage): logs, pid files,
#                          registry storage, registry-password
#   VANTAGE_REGISTRY_PORT  registry port on 127.0.0.1 (default 5000)
#   VANTAGE_BASE_IMAGE     base image tag (default vantage/algorithm-base:bookworm-1)
#   VANTAGE_DEBIAN_MIRROR  mirror for debootstrap (default: the one apt uses)
#   VANTAGE_BASE_PACKAGES  comma list for debootstrap --include (default below)
#
# Networking rules of these machines: dockerd runs with --bridge=none and without
# iptables/forwarding/masquerading; containers use network "none" (or "host" for test
# harnesses on loopback). This script never creates a Docker network.
set -uo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE_DIR="${VANTAGE_STATE_DIR:-$HOME/.cache/vantage}"
REGISTRY_PORT="${VANTAGE_REGISTRY_PORT:-5000}"
REGISTRY_ADDR="127.0.0.1:${REGISTRY_PORT}"
REGISTRY_USER="vantage"
REGISTRY_DIR="$STATE_DIR/registry"
REGISTRY_PASSWORD_FILE="$STATE_DIR/registry-password"
BASE_IMAGE="${VANTAGE_BASE_IMAGE:-vantage/algorithm-base:bookworm-1}"
# python3-scipy (survival statistics) costs ~500 MB: Debian's scipy depends on
# python3-pythran, which brings g++ and the boost headers. Build time stays ~2.5 min.
BASE_PACKAGES="${VANTAGE_BASE_PACKAGES:-python3,python3-numpy,python3-pandas,python3-pip,python3-scipy}"
DOCKERD_PID_FILE="$STATE_DIR/dockerd.pid"
REGISTRY_PID_FILE="$STATE_DIR/registry.pid"
DOCKERD_TIMEOUT="${VANTAGE_DOCKERD_TIMEOUT:-60}"

say() { printf 'docker-env: %s\n' "$*"; }
die() { printf 'docker-env: error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
last_line() { [ -f "$1" ] && grep -v '^\s*$' "$1" | tail -n 1 | cut -c1-300; }

ensure_state_dir() {
    mkdir -p "$STATE_DIR" || die "cannot create state dir $STATE_DIR"
}

# One mutating run at a time (vantage up, CI and a developer may call us together).
take_lock() {
    ensure_state_dir
    exec 9>"$STATE_DIR/docker-env.lock" || die "cannot open lock file $STATE_DIR/docker-env.lock"
    if ! flock -w 900 9; then
        die "another docker-env.sh run holds $STATE_DIR/docker-env.lock for more than 15 minutes"
    fi
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
read_pid() { [ -f "$1" ] && tr -dc '0-9' <"$1"; }

docker_ok() { timeout 10 docker info >/dev/null 2>&1; }

# ---------------------------------------------------------------- packages

install_packages() {
    # Install the Debian packages behind any missing command.
    local missing=() cmd pkg
    for pair in dockerd:docker.io docker:docker.io docker-registry:docker-registry \
                debootstrap:debootstrap htpasswd:apache2-utils; do
        cmd="${pair%%:*}"; pkg="${pair#*:}"
        if ! have "$cmd" && [[ " ${missing[*]-} " != *" $pkg "* ]]; then
            missing+=("$pkg")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; install them as root (apt-get install ${missing[*]})"
    have apt-get || die "missing ${missing[*]} and no apt-get to install them"
    ensure_state_dir
    local log="$STATE_DIR/apt.log"
    say "installing Debian packages: ${missing[*]} (log: $log)"
    # Keep maintainer scripts from starting services: Debian's init script would start
    # dockerd with the default bridge network, and the registry on :5000 with its own config.
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# temporary, from vantage scripts/docker-env.sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    } >"$log" 2>&1 || rc=$?
    [ "$made_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$rc" -eq 0 ] || die "apt-get install ${missing[*]} failed: $(last_line "$log") (see $log)"
}

# ---------------------------------------------------------------- engine

cmd_engine() {
    if docker_ok; then
        say "docker engine: already running"
        warn_bridges
        return 0
    fi
    take_lock
    if docker_ok; then say "docker engine: already running"; return 0; fi
    install_packages
    have dockerd || die "dockerd is not installed (Debian package docker.io)"

    local pid
    pid="$(read_pid "$DOCKERD_PID_FILE")"
    if pid_alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
        say "docker engine: dockerd (pid $pid) started earlier, waiting for it"
    else
        local other
        other="$(read_pid /var/run/docker.pid)"
        if pid_alive "$other" && [ "$(cat "/proc/$other/comm" 2>/dev/null)" = dockerd ]; then
            die "a dockerd not started by this script runs (pid $other) but docker info fails; stop it first"
        fi
        local log="$STATE_DIR/dockerd.log"
        say "docker engine: starting dockerd (log: $log)"
        printf '\n==== %s dockerd start (vantage docker-env.sh)\n' "$(date -Is)" >>"$log"
        # 9>&-: the daemon must not inherit (and so hold forever) our lock fd.
        setsid dockerd --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
            </dev/null >>"$log" 2>&1 9>&- &
        pid=$!
        echo "$pid" >"$DOCKERD_PID_FILE"
    fi
    local waited=0
    until docker_ok; do
        if ! pid_alive "$pid"; then
            rm -f "$DOCKERD_PID_FILE"
            die "dockerd exited during startup: $(last_line "$STATE_DIR/dockerd.log") (see $STATE_DIR/dockerd.log)"
        fi
        if [ "$waited" -ge "$DOCKERD_TIMEOUT" ]; then
            die "dockerd did not answer within ${DOCKERD_TIMEOUT}s: $(last_line "$STATE_DIR/dockerd.log") (see $STATE_DIR/dockerd.log)"
        fi
        sleep 1; waited=$((waited + 1))
    done
    # dockerd writes its own pid file; prefer it (setsid may have forked).
    local real
    real="$(read_pid /var/run/docker.pid)"
    pid_alive "$real" && echo "$real" >"$DOCKERD_PID_FILE"
    say "docker engine: running ($(docker version --format 'server {{.Server.Version}}' 2>/dev/null), network bridge=none)"
}

warn_bridges() {
    local bridges
    bridges="$(docker network ls --filter driver=bridge --format '{{.Name}}' 2>/dev/null | tr '\n' ' ')"
    if [ -n "${bridges// /}" ]; then
        say "warning: docker bridge networks exist ($bridges); containers here must use --network none or host"
    fi
}

# ---------------------------------------------------------------- registry

registry_code() {
    # HTTP status of GET /v2/ (401 = our registry with auth), or 000 when nothing answers.
    curl -s -o /dev/null -m 3 -w '%{http_code}' "http://$REGISTRY_ADDR/v2/" 2>/dev/null || true
}
registry_answers() {
    local code; code="$(registry_code)"
    [ "$code" = "401" ] || [ "$code" = "200" ]
}

render_registry_config() {
    local template="$SCRIPT_DIR/registry-config.yml" secret
    [ -f "$template" ] || die "registry config template $template is missing"
    mkdir -p "$REGISTRY_DIR/storage" || die "cannot create $REGISTRY_DIR/storage"
    if [ ! -s "$REGISTRY_DIR/http-secret" ]; then
        (umask 077; openssl rand -hex 24 >"$REGISTRY_DIR/http-secret") || die "cannot write $REGISTRY_DIR/http-secret"
    fi
    secret="$(cat "$REGISTRY_DIR/http-secret")"
    sed -e "s|@STORAGE_DIR@|$REGISTRY_DIR/storage|" \
        -e "s|@ADDR@|$REGISTRY_ADDR|" \
        -e "s|@HTTP_SECRET@|$secret|" \
        -e "s|@HTPASSWD@|$REGISTRY_DIR/htpasswd|" \
        "$template" >"$REGISTRY_DIR/config.yml.new" &&
        chmod 600 "$REGISTRY_DIR/config.yml.new" &&
        mv "$REGISTRY_DIR/config.yml.new" "$REGISTRY_DIR/config.yml" ||
        die "cannot write $REGISTRY_DIR/config.yml"
}

ensure_credentials() {
    if [ ! -s "$REGISTRY_PASSWORD_FILE" ]; then
        (umask 077; openssl rand -base64 33 | tr -dc 'A-Za-z0-9' | cut -c1-32 >"$REGISTRY_PASSWORD_FILE") ||
            die "cannot write $REGISTRY_PASSWORD_FILE"
        rm -f "$REGISTRY_DIR/htpasswd"
    fi
    chmod 600 "$REGISTRY_PASSWORD_FILE"
    if [ ! -s "$REGISTRY_DIR/htpasswd" ] ||
        ! htpasswd -v -i "$REGISTRY_DIR/htpasswd" "$REGISTRY_USER" <"$REGISTRY_PASSWORD_FILE" >/dev/null 2>&1; then
        (umask 077; htpasswd -B -i -c "$REGISTRY_DIR/htpasswd" "$REGISTRY_USER" <"$REGISTRY_PASSWORD_FILE" >/dev/null 2>&1) ||
            die "htpasswd could not write $REGISTRY_DIR/htpasswd"
    fi
}

registry_login() {
    docker_ok || { say "registry: docker engine not running, skipped docker login (run: $0 engine)"; return 0; }
    local out
    out="$(docker login "$REGISTRY_ADDR" -u "$REGISTRY_USER" --password-stdin <"$REGISTRY_PASSWORD_FILE" 2>&1)" ||
        die "docker login $REGISTRY_ADDR failed: $(printf '%s' "$out" | tail -n 1)"
}

registry_smoke_test() {
    # Push and pull a tiny image with auth: proves dockerd may talk plain HTTP to 127.0.0.1.
    docker_ok || return 0
    local ref="$REGISTRY_ADDR/vantage/smoke:latest" tmp out
    tmp="$(mktemp -d)"
    printf 'vantage registry smoke test\n' >"$tmp/README"
    if ! out="$(tar -C "$tmp" -c . | docker import - "$ref" 2>&1)"; then
        rm -rf "$tmp"; die "docker import of the smoke image failed: $(printf '%s' "$out" | tail -n 1)"
    fi
    rm -rf "$tmp"
    out="$(docker push -q "$ref" 2>&1)" || die "push to $REGISTRY_ADDR failed: $(printf '%s' "$out" | tail -n 1)"
    docker rmi -f "$ref" >/dev/null 2>&1
    out="$(docker pull -q "$ref" 2>&1)" || die "pull from $REGISTRY_ADDR failed: $(printf '%s' "$out" | tail -n 1)"
    docker rmi -f "$ref" >/dev/null 2>&1
    say "registry: push/pull with auth works"
}

cmd_registry() {
    take_lock
    if registry_answers; then
        say "registry: already answering on $REGISTRY_ADDR"
        if [ -s "$REGISTRY_PASSWORD_FILE" ]; then registry_login; fi
        print_registry_info
        return 0
    fi
    local code; code="$(registry_code)"
    if [ "$code" != "000" ]; then
        die "port $REGISTRY_PORT answers HTTP $code but is not a Docker registry; set VANTAGE_REGISTRY_PORT"
    fi
    if ss -Hltn "sport = :$REGISTRY_PORT" 2>/dev/null | grep -q .; then
        die "port $REGISTRY_PORT on 127.0.0.1 is taken by another program; set VANTAGE_REGISTRY_PORT"
    fi
    install_packages
    have docker-registry || die "docker-registry is not installed (Debian package docker-registry)"
    render_registry_config
    ensure_credentials

    local pid log="$STATE_DIR/registry.log"
    pid="$(read_pid "$REGISTRY_PID_FILE")"
    if pid_alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = docker-registry ]; then
        kill "$pid" 2>/dev/null; sleep 1   # ours, but not answering: start afresh
    fi
    say "registry: starting on $REGISTRY_ADDR (log: $log)"
    printf '\n==== %s registry start (vantage docker-env.sh)\n' "$(date -Is)" >>"$log"
    setsid docker-registry serve "$REGISTRY_DIR/config.yml" </dev/null >>"$log" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$REGISTRY_PID_FILE"
    local waited=0
    until registry_answers; do
        pid_alive "$pid" || { rm -f "$REGISTRY_PID_FILE"; die "docker-registry exited: $(last_line "$log") (see $log)"; }
        [ "$waited" -ge 60 ] && die "registry did not answer on $REGISTRY_ADDR within 30s (see $log)"
        sleep 0.5; waited=$((waited + 1))
    done
    registry_login
    registry_smoke_test
    print_registry_info
}

print_registry_info() {
    say "registry: http://$REGISTRY_ADDR  user $REGISTRY_USER, password in $REGISTRY_PASSWORD_FILE"
}

# ---------------------------------------------------------------- base image

debian_mirror() {
    if [ -n "${VANTAGE_DEBIAN_MIRROR:-}" ]; then echo "$VANTAGE_DEBIAN_MIRROR"; return; fi
    local m=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        # deb822: the first URI of a stanza whose Suites has plain "bookworm".
        m="$(awk 'BEGIN{RS=""; FS="\n"}
            { uri=""; ok=0
              for (i=1;i<=NF;i++) {
                if ($i ~ /^URIs:/)   { split($i, a, /[ \t]+/); uri=a[2] }
                if ($i ~ /^Suites:/) { n=split($i, s, /[ \t]+/); for (j=2;j<=n;j++) if (s[j]=="bookworm") ok=1 }
              }
              if (ok && uri != "") { print uri; exit } }' /etc/apt/sources.list.d/debian.sources)"
    fi
    if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
        m="$(awk '$1=="deb" { i=2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                              if ($(i+1)=="bookworm") { print $i; exit } }' /etc/apt/sources.list)"
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

cleanup_rootfs() {
    local root="$1"
    [ -n "$root" ] && [ -d "$root" ] || return 0
    # Unmount whatever debootstrap left mounted inside (deepest first), then delete.
    awk -v r="$root" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r mp; do umount -l "$mp" 2>/dev/null; done
    rm -rf --one-file-system "$root"
}

cmd_base_image() {
    docker_ok || die "docker engine is not running (run: $0 engine)"
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "base image: $BASE_IMAGE exists"
        return 0
    fi
    take_lock
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then say "base image: $BASE_IMAGE exists"; return 0; fi
    install_packages
    have debootstrap || die "debootstrap is not installed"
    local mirror root log="$STATE_DIR/base-image.log" start=$SECONDS
    mirror="$(debian_mirror)"
    root="$STATE_DIR/rootfs-build"
    cleanup_rootfs "$root"
    say "base image: debootstrap bookworm ($BASE_PACKAGES) from $mirror (log: $log)"
    trap 'cleanup_rootfs "'"$root"'"' EXIT
    if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$root" "$mirror" >"$log" 2>&1; then
        die "debootstrap failed: $(last_line "$log") (see $log)"
    fi
    # Slim down: package caches and lists are not needed at run time.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log \
        "$root"/debootstrap "$root"/usr/share/man/* "$root"/usr/share/info/*
    find "$root"/usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete 2>/dev/null
    say "base image: importing as $BASE_IMAGE ($(du -sh --one-file-system "$root" | cut -f1) rootfs)"
    if ! tar -C "$root" --numeric-owner -c . 2>>"$log" | docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' \
            --change 'ENV PYTHONUNBUFFERED=1' \
            --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
            --change 'LABEL org.opencontainers.image.title=vantage-algorithm-base org.opencontainers.image.base.name=debian:bookworm' \
            --change 'CMD ["python3"]' \
            -m "debootstrap --variant=minbase --include=$BASE_PACKAGES bookworm" \
            - "$BASE_IMAGE" >>"$log" 2>&1; then
        die "docker import of $BASE_IMAGE failed: $(last_line "$log") (see $log)"
    fi
    cleanup_rootfs "$root"
    trap - EXIT
    local out mods="numpy, pandas"
    [[ ",$BASE_PACKAGES," == *,python3-scipy,* ]] && mods="$mods, scipy"
    out="$(docker run --rm --network none "$BASE_IMAGE" python3 -c "import $mods; print('ok')" 2>&1)"
    [ "$out" = "ok" ] || die "$BASE_IMAGE was built but python3 -c 'import $mods' fails: $(printf '%s' "$out" | tail -n 1)"
    say "base image: $BASE_IMAGE built in $((SECONDS - start))s"
}

# ---------------------------------------------------------------- status / down

cmd_status() {
    local pid rc=0
    if docker_ok; then
        pid="$(read_pid "$DOCKERD_PID_FILE")"
        if pid_alive "$pid"; then
            say "docker engine: running, started by this script (pid $pid, log $STATE_DIR/dockerd.log)"
        else
            say "docker engine: running (not started by this script)"
        fi
        warn_bridges
        if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
            say "base image: $BASE_IMAGE present ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
        else
            say "base image: $BASE_IMAGE missing (run: $0 base-image)"; rc=1
        fi
    else
        say "docker engine: not running (run: $0 engine)"; rc=1
    fi
    if registry_answers; then
        pid="$(read_pid "$REGISTRY_PID_FILE")"
        if pid_alive "$pid"; then
            say "registry: running on $REGISTRY_ADDR (pid $pid, log $STATE_DIR/registry.log)"
        else
            say "registry: answering on $REGISTRY_ADDR (not started by this script)"
        fi
        print_registry_info
    else
        say "registry: not answering on $REGISTRY_ADDR (run: $0 registry)"; rc=1
    fi
    return "$rc"
}

stop_pid_file() {
    # stop_pid_file NAME FILE SECONDS: SIGTERM, wait, then SIGKILL. NAME is also the
    # process name that the pid must have (else the pid file is stale and only removed).
    local name="$1" file="$2" wait_s="$3" pid i
    pid="$(read_pid "$file")"
    if ! pid_alive "$pid" || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ]; then
        rm -f "$file"; return 0
    fi
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < wait_s * 2; i++)); do
        pid_alive "$pid" || { rm -f "$file"; return 0; }
        sleep 0.5
    done
    say "$name did not stop within ${wait_s}s, killing it"
    kill -KILL "$pid" 2>/dev/null
    rm -f "$file"
}

cmd_down() {
    take_lock
    stop_pid_file docker-registry "$REGISTRY_PID_FILE" 10
    stop_pid_file dockerd "$DOCKERD_PID_FILE" 40
    say "down"
}

usage() {
    sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
}

main() {
    local cmd="${1:-}"
    case "$cmd" in
        engine) cmd_engine ;;
        registry) cmd_registry ;;
        base-image) cmd_base_image ;;
        up) cmd_engine && cmd_registry && cmd_base_image ;;
        check) docker_ok || die "docker engine is not running (run: $0 engine)"
               registry_answers || die "no registry answers on $REGISTRY_ADDR (run: $0 registry)"
               [ -s "$REGISTRY_PASSWORD_FILE" ] || die "no $REGISTRY_PASSWORD_FILE: this registry was not started by docker-env.sh"
               registry_login && registry_smoke_test && print_registry_info ;;
        status) cmd_status ;;
        down) cmd_down ;;
        -h|--help|help) usage ;;
        "") usage; exit 2 ;;
        *) printf 'docker-env: error: unknown command %s (engine, registry, base-image, up, check, status, down)\n' "$cmd" >&2; exit 2 ;;
    esac
}

main "$@"
