# shellcheck shell=bash
# ensure_relay_container NAME [RELEASE]: a running systemd container for a
# relay on the test network (of Debian RELEASE, 12 or 13; default the test
# bed's), created on first use as Molecule creates its scenarios'
# (scripts/lib/testbed.py reads that one definition).
ensure_relay_container() {
    local name="$1" release="${2:-}" state=absent lib
    lib="$(dirname "${BASH_SOURCE[0]}")"
    if docker container inspect "$name" >/dev/null 2>&1; then
        state="$(docker container inspect --format '{{.State.Status}}' "$name")"
    fi
    case "$state" in
        running) ;;
        absent)
            echo "creating container $name" >&2
            local args
            mapfile -t args < <("$lib/../../.venv/bin/python" "$lib/testbed.py" docker-run "$name" ${release:+"$release"})
            [[ ${#args[@]} -gt 0 ]] || { echo "no test-bed definition for $name" >&2; return 1; }
            docker run "${args[@]}" >/dev/null ;;
        *) docker start "$name" >/dev/null ;;
    esac
    # systemd needs a moment before services can be managed.
    for _ in $(seq 30); do
        docker exec "$name" systemctl is-system-running 2>/dev/null | grep -qE "running|degraded" && return
        sleep 1
    done
}
