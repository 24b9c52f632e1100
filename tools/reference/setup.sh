#!/bin/sh
# Installs the reference pipeline's Python dependencies into target/reference-venv (idempotent).
set -eu
cd "$(dirname "$0")/../.."
venv=target/reference-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tools/reference/requirements.txt
echo "$venv/bin/python"
