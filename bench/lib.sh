# Sourced by the bench scripts that drive a real server (server_bench.sh, http_bench.sh,
# on_demand_bench.sh, fairness_bench.sh): a work folder removed at exit, with the server.
#   start_server BUILD_DIR SERVE_ARGS...  `loraserve serve SERVE_ARGS` in the background on
#                                         ephemeral ports (server_pid), waited for; its ready
#                                         file is $work/ready, its log $work/server.log
#   stop_server                           SIGTERM, then its exit status
#   json_field FILE KEY                   prints json.load(FILE)[KEY]
py=/usr/bin/python3
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2> /dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

json_field() { "$py" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

start_server() {
  local build=$1
  shift
  rm -f "$work/ready"
  "$build/cli/loraserve" serve "$@" --max-queue 100000 --listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 --ready-file "$work/ready" --log-level warn 2> "$work/server.log" &
  server_pid=$!
  for _ in $(seq 600); do [ -f "$work/ready" ] && break; sleep 0.1; done
  [ -f "$work/ready" ] || { cat "$work/server.log" >&2; exit 1; }
}

stop_server() {
  local pid=$server_pid
  server_pid=
  kill -TERM "$pid"
  wait "$pid"
}
