"""`capture` runs inside every rustc call: it may import only the standard library."""

import ast
import subprocess
import sys
from pathlib import Path

CAPTURE = Path(__file__).resolve().parents[2] / "capture"


def test_capture_modules_import_only_the_standard_library():
    offenders = []
    for path in sorted(CAPTURE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("capture", "__future__"):
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []


def test_shims_do_not_load_the_daemon_or_third_party_packages():
    code = (
        "import sys, capture.rustc_shim, capture.linker_shim;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('daemon', 'anyio', 'structlog', 'watchfiles'));"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
