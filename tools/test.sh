#!/usr/bin/env bash
# Builds everything and runs every test. Installs the Debian packages it
# needs first. Extra arguments go to `bazel test` (e.g. --config=asan).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh

status=0
bazel test //... "$@" || status=$?

# One closing line with the number of test cases, summed over the JUnit
# reports of the test targets that exist now (not reports left behind by
# deleted targets). A report is this run's, or the cached result bazel
# reused for an unchanged target.
targets=$(bazel query 'tests(//...)' 2>/dev/null || true)
python3 - "$status" $targets <<'PY' || true
import os, sys, xml.etree.ElementTree as ET
status, labels = int(sys.argv[1]), sys.argv[2:]
passed = failed = skipped = missing = 0
for label in labels:
    pkg, name = label.lstrip("/").split(":")
    path = os.path.join("bazel-testlogs", pkg, name, "test.xml")
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        missing += 1
        continue
    for tc in root.iter("testcase"):
        if tc.find("failure") is not None or tc.find("error") is not None:
            failed += 1
        elif tc.get("status") == "notrun" or tc.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
line = f"segkv: {len(labels)} test targets: {passed} passed, {failed} failed, {skipped} skipped"
if missing:
    line += f", {missing} targets without a report"
if status != 0:
    line += f" (bazel test exited {status})"
print(line)
PY
exit $status
