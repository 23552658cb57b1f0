"""Build hook: the demo pages' SDK bundle is built before packaging when it is missing.

livehub/demos/static/vendor/centrifuge.js is built from the official centrifuge npm package by
frontend/build.sh (npm ci + esbuild) and never committed. Building an sdist or a wheel from a
clean clone runs that script first, so both carry the bundle; building a wheel from an sdist
finds the bundle already there. Everything else is in pyproject.toml.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
BUNDLE = HERE / "livehub" / "demos" / "static" / "vendor" / "centrifuge.js"
BUILD = HERE / "frontend" / "build.sh"


def ensure_bundle() -> None:
    if BUNDLE.is_file():
        return
    if not BUILD.is_file():
        raise SystemExit(f"{BUNDLE.relative_to(HERE)} is missing and there is no frontend/ to build it from")
    subprocess.run(["bash", str(BUILD)], cwd=HERE, check=True)
    if not BUNDLE.is_file():
        raise SystemExit(f"frontend/build.sh did not produce {BUNDLE.relative_to(HERE)}")


class BuildPy(build_py):
    def run(self) -> None:
        if not self.editable_mode:  # `pip install -e .` serves the source tree: `make frontend` builds it
            ensure_bundle()
        super().run()


class Sdist(sdist):
    def run(self) -> None:
        ensure_bundle()
        super().run()


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
