#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Build Debian's dovecot source package with one extra quilt patch, on the
# controller, inside a throwaway container of the relay's Debian release, and
# cache the binary packages. trim-packaging.py (beside this script) first cuts
# the packaging down to the packages a relay installs, without LTO, Pigeonhole
# or debug symbols: one compile of the Dovecot tree.
#
# The cache directory for a build is <cache-dir>/<source version>-<id>-<release>:
# the newest Dovecot 2.3 source version the mirror serves (for Debian 13, whose
# own is 2.4: bookworm's), without its epoch (as in Debian's file names), the
# first 12 hex digits of the sha256 of the patch, trim-packaging.py and the
# version scheme together, and the image's Debian release (its codename).
# Finding the version takes a short-lived container and a few seconds; a
# directory holding the completion marker is then reused without building.
# The directory is the last line of stdout; all progress goes to stderr.
#
# The packages get the version <Debian version>+chatmail<N>+deb<release>, so
# `dpkg -s` tells the patched build apart from Debian's and a build for
# Debian 13 from one for Debian 12 (a dist-upgraded relay gets the newer one).
# apt never reinstalls a version it has, so N grows whenever the patch or the
# trimming changes (tests/lint/test_dovecot_patch.py keeps them in step).
set -euo pipefail

readonly default_image=chatmail-relay/debian12-systemd:latest
readonly source_package=dovecot
readonly local_suffix=+chatmail2
# The relay's configuration is Dovecot 2.3's (2.4 changed its syntax).
readonly upstream_series=2.3
readonly marker=.complete

usage() {
	cat <<EOF
Usage: ${0##*/} --patch FILE --cache-dir DIR [--image IMAGE]

  --patch FILE     quilt patch (-p1, DEP-3 header) to add to debian/patches
  --cache-dir DIR  where built packages are kept, one directory per build
  --image IMAGE    Debian image to build in, of the relays' release
                   (default: ${default_image})
EOF
}

die() {
	printf '%s: %s\n' "${0##*/}" "$*" >&2
	exit 1
}

log() {
	printf '==> %s\n' "$*" >&2
}

patch_file=
cache_dir=
image=${default_image}
while (($# > 0)); do
	case $1 in
	--patch) patch_file=${2:?--patch needs a file}; shift 2 ;;
	--cache-dir) cache_dir=${2:?--cache-dir needs a directory}; shift 2 ;;
	--image) image=${2:?--image needs an image}; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done
[[ -n ${patch_file} && -n ${cache_dir} ]] || { usage >&2; exit 2; }
[[ -f ${patch_file} && -r ${patch_file} ]] || die "patch not readable: ${patch_file}"
command -v docker >/dev/null || die "docker is not installed"
docker image inspect "${image}" >/dev/null 2>&1 || die "image not found: ${image}"

patch_file=$(realpath "${patch_file}")
patch_name=$(basename "${patch_file}")
patch_sha256=$(sha256sum "${patch_file}" | cut -d' ' -f1)
trim_script=$(dirname "$(realpath "${BASH_SOURCE[0]}")")/trim-packaging.py
[[ -f ${trim_script} ]] || die "trim-packaging.py not found beside ${0##*/}"
# The version scheme is part of what is built.
build_id=$({ cat "${patch_file}" "${trim_script}"; echo "${local_suffix}+deb<release>"; } |
	sha256sum | cut -c1-12)
mkdir -p "${cache_dir}"
cache_dir=$(realpath "${cache_dir}")

