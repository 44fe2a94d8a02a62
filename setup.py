"""wirekit's build: everything is in pyproject.toml except the compiled hot path.

The load generator's per-response path (``wirekit.load.http`` and ``wirekit.load.recorder``)
is compiled with mypyc: the same typed Python, built into C extensions, which does about 6%
more requests per CPU-second than the interpreted modules (benchmarks/load.py). The extensions
are optional: without a C compiler the build warns and wirekit runs those modules as Python.
The build runs mypy on them without wirekit's dependencies installed (pip builds in an isolated
environment), so imports it cannot find are typed Any there; ``make lint`` checks them fully.
"""

from mypyc.build import mypycify
from setuptools import setup

HOT_PATH = ["src/wirekit/load/http.py", "src/wirekit/load/recorder.py"]
MYPY_OPTIONS = ["--ignore-missing-imports", "--follow-imports=silent", "--no-warn-unused-ignores"]

extensions = mypycify(MYPY_OPTIONS + HOT_PATH, opt_level="3")
for extension in extensions:
    extension.optional = True
setup(ext_modules=extensions)
