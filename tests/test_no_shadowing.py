"""The checkout never shadows an installed distribution.

`python -m ...` (pytest, the CLI, a script) started from the repository root puts the root first
on sys.path, so a top-level folder that is a regular package (one with ``__init__.py``) would win
over an installed package of the same name: transformers >= 5.25 imports the PyPI ``kernels``
and failed on our ``kernels/``. Every top-level folder but ``hotspot_erc`` is therefore a
namespace folder, which Python only uses when no regular package of that name is on the path,
and ``kernels/`` is installed as ``hotspot_erc.kernels``.
"""
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = sorted(p.name for p in ROOT.iterdir()
                   if p.is_dir() and p.name.isidentifier() and p.name != "hotspot_erc")

PROBE = textwrap.dedent("""
    import importlib, json, sys
    out = {"path0": sys.path[0]}
    for name in sys.argv[1:]:
        try:
            mod = importlib.import_module(name)
            path = getattr(mod, "__path__", None)  # a package: its folders; a module: its file
            out[name] = list(path) if path is not None else mod.__file__
        except Exception as exc:
            out[name] = f"error: {type(exc).__name__}: {exc}"
    print(json.dumps(out))
""")


def probe(tmp_path, names, *, cwd=ROOT, extra_path=()):
    """Import ``names`` in ``python -m _shadow_probe`` started in ``cwd`` (sys.path[0] = cwd, as
    for any -m run from the checkout); {name: a package's folders, a module's file, or "error: ..."}."""
    (tmp_path / "_shadow_probe.py").write_text(PROBE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, extra_path), str(tmp_path)]))
    done = subprocess.run([sys.executable, "-m", "_shadow_probe", *names], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(out.pop("path0")).resolve() == Path(cwd).resolve()
    return out


def test_top_level_folders_are_not_regular_packages():
    assert "kernels" in TOP_LEVEL and "benchmarks" in TOP_LEVEL
    regular = [name for name in TOP_LEVEL if (ROOT / name / "__init__.py").exists()]
    assert not regular, f"top-level folders with __init__.py shadow installed packages: {regular}"


def test_installed_package_of_each_top_level_name_wins(tmp_path):
    """A regular package named like each top-level folder, installed after the root on sys.path
    (as site-packages is), is the one imported."""
    site = tmp_path / "site"
    for name in TOP_LEVEL:
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text("")
    got = probe(tmp_path, TOP_LEVEL, extra_path=[site])
    for name in TOP_LEVEL:
        assert got[name] == [str(site / name)], (name, got[name])


def test_pypi_kernels_and_transformers_hub_kernels_import_from_the_root(tmp_path):
    try:
        dist = importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the PyPI package `kernels` is not installed (transformers >= 5.25 brings it)")
    pytest.importorskip("transformers", reason="the PyPI package `transformers` is not installed")
    installed = Path(dist.locate_file("kernels")).resolve()
    got = probe(tmp_path, ["kernels", "transformers.integrations.hub_kernels"])
    assert not str(got["kernels"]).startswith("error"), got["kernels"]
    assert [Path(p).resolve() for p in got["kernels"]] == [installed], got["kernels"]
    assert not str(got["transformers.integrations.hub_kernels"]).startswith("error"), got


@pytest.mark.parametrize("where", ["root", "elsewhere"])
def test_package_kernels_import_from_anywhere(tmp_path, where):
    cwd = ROOT if where == "root" else tmp_path
    names = ["hotspot_erc.kernels", "hotspot_erc.kernels.varlen_attention", "hotspot_erc.ops.varlen_attention"]
    got = probe(tmp_path, names, cwd=cwd)
    for name in names:
        assert not str(got[name]).startswith("error"), (name, got[name])
    assert [Path(p).resolve() for p in got["hotspot_erc.kernels"]] == [ROOT / "kernels"]


def test_builds_ship_every_kernel_module(tmp_path):
    """Wheels take their Python files from build_py, sdists from the manifest: both carry every
    module of kernels/ (as hotspot_erc/kernels/ in the wheel) and every C++/CUDA source."""
    import shutil

    # setup.py writes build info and egg-info next to itself: build a copy, not the checkout.
    src = tmp_path / "src"
    skip_top = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "runs", "data")
    skip_any = shutil.ignore_patterns("__pycache__", "*.so")
    shutil.copytree(ROOT, src, ignore=lambda d, names: skip_any(d, names) | (
        skip_top(d, names) if Path(d) == ROOT else set()))
    env = dict(os.environ, HOTSPOT_ERC_FORCE_CPU="1")
    for cmd in (["build_py", "--build-lib", str(tmp_path / "lib")],
                ["sdist", "--formats=tar", "--dist-dir", str(tmp_path / "dist")]):
        done = subprocess.run([sys.executable, "setup.py", "-q", *cmd], cwd=src, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    modules = sorted(p.name for p in (ROOT / "kernels").glob("*.py"))
    assert modules and sorted(p.name for p in (tmp_path / "lib/hotspot_erc/kernels").glob("*.py")) == modules

    import tarfile

    (sdist,) = (tmp_path / "dist").glob("*.tar")
    names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    sources = [str(p.relative_to(ROOT)) for p in ROOT.glob("csrc/**/*") if p.is_file()]
    missing = [f for f in [f"kernels/{m}" for m in modules] + sources if f not in names]
    assert not missing, f"the sdist lacks {missing}"
