#!/usr/bin/env bash
# Creates tools/.venv with the Python clients the API checks use (not needed by cargo test).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -r requirements.txt
echo "tools/.venv ready: $(.venv/bin/python -c 'import grpc, tritonclient; print("grpcio", grpc.__version__)')"
