"""OpenBLAS from pip (the `cmeel-openblas` wheel) really loads into an MLX process on Linux, without a system one.

The wheel's library needs `libgfortran.so.5`; a machine without a Fortran runtime gets MLX's bundled copy
through a folder of links. A child Python gets the environment `openblas_env` builds for the wheel alone
(as on a machine with no system OpenBLAS), runs a matrix product with MLX and reports which BLAS is mapped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.openblas import WHEEL, openblas_env, wheel_openblas

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OpenBLAS is preloaded on Linux only")

PROBE = """
import json, mlx.core as mx
a = mx.arange(12, dtype=mx.float32).reshape(3, 4)
product = (a @ a.T).tolist()
maps = open("/proc/self/maps").read()
mapped = sorted({l.split()[-1] for l in maps.splitlines() if "blas" in l or "gfortran" in l})
print(json.dumps({"product": product, "mapped": mapped}))
"""


def test_the_wheels_openblas_runs_an_mlx_matrix_product(tmp_path: Path) -> None:
    blas = wheel_openblas(links=tmp_path / "links", system_fortran=lambda: None)  # as on a bare machine
    assert blas is not None and blas.source == WHEEL, "cmeel-openblas is a Linux dependency of anyclaude"
    env = {"PATH": "/usr/bin:/bin", **openblas_env(find=lambda: blas)}
    # Without the system runtime on the loader's path, only the links can give it libgfortran.so.5.
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = [[4 * i + j for j in range(4)] for i in range(3)]
    expected = [[sum(x * y for x, y in zip(r, t, strict=True)) for t in rows] for r in rows]
    assert report["product"] == expected
    assert blas.library in report["mapped"] or str(Path(blas.library).resolve()) in report["mapped"], report
    fortran = [path for path in report["mapped"] if "gfortran" in path]
    assert fortran and all("mlx_cpu.libs" in path for path in fortran), "the runtime did not come through the links"


def test_the_links_give_the_fortran_runtime_its_usual_name(tmp_path: Path) -> None:
    blas = wheel_openblas(links=tmp_path / "links", system_fortran=lambda: None)
    assert blas is not None and blas.library_path is not None
    links = Path(blas.library_path)
    assert (links / "libgfortran.so.5").resolve().is_file()
    assert oct(links.stat().st_mode & 0o777) == "0o700"
