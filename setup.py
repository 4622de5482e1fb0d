"""Thin entry point kept for tools that still call ``python setup.py``.

The build is described once, in meson.build, and driven by meson-python
(see pyproject.toml).  This file only delegates to pip so that the two can
never disagree.
"""
import subprocess
import sys

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("install", "develop"):
        editable = ["-e"] if sys.argv[1] == "develop" else []
        sys.exit(subprocess.call([sys.executable, "-m", "pip", "install",
                                  "--no-build-isolation", *editable, "."]))
    sys.exit("setup.py does not build rplb: use `pip install .` "
             "(meson-python, see meson.build)")
