"""Golden snapshots of physics metrics, compared within tolerances.

``physics_snapshot`` is a syrupy ``SnapshotAssertion`` using this package's extension; the
numeric comparison itself is the pure :mod:`pytest_physpipe.tolerance`. Goldens are readable
text files with full-precision floats, large arrays in binary sidecars.
"""
