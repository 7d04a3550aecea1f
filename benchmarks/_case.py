"""Run one benchmark case in this fresh interpreter and print its result as JSON.

    python benchmarks/_case.py MODULE FUNCTION 'JSON params'

``MODULE`` is a ``bench_*`` module beside this file; ``FUNCTION(**params)`` returns a dict. The
last line printed is ``RESULT {json}``; anything else on stdout/stderr is diagnostics.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    module_name, function, raw = sys.argv[1], sys.argv[2], sys.argv[3]
    params = json.loads(raw)
    try:
        module = importlib.import_module(module_name)
        out = getattr(module, function)(**params)
        status = 0
    except Exception as exc:  # reported to run.py, which prints it in the table
        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {exc}"}
        status = 1
    sys.stdout.flush()
    print("RESULT " + json.dumps(out), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
