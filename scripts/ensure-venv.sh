#!/bin/sh
# Create the virtualenv; on a fresh Debian, python3 -m venv needs python3-venv.
set -e
python="$1"; venv="$2"
[ -x "$venv/bin/python" ] && exit 0
if ! "$python" -m venv --help >/dev/null 2>&1 || ! "$python" -c 'import ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing python3-venv (Debian) ..."
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
        echo "error: '$python -m venv' is not available; on Debian: sudo apt-get install python3-venv" >&2
        exit 1
    fi
fi
"$python" -m venv "$venv"
