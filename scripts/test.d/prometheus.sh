#!/usr/bin/env bash
# The Prometheus alert rules (deploy/prometheus): syntax (`promtool check rules`) and the unit tests that prove each
# alert fires above its threshold and stays silent below it (`promtool test rules`). promtool comes with Debian's
# prometheus package (scripts/install-deps.sh). Without promtool this suite is skipped, and says so. The metric names
# used by the rules and the Grafana dashboard are checked against a live server by tests/system/test_metrics.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v promtool >/dev/null 2>&1; then
  echo "prometheus rules: SKIPPED (promtool not installed; scripts/install-deps.sh installs Debian's prometheus)"
  exit 0
fi
promtool check rules deploy/prometheus/citadel-alerts.yml
(cd deploy/prometheus && promtool test rules citadel-alerts.test.yml)
python3 -c "import json,sys; json.load(open(sys.argv[1]))" deploy/grafana/citadel-dashboard.json
echo "prometheus rules: check and unit tests passed"
