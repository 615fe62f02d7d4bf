#!/usr/bin/env bash
# The main job end to end on this machine: a POC server and two sites, a FedAvg job, its result.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
demo="$root/.demo"
export SHOAL_HOME="$demo/home"          # keep the demo's startup-kit registry out of ~/.shoal
unset SHOAL_BLOBS_URL                   # the demo keeps its blobs in the folder: it needs no service
unset SHOAL_STORE_URL                   # and its jobs in the embedded SQLite file, for the same reason
ws="$demo/poc"

echo "== shoal poc prepare (CA and startup kits for a server, site-1, site-2, admin)"
shoal poc prepare --workspace "$ws" --force
echo "== shoal poc start"
shoal poc start --workspace "$ws"
trap 'echo "== shoal poc stop"; shoal poc stop --workspace "$ws"' EXIT

echo "== shoal job submit -j examples/hello-numpy"
job_id=$(shoal job submit -j "$root/examples/hello-numpy" --format json | python -c 'import json,sys; print(json.load(sys.stdin)["data"]["job_id"])')
echo "job_id: $job_id"
echo "== shoal job wait $job_id"
shoal job wait "$job_id"
echo "== shoal job download $job_id"
shoal job download "$job_id" -o "$demo/results" --force --format json > "$demo/download.json"
python - "$demo/download.json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))["data"]
summary = json.load(open(data["artifacts"]["metrics_summary"]))
print("FedAvg on two sites (loss of the global model, averaged over the sites' data):")
for entry in summary["rounds"]:
    print(f"  round {entry['round'] + 1}: loss {entry['metrics']['loss']:.6f}  (sites: {', '.join(entry['sites'])})")
print("global model:", data["artifacts"]["global_model"])
for site, path in sorted(data["artifacts"].get("client_logs", {}).items()):
    print(f"{site} log:", path)
PY
