#!/usr/bin/env bash
# `worker [POOL]`: start a Prefect process worker (creates the pool if missing); anything else is exec'd as given.
set -euo pipefail
mkdir -p "${MGLL_HOME:-/data/mgll}"
if [[ "${1:-worker}" == "worker" ]]; then
    pool="${2:-${MGLL_WORK_POOL:-mgll-process}}"
    exec prefect worker start --pool "$pool" --type process --name "${HOSTNAME:-mgll}-worker"
fi
exec "$@"
