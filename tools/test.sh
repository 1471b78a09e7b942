#!/usr/bin/env bash
# Builds everything and runs every test. Installs the Debian packages it
# needs first. Extra arguments go to `bazel test` (e.g. --config=asan).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh

status=0
bazel test //... "$@" || status=$?

# One closing line with the number of test cases, summed over every test
# target's JUnit report.
python3 - <<'PY' || true
import glob, xml.etree.ElementTree as ET
passed = failed = skipped = 0
for path in glob.glob("bazel-testlogs/**/test.xml", recursive=True):
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        continue
    for tc in root.iter("testcase"):
        if tc.find("failure") is not None or tc.find("error") is not None:
            failed += 1
        elif tc.get("status") == "notrun" or tc.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
print(f"segkv: {passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
