"""The application layer: the `zoo` command, at the top of the import graph.

It imports `zoo` (models), `training`, `catalogue` and `serving`; none of them imports it.
"""
