# Sourced by run.sh, demo.sh: the environment of the one-machine stack, embedded defaults unless set.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$ROOT/.venv/bin:$PATH"
export LMWEB_VAR=${LMWEB_VAR:-$ROOT/var}
export DEBUG=${DEBUG:-1}
export LMWEB_DATA_DIR=${LMWEB_DATA_DIR:-$LMWEB_VAR/data}
export LMWEB_PORT=${LMWEB_PORT:-8000}
export FLOWER_PORT=${FLOWER_PORT:-5555}
export LMWEB_CATALOG_PORT=${LMWEB_CATALOG_PORT:-9097}
export LMWEB_CATALOG=127.0.0.1:$LMWEB_CATALOG_PORT
# 0.0.0.0 lets workers on other machines find the jobs (they also need the password file).
export LMWEB_CATALOG_BIND=${LMWEB_CATALOG_BIND:-127.0.0.1}
# Jobs run at once: a controller process mostly waits on its makeflow.
export LMWEB_CONTROLLERS=${LMWEB_CONTROLLERS:-8}
export LMWEB_MAX_WORKERS=${LMWEB_MAX_WORKERS:-$(nproc)}
export LMWEB_WQ_PASSWORD_FILE=${LMWEB_WQ_PASSWORD_FILE:-$LMWEB_VAR/secrets/wq.password}
export PYTHONUNBUFFERED=1
mkdir -p "$LMWEB_VAR"/{run,redis,catalog,wq-scratch,secrets} "$LMWEB_DATA_DIR"
chmod 700 "$LMWEB_VAR/secrets"

# Django's SECRET_KEY, the Work Queue password and Flower's login: made once, kept in
# var/secrets (0600), passed to the processes in their environment, never on a command line.
[ -s "$LMWEB_VAR/secrets/secret_key" ] || (umask 077; head -c 48 /dev/urandom | base64 -w0 > "$LMWEB_VAR/secrets/secret_key")
export SECRET_KEY=${SECRET_KEY:-$(cat "$LMWEB_VAR/secrets/secret_key")}
[ -s "$LMWEB_WQ_PASSWORD_FILE" ] || (umask 077; head -c 32 /dev/urandom | base64 > "$LMWEB_WQ_PASSWORD_FILE")
[ -s "$LMWEB_VAR/secrets/flower" ] || (umask 077; echo "admin:$(head -c 12 /dev/urandom | base64 | tr -d '/+=')" > "$LMWEB_VAR/secrets/flower")
export FLOWER_BASIC_AUTH=${FLOWER_BASIC_AUTH:-$(cat "$LMWEB_VAR/secrets/flower")}

# No broker given: a private Redis on a socket of our own, never the system's 6379.
PROCESSES=catalog,web,controller,housekeeper,scheduler,workers,flower
if [ -z "${CELERY_BROKER_URL:-}" ]; then
  export LMWEB_REDIS_SOCKET=$LMWEB_VAR/run/redis.sock
  export CELERY_BROKER_URL=redis+socket://$LMWEB_REDIS_SOCKET
  PROCESSES=redis,$PROCESSES
fi

# The settings above in $LMWEB_VAR/lmweb.env (0600: it holds SECRET_KEY), which
# lmweb/settings.py reads, so that every manage.py command run later from the repository root
# sees the stack's database, data and secrets (the environment still wins). Every variable
# that settings reads and that is set goes in; the stack's own (ports, folders) do not.
write_settings_file() {
  local name names file=$LMWEB_VAR/lmweb.env
  local text="# Written by make run: lmweb/settings.py reads it; the environment wins over it."$'\n'
  names=(SECRET_KEY DEBUG ALLOWED_HOSTS CSRF_TRUSTED_ORIGINS DATABASE_URL CELERY_BROKER_URL)
  names+=($(compgen -e | grep '^LMWEB_' | sort))
  for name in "${names[@]}"; do
    case $name in
      LMWEB_VAR | LMWEB_PORT | LMWEB_CATALOG_PORT | LMWEB_CATALOG_BIND | LMWEB_CONTROLLERS) continue ;;
      LMWEB_REDIS_SOCKET | LMWEB_DEMO_TOKEN) continue ;;
    esac
    [ -n "${!name:-}" ] || continue
    case ${!name} in
      *"'"* | *$'\n'*) echo "stack-env: $name holds a quote or a newline" >&2 && return 1 ;;
    esac
    text+="$name='${!name}'"$'\n'
  done
  (umask 077 && printf '%s' "$text" >"$file.tmp") && mv "$file.tmp" "$file"
}
write_settings_file

prepare_stack() {
  python "$ROOT/manage.py" migrate --noinput >/dev/null
  python "$ROOT/manage.py" collectstatic --noinput >/dev/null
  python "$ROOT/manage.py" ensure_demo_user --url "http://127.0.0.1:$LMWEB_PORT" "$@"
}
