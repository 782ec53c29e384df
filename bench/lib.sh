# Shared by the bench scripts (sourced): logging, and processes started in the background that are
# remembered by PID and stopped on any exit.
log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The Node.js release the project runs on (.node-version), as npm test and npm run stack use it.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/use-node.sh"

pids=()
tmp=$(mktemp -d)
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CPU COMMAND... : runs COMMAND in the background pinned to CPU, output in $OUT/NAME.log.
start() {
  local name=$1 cpu=$2
  shift 2
  taskset -c "$cpu" "$@" >"$OUT/$name.log" 2>&1 &
  pids+=($!)
}

# wait_http URL PID [SECONDS]: until URL answers at all; fails if PID exits first.
wait_http() {
  local url=$1 pid=$2 seconds=${3:-10}
  for _ in $(seq $((seconds * 10))); do
    curl -s -o /dev/null --max-time 1 "$url" && return 0
    kill -0 "$pid" 2>/dev/null || die "process $pid exited before $url answered"
    sleep 0.1
  done
  die "$url did not answer within $seconds s"
}

# start_holder WHAT FILE SECONDS CMD...: starts CMD in the background, stdout to FILE and stderr to
# FILE's .log, and waits until it wrote FILE (the services it holds are up); fails if it exits first.
start_holder() {
  local what=$1 file=$2 seconds=$3
  shift 3
  "$@" >"$file" 2>"${file%.json}.log" &
  pids+=($!)
  local holder=$!
  for _ in $(seq $((seconds * 10))); do
    [ -s "$file" ] && return 0
    kill -0 "$holder" 2>/dev/null || die "$what did not start, see ${file%.json}.log"
    sleep 0.1
  done
  die "$what did not start within $seconds s, see ${file%.json}.log"
}

# write_section NAME FILE: puts the section in FILE (which begins with "<!-- NAME:begin" and ends with
# "<!-- NAME:end -->") into bench/RESULTS.md in place of the one a previous run wrote, or at the end,
# and keeps a copy in $OUT/section.md. Every other section of RESULTS.md stays as it is.
write_section() {
  local name=$1 file=$2
  node -e '
const fs = require("node:fs");
const [results, name, sectionFile] = process.argv.slice(1);
const section = fs.readFileSync(sectionFile, "utf8").trimEnd();
let text = fs.existsSync(results) ? fs.readFileSync(results, "utf8") : "";
const begin = text.indexOf(`<!-- ${name}:begin`);
const endMarker = `<!-- ${name}:end -->`;
const end = text.indexOf(endMarker);
text = begin >= 0 && end > begin
  ? text.slice(0, begin) + section + text.slice(end + endMarker.length)
  : text.trimEnd() + "\n\n" + section + "\n";
fs.writeFileSync(results, text);
' bench/RESULTS.md "$name" "$file"
  cp "$file" "$OUT/section.md"
}

# require_room TMP_GIB MEM_GIB: stops unless the temp dir has TMP_GIB free and MEM_GIB of memory is available.
require_room() {
  local free_gib free_mem_gib
  free_gib=$(df --output=avail -BG "${TMPDIR:-/tmp}" | tail -1 | tr -dc 0-9)
  [ "$free_gib" -ge "$1" ] || die "needs $1 GiB free in ${TMPDIR:-/tmp} (has ${free_gib} GiB)"
  free_mem_gib=$(awk '/^MemAvailable/ { printf "%d", $2 / 1048576 }' /proc/meminfo)
  [ "$free_mem_gib" -ge "$2" ] || die "needs $2 GiB of available memory for Ceph's memstore and Glance (has ${free_mem_gib} GiB)"
}
