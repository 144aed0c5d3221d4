"""The store: one immutable, checksummed entry per provenance key, on disk.

What it promises: an entry appears whole or not at all (built beside its final place and
renamed in); a hit takes no lock and verifies what it serves; a miss is computed once across
processes and hosts (per-key locks, :mod:`.locks`); loading never runs code unless the entry's
signature verifies (:mod:`.codecs`). Housekeeping (:mod:`.cli`) never touches anything outside
the store's root.
"""
