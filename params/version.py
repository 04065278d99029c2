"""The version of mulfree, written into every generated file, manifest and export.

The one place it is written down: ``pyproject.toml`` reads it from here, and
``mulfree.__version__`` is this.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
