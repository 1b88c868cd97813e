# shellcheck shell=bash
# ensure_relay_container NAME: a running systemd container for a relay on the
# test network, created from the base image on first use.
ensure_relay_container() {
    local name="$1" state=absent
    local image="${CHATMAIL_BASE_IMAGE:-chatmail-relay/debian12-systemd:latest}"
    local network="${CHATMAIL_NETWORK:-chatmail-relay}"
    if docker container inspect "$name" >/dev/null 2>&1; then
        state="$(docker container inspect --format '{{.State.Status}}' "$name")"
    fi
    case "$state" in
        running) ;;
        absent)
            echo "creating container $name" >&2
            docker run -d --name "$name" --hostname "$name" --network "$network" \
                --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
                --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
                --cap-add SYS_ADMIN --cap-add NET_ADMIN \
                --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
                "$image" /sbin/init >/dev/null ;;
        *) docker start "$name" >/dev/null ;;
    esac
    # systemd needs a moment before services can be managed.
    for _ in $(seq 30); do
        docker exec "$name" systemctl is-system-running 2>/dev/null | grep -qE "running|degraded" && return
        sleep 1
    done
}
