"""ADQL 2.0/2.1 → SQLite SQL for TAP: parsing (sqlglot with a small ADQL dialect), checks
(one SELECT, allow-listed syntax and functions, known tables and columns) and the rewrite of
geometry into the SQLite functions of :mod:`vo_service.archive.tap_query`.

Pure library: no HTTP, no jobs; used by the TAP sync endpoint and by TAP jobs.
"""

from vo_service.products.adql.errors import AdqlError
from vo_service.products.adql.translate import Translation, translate

__all__ = ["AdqlError", "Translation", "translate"]
