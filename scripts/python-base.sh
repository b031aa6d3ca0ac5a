#!/bin/sh
# Makes the lecture's Python base image offline-from-Docker-Hub: a minimal
# Debian bullseye (whose python3 is 3.9, as the lecture's python:3.9 image) from
# Debian's mirrors with mmdebstrap, shaped like the official image (python and
# pip on PATH, LANG=C.UTF-8, CMD python3), imported into berth as
# python:3.9-slim-bullseye.
#
# CAs the host added locally (/usr/local/share/ca-certificates, e.g. a company
# TLS proxy's) are trusted in the image too, and pip is pointed at the system
# bundle (/etc/pip.conf), so pip and pipenv work behind such a proxy even after
# `pip install --upgrade pip` replaces Debian's pip.
#
# Usage: scripts/python-base.sh [BERTH] [MIRROR]   (as root; BERTH may be a
#        command that runs a user's berth, for their rootless store)
set -eu
berth=${1:-berth}
mirror=${2:-http://deb.debian.org/debian}
if ! command -v mmdebstrap >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
fi
work=$(mktemp -d /tmp/berth-python-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Readable by the berth that imports it, which may be a user's (rootless).
chmod 755 "$work"
mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-pip,python3-venv,python3-distutils,ca-certificates \
    --customize-hook='ln -sf /usr/bin/python3 "$1/usr/local/bin/python"' \
    --customize-hook='ln -sf /usr/bin/pip3 "$1/usr/local/bin/pip"' \
    --customize-hook='if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" && chroot "$1" update-ca-certificates >/dev/null; fi' \
    --customize-hook='printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" >"$1/etc/pip.conf"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    --format=tar bullseye "$work/rootfs.tar" "$mirror"
version=$(tar -xOf "$work/rootfs.tar" ./var/lib/dpkg/status | awk '/^Package: python3.9$/{p=1} p&&/^Version:/{print $2; exit}' | cut -d- -f1)
"$berth" import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "ENV PYTHON_VERSION=$version" \
    --change 'CMD ["python3"]' \
    -m "Debian bullseye with python $version, made by scripts/python-base.sh" \
    "$work/rootfs.tar" python:3.9-slim-bullseye
