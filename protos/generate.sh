#!/bin/sh
# Regenerate plum/rpc/_proto/ from protos/ (needs the dev extras: pip install -e '.[dev]').
set -eu
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" -m plum.rpc.generate "$@"
