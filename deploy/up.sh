#!/usr/bin/env bash
# deploy/up.sh — set up (if needed) and start the appliance with its default
# brains, in the foreground, then show it answering. Ctrl-C stops it.
#
#   SIOS_STATE_DIR  state directory (default: /var/lib/sios as root, else ~/.local/state/sios)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash deploy/setup.sh
SIOS=target/release/sios

"$SIOS" up &
KERNEL=$!
trap 'kill -TERM $KERNEL 2>/dev/null; wait $KERNEL' INT TERM

if ! "$SIOS" wait --timeout 120; then
    echo "up: the appliance did not come up cleanly: see the log above, and the failed or degraded processes below" >&2
fi
# Exits 1 when a process is failed or degraded; the appliance serves on.
"$SIOS" status || true

echo
echo "== a real answer: sios ask (screening, the router, the right specialist)"
"$SIOS" ask "Either party may terminate this agreement with thirty days written notice." || true
echo
"$SIOS" ask "My father has chest pain and his left arm went numb an hour ago." || true

echo
echo "== and one brain directly: sentence similarity from text-embedding (all-MiniLM-L6-v2)"
REQUEST='{"inputs":[{"name":"text","datatype":"BYTES","shape":[3],"data":[
  "The patient was discharged after the fever went down.",
  "Her temperature returned to normal and she went home.",
  "Quarterly revenue exceeded the forecast."]}]}'
echo "$REQUEST" | "$SIOS" invoke text-embedding --input - --compact | build/venv/bin/python -c '
import json, sys
out = json.load(sys.stdin)["outputs"][0]
rows = [out["data"][i * 384:(i + 1) * 384] for i in range(out["shape"][0])]
cos = lambda a, b: sum(x * y for x, y in zip(a, b))
print(f"  clinical vs clinical paraphrase: {cos(rows[0], rows[1]):.3f}")
print(f"  clinical vs finance:             {cos(rows[0], rows[2]):.3f}")
'
echo
echo "sios is running (pid $KERNEL). Try: $SIOS status | $SIOS invoke --help | $SIOS down"
wait $KERNEL
