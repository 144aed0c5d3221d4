"""Deprecated import path, kept for one release: use :mod:`pytest_physpipe.store.codecs`.

The extension contracts are exported from :mod:`pytest_physpipe` itself.
"""

from __future__ import annotations

import warnings

from pytest_physpipe.store.codecs import *  # noqa: F403 -- the moved module's whole public surface
from pytest_physpipe.store.codecs import __all__  # noqa: F401 -- `import *` from this shim sees the same names

warnings.warn(
    "pytest_physpipe.codecs moved to pytest_physpipe.store.codecs; import the extension contracts "
    "from pytest_physpipe instead (this path goes away in the next release)",
    DeprecationWarning,
    stacklevel=2,
)
