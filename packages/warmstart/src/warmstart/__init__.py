"""warmstart — never train from scratch.

The shared pretraining core: a Lightning Fabric training engine (``warmstart.engine``), CLI building blocks
(``warmstart.cli``) and the seed papers' reusable methods (``init``, ``optim``, ``peft``, ``objectives``,
``data``, ``eval``). Subpackages are imported on demand.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("warmstart")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
