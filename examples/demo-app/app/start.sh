#!/bin/sh
# The agent runs this in the instance's directory, with PLUM_NODE_IP, PLUM_INSTANCE_ID, ...
# set. server.py needs only the standard library; PLUM_PYTHON is the agent's own Python.
exec "${PLUM_PYTHON:-python3}" server.py
