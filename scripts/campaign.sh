#!/usr/bin/env bash
# The verdict campaign (issue "A verdict you can trust"): runs each shipped playbook N times
# with `firebreak drill --repeat N`, one playbook after another, and prints one row per
# playbook: runs, passes, and each failed run's seed and first failed checker. The netns
# and power-loss playbooks need root (without it their runs report "could not run").
# Every drill stops the processes it started; the reports stay in OUT/<playbook>/run-N.
#
# usage: [FIREBREAK_BIN=...] scripts/campaign.sh RUNS OUT [PLAYBOOK...]
#   default playbooks: every playbooks/*.yaml but random.yaml (a base for --random)
set -euo pipefail
runs=${1:?usage: $0 RUNS OUT [PLAYBOOK...]}
out=${2:?usage: $0 RUNS OUT [PLAYBOOK...]}
shift 2
bin=${FIREBREAK_BIN:-target/release/firebreak}
if [ "$#" -gt 0 ]; then
  playbooks=("$@")
else
  playbooks=()
  for p in playbooks/*.yaml; do
    [ "$(basename "$p")" = random.yaml ] || playbooks+=("$p")
  done
fi
mkdir -p "$out"
printf '| playbook | runs | passed | failures (seed: first failed checker) |\n|---|---|---|---|\n' > "$out/table.md"
for playbook in "${playbooks[@]}"; do
  name=$(basename "$playbook" .yaml)
  started=$(date +%s)
  # Exit 9 or 10 is a verdict to tabulate, not a reason to stop the campaign.
  "$bin" drill "$playbook" --repeat "$runs" --out "$out/$name" > "$out/$name.out" 2> "$out/$name.err" || true
  summary=$(grep -E "^[a-z0-9-]+: [0-9]+ runs:" "$out/$name.out" || echo "$name: no summary (see $out/$name.err)")
  passed=$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<< "$summary")
  failures=$(grep -E "^  run [0-9]+ \(seed" "$out/$name.out" | sed -E 's/^  run [0-9]+ \(seed ([0-9]+)\): /\1: /' | paste -sd ';' - || true)
  printf '| %s | %s | %s | %s |\n' "$name" "$runs" "${passed:-?}" "${failures:--}" >> "$out/table.md"
  echo "$summary ($(( $(date +%s) - started )) s)"
done
cat "$out/table.md"
