"""A small ADQL dialect for sqlglot: the default SQL dialect plus ``TOP`` (ADQL 2.1 §2.2).

Everything else ADQL needs parses in sqlglot's default dialect; what ADQL does not allow
(LIMIT, several statements, unknown functions) is refused after parsing
(:mod:`vo_service.products.adql.translate`), where a precise message can be given.
"""

from __future__ import annotations

from sqlglot import tokens
from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import TokenType


class ADQL(Dialect):
    """ADQL as sqlglot reads it: ``SELECT TOP n``, ``LOG(x)`` is the natural logarithm."""

    LOG_BASE_FIRST = True
    LOG_DEFAULTS_TO_LN = True

    class Tokenizer(tokens.Tokenizer):
        KEYWORDS = {**tokens.Tokenizer.KEYWORDS, "TOP": TokenType.TOP}
