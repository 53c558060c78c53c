#!/usr/bin/env bash
# `make run`: the whole stack in the foreground, plus the demo job through the REST API.
set -euo pipefail
source "$(dirname "$0")/stack-env.sh"
cd "$ROOT"
prepare_stack
echo "  Flower:     http://127.0.0.1:$FLOWER_PORT/  (${FLOWER_BASIC_AUTH%%:*} / ${FLOWER_BASIC_AUTH#*:})"
if [ "$LMWEB_VAR/lmweb.env" -ef "$ROOT/var/lmweb.env" ]; then
  echo "  Settings:   $LMWEB_VAR/lmweb.env (manage.py commands run from $ROOT read it)"
else
  echo "  Settings:   $LMWEB_VAR/lmweb.env (for manage.py: DJANGO_ENV_FILE=$LMWEB_VAR/lmweb.env)"
fi
echo "  Stop with Ctrl-C."
echo
# The demo submits one pam-stats job, then stays idle so that honcho keeps the stack up.
exec honcho -f Procfile -d "$ROOT" start ${PROCESSES//,/ } demo
