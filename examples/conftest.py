"""Make the stages in stages.py visible to every test in this folder.

Listing a module in ``pytest_plugins`` is how pytest picks up fixtures declared outside a
conftest; ``@stage`` functions are fixtures, so this is all it takes.
"""

pytest_plugins = ["stages"]
