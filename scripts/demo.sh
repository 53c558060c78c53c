#!/usr/bin/env bash
# `make demo`: start the stack, run the demo job through the API, check its package, stop.
# Exits 0 only when the job is COMPLETE and every packaged file matches its manifest sha256.
set -euo pipefail
source "$(dirname "$0")/stack-env.sh"
cd "$ROOT"
prepare_stack >/dev/null
log=$LMWEB_VAR/run/demo-stack.log
setsid honcho -f Procfile -d "$ROOT" start ${PROCESSES//,/ } >"$log" 2>&1 &
stack=$!
stop() { kill -TERM -- "-$stack" 2>/dev/null || true; wait "$stack" 2>/dev/null || true; }
trap stop EXIT
status=0
python scripts/demo.py --url "http://127.0.0.1:$LMWEB_PORT" --token-file "$LMWEB_DATA_DIR/demo-credentials.json" --out "$LMWEB_VAR/demo" || status=$?
if [ "$status" -ne 0 ]; then
  echo "demo failed; the last lines of the stack's log ($log):" >&2
  tail -40 "$log" >&2
fi
exit "$status"