workdir=$(mktemp -d "${TMPDIR:-/tmp}/build-dovecot.XXXXXX")
container=build-dovecot-$$
cleanup() {
	docker rm -f "${container}" >/dev/null 2>&1 || true
	rm -rf "${workdir}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir "${workdir}/src" "${workdir}/out"

# Runs inside the container as root; "resolve" prints the image's Debian
# release and fetches the newest 2.3 source version the mirror can actually serve
# (the Sources index of bookworm-security may name a version whose files are
# not on the mirror), "build" builds that source with the patch.
cat >"${workdir}/in-container.sh" <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
apt_opts=(-q -o APT::Sandbox::User=root)
# Whatever happens, leave the bind-mounted files to the caller.
trap 'chown -R "${HOST_UID}:${HOST_GID}" /src /out' EXIT

# Source lines for the image's own suites and, for releases after Debian 12
# (whose own Dovecot is 2.4), for bookworm's suites on the same mirror: the
# newest Dovecot 2.3 source is bookworm's.
enable_deb_src() {
	local file codename
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME}")
	for file in /etc/apt/sources.list.d/*.sources; do
		[[ -e ${file} && ${file} != *-deb-src*.sources ]] || continue
		sed '/^Types:/c\Types: deb-src' "${file}" \
			>"${file%.sources}-deb-src.sources"
		[[ ${codename} == bookworm ]] && continue
		sed -e '/^Types:/c\Types: deb-src' \
			-e "/^Suites:/s/\b${codename}\b/bookworm/g" "${file}" \
			>"${file%.sources}-deb-src-bookworm.sources"
	done
	if [[ -f /etc/apt/sources.list ]]; then
		sed -n 's/^deb /deb-src /p' /etc/apt/sources.list \
			>/etc/apt/sources.list.d/deb-src.list
	fi
	apt-get "${apt_opts[@]}" update >&2
}

newest_first() {
	local version sorted=() i
	while read -r version; do
		i=0
		while ((i < ${#sorted[@]})) &&
			dpkg --compare-versions "${sorted[i]}" gt "${version}"; do
			i=$((i + 1))
		done
		sorted=("${sorted[@]:0:i}" "${version}" "${sorted[@]:i}")
	done
	printf '%s\n' "${sorted[@]}"
}

resolve() {
	local version
	. /etc/os-release
	printf '%s\n' "${VERSION_CODENAME}"
	enable_deb_src
	cd /src
	while read -r version; do
		if apt-get "${apt_opts[@]}" source --download-only \
			"${SOURCE_PACKAGE}=${version}" >&2; then
			printf '%s\n' "${version}"
			return 0
		fi
		echo "source ${SOURCE_PACKAGE} ${version} is not downloadable" >&2
	done < <(apt-cache showsrc --only-source "${SOURCE_PACKAGE}" |
		sed -n 's/^Version: //p' | grep -E "^([0-9]+:)?${UPSTREAM_SERIES//./\\.}\\." |
		sort -u | newest_first)
	echo "no version ${UPSTREAM_SERIES}.* of source ${SOURCE_PACKAGE} is downloadable" >&2
	return 1
}

build() {
	local dsc=$1 version description deb
	enable_deb_src
	apt-get "${apt_opts[@]}" install -y --no-install-recommends dpkg-dev >&2
	mkdir /build
	dpkg-source -x "${dsc}" /build/source >&2
	cd /build/source
	python3 /patch/trim-packaging.py .
	apt-get "${apt_opts[@]}" build-dep -y --no-install-recommends ./ >&2

	install -m 0644 "/patch/${PATCH_NAME}" debian/patches/
	echo "${PATCH_NAME}" >>debian/patches/series

	# The new entry reuses the previous entry's date, which becomes
	# SOURCE_DATE_EPOCH, so the packages do not depend on the build day.
	version=$(dpkg-parsechangelog -S Version)${LOCAL_SUFFIX}+deb$(. /etc/os-release && echo "${VERSION_ID}")
	description=$(sed -n 's/^Description: //p' "/patch/${PATCH_NAME}" | head -n1)
	{
		printf '%s (%s) %s; urgency=medium\n\n' "${SOURCE_PACKAGE}" \
			"${version}" "$(dpkg-parsechangelog -S Distribution)"
		printf '  * chatmail.relay build: add %s\n' "${PATCH_NAME}"
		[[ -z ${description} ]] || printf '    (%s).\n' "${description}"
		printf '\n -- chatmail.relay <root@localhost>  %s\n\n' \
			"$(dpkg-parsechangelog -S Date)"
		cat debian/changelog
	} >debian/changelog.new
	mv debian/changelog.new debian/changelog

	DEB_BUILD_OPTIONS="nocheck nodoc noautodbgsym parallel=$(nproc)" \
		dpkg-buildpackage -B -uc -us >&2

	cp ../*.deb ../*.buildinfo ../*.changes /out/
	for deb in /out/*.deb; do
		[[ $(dpkg-deb -f "${deb}" Version) == "${version}" ]] ||
			{ echo "${deb} does not have version ${version}" >&2; exit 1; }
	done
}

"$@"
EOF

run_in_container() {
	docker run --rm --name "${container}" \
		--env SOURCE_PACKAGE="${source_package}" \
		--env LOCAL_SUFFIX="${local_suffix}" \
		--env UPSTREAM_SERIES="${upstream_series}" \
		--env PATCH_NAME="${patch_name}" \
		--env HOST_UID="$(id -u)" --env HOST_GID="$(id -g)" \
		--volume "${workdir}/in-container.sh:/in-container.sh:ro" \
		--volume "${patch_file}:/patch/${patch_name}:ro" \
		--volume "${trim_script}:/patch/trim-packaging.py:ro" \
		--volume "${workdir}/src:/src" \
		--volume "${workdir}/out:/out" \
		--entrypoint /bin/bash \
		"${image}" /in-container.sh "$@"
}

log "Resolving the ${source_package} source version in ${image}"
resolved=$(run_in_container resolve)
release=${resolved%%$'\n'*}
source_version=${resolved#*$'\n'}
key=${source_version#*:}-${build_id}-${release}
build_dir=${cache_dir}/${key}

# Parallel runs (test scenarios, say) build once: the others wait here, then
# find the marker.
exec 9>"${cache_dir}/.lock"
flock 9
if [[ -f ${build_dir}/${marker} ]]; then
	log "Reusing the cached build ${key}"
	printf '%s\n' "${build_dir}"
	exit 0
fi

log "Building ${source_package} ${source_version}${local_suffix} (cache key ${key})"
started=$(date +%s)
dsc=${source_package}_${source_version#*:}.dsc
[[ -f ${workdir}/src/${dsc} ]] || die "${dsc} was not downloaded"
run_in_container build "/src/${dsc}" 2>&1 | tee "${workdir}/out/build.log" >&2
elapsed=$(($(date +%s) - started))

staging=$(mktemp -d "${cache_dir}/.${key}.XXXXXX")
mv "${workdir}"/out/* "${staging}/"
(cd "${staging}" && sha256sum -- *.deb >SHA256SUMS)
debs=("${staging}"/*.deb)
cat >"${staging}/${marker}" <<EOF
source_version=${source_version}
package_version=$(dpkg-deb -f "${debs[0]}" Version)
patch=${patch_name}
patch_sha256=${patch_sha256}
trim_sha256=$(sha256sum "${trim_script}" | cut -d' ' -f1)
release=${release}
image=${image}
image_id=$(docker image inspect --format '{{.Id}}' "${image}")
build_seconds=${elapsed}
EOF
chmod 0755 "${staging}"
rm -rf "${build_dir}"
mv -T "${staging}" "${build_dir}"
log "Built ${key} in ${elapsed} s"
printf '%s\n' "${build_dir}"
