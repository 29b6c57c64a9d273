"""The prepared GPU check (bench/gpu_check.sh) runs end to end on the CPU with --cpu-smoke and prints
its one table with a result in every row (no part failed or ran out of time)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_smoke():
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu-smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "check" not in line]
    names = [r.split("|")[1].strip() for r in rows]
    assert names == ["GPU test subset", "pbmc default run, cpu", "pbmc default run, cpu", "pbmc cpu vs cpu",
                     "1 arrangement(s) per step, mixed precision on", "4 arrangement(s) per step, mixed precision on",
                     "4 arrangement(s) per step, mixed precision off",
                     "default run, generated 1,500 x 800 sparse atlas (5%)"]
    text = "\n".join(rows)
    assert "passed" in rows[0] and "(rc 0)" in rows[0]
    assert "top-20 shared 20/20" in text                 # the same device twice: the same findings
    assert "s per pass" in text and "planted markers in top 100" in text and "limit" not in text
