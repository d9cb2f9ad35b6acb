# Shared by the scripts: `pids` (processes this script started) and `work` (its temp dir)
# are the caller's; `cleanup` SIGKILLs exactly those processes, waits (at most 5 s) until
# they are gone so the next run finds the ports free, and removes the dir.
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
