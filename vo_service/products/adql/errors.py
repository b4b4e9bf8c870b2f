"""The one error of the ADQL layer: what is wrong with a query, and where."""

from __future__ import annotations


class AdqlError(ValueError):
    """A query that is not ADQL this service runs; ``line``/``column`` (1-based) locate it."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None
                 ) -> None:
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(f"{message}{where}")
        self.line = line
        self.column = column
