"""The core runs inside editors' own Python: grpcio, protobuf, opentimelineio only."""

from __future__ import annotations

import subprocess
import sys

CORE = ["fairy_plugin.errors", "fairy_plugin.client", "fairy_plugin.ranges", "fairy_plugin.requests",
        "fairy_plugin.runner", "fairy_plugin.relink", "fairy_plugin.progress", "fairy_plugin.timeline",
        "fairy_plugin.resolve.edit", "fairy_plugin.resolve.cli"]


def test_core_imports_no_torch_numpy_or_fairy():
    code = (f"import sys\nfor m in {CORE!r}: __import__(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'fairy', 'tqdm', 'av'))\n"
            "print(','.join(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
