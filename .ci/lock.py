"""Write the dev/CI lock: one pip resolve of everything `make setup` installs, as exact pins.

Run through `make lock`, which calls this with the Makefile's own package lists, in a scratch
virtualenv of the same Python that `make setup` uses (the resolve depends on the interpreter and
platform). The output is a pip constraints file: `pip install -c dev-lock.txt ...` keeps every
package, direct or transitive, at the version resolved here.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "hotspot-erc"


def project_requirements(extras: list[str]) -> list[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in extras:
        reqs += meta["optional-dependencies"][extra]
    return reqs


def resolve(reqs: list[str], *, no_deps: bool) -> dict[str, str]:
    """{name: version} pip would install into an empty environment for ``reqs``."""
    if not reqs:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), *(["--no-deps"] if no_deps else []), *reqs]
        subprocess.run(cmd, check=True)
        install = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in install}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "dev-lock.txt"))
    ap.add_argument("--extras", nargs="*", default=["test"], help="extras of pyproject.toml to include")
    ap.add_argument("--no-deps", nargs="*", default=[], help="packages installed with --no-deps")
    ap.add_argument("requirements", nargs="*", help="further requirements (torch spec, libraries)")
    args = ap.parse_args(argv)

    tools = ["pip", "setuptools", "wheel", "ninja"]
    pins = resolve(tools + project_requirements(args.extras) + args.requirements, no_deps=False)
    for name, version in resolve(args.no_deps, no_deps=True).items():
        if pins.setdefault(name, version) != version:
            raise SystemExit(f"--no-deps package {name} resolved to {version} alone and to {pins[name]} "
                             "with the rest: pin it in the Makefile")
    pins.pop(PROJECT, None)
    head = [
        "# Dev/CI lock (pip constraints): written by `make lock` from one resolve; do not edit by hand.",
        f"# Resolved {datetime.date.today().isoformat()} for Python {platform.python_version()} "
        f"on {platform.system()} {platform.machine()}.",
        "# `make setup` installs with -c dev-lock.txt; `make test-latest` ignores it.",
    ]
    lines = [f"{name}=={version}" for name, version in sorted(pins.items())]
    Path(args.out).write_text("\n".join(head + lines) + "\n")
    print(f"wrote {args.out}: {len(lines)} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
