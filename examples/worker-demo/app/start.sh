#!/bin/sh
# Started by the Plum agent inside the unpacked app, with PLUM_INSTANCE_ID, PLUM_APP_NAME,
# PLUM_APP_VERSION, WORKER_NODE_ID and CONTROLLER_GRPC_ADDR set. The worker imports `plum`,
# so it runs on the Python Plum itself runs on: PLUM_PYTHON, which the agent sets, else
# the first python3 on PATH (which must then have Plum installed).
set -eu
cd "$(dirname "$0")"
exec "${PLUM_PYTHON:-python3}" worker.py "$@"
