#!/usr/bin/env bash
# Build a Debian systemd base image for the test bed, offline, from the
# host's own Debian mirror: chatmail-relay/debian<N>-systemd:latest for the
# release given (12 or 13; default 12). The image carries the hash of this
# recipe as a label and is rebuilt only when the recipe changes.
#   base-image.sh [12|13]
set -euo pipefail

release="${1:-12}"
case "$release" in
    12) codename=bookworm ;;
    13) codename=trixie ;;
    *) echo "base-image.sh: Debian release $release is not supported (12 or 13)" >&2; exit 2 ;;
esac
image="${CHATMAIL_BASE_IMAGE:-chatmail-relay/debian$release-systemd:latest}"
packages="systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,iproute2,procps,less,gnupg"
recipe_hash="$( { cat "${BASH_SOURCE[0]}"; echo "$packages $codename"; } | sha256sum | cut -c1-16)"

current="$(docker image inspect --format '{{ index .Config.Labels "chatmail.recipe" }}' "$image" 2>/dev/null || true)"
if [[ "$current" == "$recipe_hash" ]]; then
    echo "base image $image is current (recipe $recipe_hash)"
    exit 0
fi

# The first Debian source the host is configured with: its mirror URL and
# the file itself (deb822), so the image uses exactly the host's archive, with
# the host's release names replaced by the image's (bookworm-security becomes
# trixie-security).
sources_file="$(grep -l 'debian-archive-keyring' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)"
if [[ -n "$sources_file" ]]; then
    mirror="$(awk '/^URIs:/ {print $2; exit}' "$sources_file")"
else
    mirror="$(awk '$1 == "deb" && $0 ~ /debian/ {print $2; exit}' /etc/apt/sources.list)"
fi
: "${mirror:?no Debian mirror found in /etc/apt/sources.list(.d)}"

started=$(date +%s)
rootfs="$(mktemp -d /var/tmp/chatmail-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
echo "building $image from $mirror (recipe $recipe_hash)"
debootstrap --variant=minbase --include="$packages" "$codename" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -n 30 "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"

if [[ -n "$sources_file" ]]; then
    rm -f "$rootfs/etc/apt/sources.list"
    host_codename="$(. /etc/os-release && echo "$VERSION_CODENAME")"
    sed -E "/^Suites:/s/\\b$host_codename\\b/$codename/g" "$sources_file" \
        >"$rootfs/etc/apt/sources.list.d/debian.sources"
fi
# Containers need no getty, and systemd must not try to rename the host.
chroot "$rootfs" systemctl mask getty@tty1.service console-getty.service \
    systemd-logind.service systemd-firstboot.service >/dev/null 2>&1 || true
# Package lists stay: like a cloud image, the host can install at once.
chroot "$rootfs" apt-get -o APT::Sandbox::User=root update -q >/dev/null
rm -rf "$rootfs"/var/cache/apt/archives/*.deb
: >"$rootfs/etc/machine-id"

tar -C "$rootfs" -c . | docker import \
    --change 'CMD ["/sbin/init"]' \
    --change 'ENV container=docker' \
    --change "LABEL chatmail.recipe=$recipe_hash" \
    - "$image" >/dev/null
echo "built $image in $(( $(date +%s) - started )) s"
