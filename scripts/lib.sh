# Shared by the scripts, sourced after they set `work` (their temp dir). Sets `bin` (the
# firebreak binary: FIREBREAK_BIN, else the release build) and `pids` (processes the
# script started), and removes both on exit: `cleanup` SIGKILLs exactly those processes,
# waits (at most 5 s) until they are gone so the next run finds the ports free, and
# removes the dir. `start_up` runs `firebreak up`.
bin=${FIREBREAK_BIN:-target/release/firebreak}
pids=()
trap cleanup EXIT

# Starts `firebreak up FLAGS...` on "$work/data" and waits until it serves; records it and
# every process it started (nodes, services) in `pids`, and exports the CA and the
# operator token for the CLI.
start_up() {
  "$bin" up --data-dir "$work/data" "$@" > "$work/up.log" 2>&1 &
  pids+=($!)
  disown  # no "Killed" notice when cleanup stops it
  until grep -q "Ctrl-C stops" "$work/up.log"; do
    kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/up.log"; exit 1; }
    sleep 0.2
  done
  for site in pangyo gasan busan; do
    for pid_file in "$work/data/$site"/*.pid; do pids+=("$(cat "$pid_file")"); done
  done
  export FIREBREAK_CA="$work/data/ca/ca.pem"
  FIREBREAK_TOKEN=$(awk '$1 == "operator" { print $2 }' "$work/data/tokens")
  export FIREBREAK_TOKEN
}

cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  rm -rf "$work"
}
