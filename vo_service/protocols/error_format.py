"""Which form an error of SODA ``/sync`` takes: text/plain, or the DALI error VOTable.

SODA 1.0 §5.2 says sync errors should be ``text/plain``, and pyvo shows its users only
text/plain error bodies, so that is the default. A client gets the DALI error VOTable
when it asks for one: ``Accept`` names a VOTable type preferred over text/plain, or
``RESPONSEFORMAT`` names a VOTable type (DESIGN "Errors", docs/soda.md).

The handlers of :mod:`vo_service.protocols.dali` read the choice from the request scope
(``PLAIN_ERRORS_KEY``), so that errors raised anywhere while answering the request,
server errors included, take the same form.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import Scope

from vo_service.products.parameters import FORMAT_ALIASES, VOTABLE_MIME

PLAIN_ERRORS_KEY = "vo_plain_errors"
# Accept types that ask for a VOTable. application/xml is left out: browsers list it in
# every Accept header, and a person reading an error in a browser wants the text.
VOTABLE_ACCEPT_TYPES = frozenset({VOTABLE_MIME, "text/xml"})


def _media_ranges(accept: str) -> list[tuple[str, float]]:
    """(media range lower-cased, q) of an Accept header, in order; bad q values are 0."""
    ranges = []
    for item in accept.split(","):
        media, *parameters = (part.strip() for part in item.split(";"))
        if not media:
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        ranges.append((media.lower(), quality))
    return ranges


def accept_prefers_votable(accept: str | None) -> bool:
    """Whether an Accept header prefers a VOTable type to text/plain.

    Each side takes its best matching range by (q, specificity, earlier listed first):
    a VOTable type must be named explicitly; text/plain is matched by ``text/plain``,
    ``text/*`` or ``*/*``. No Accept header, or ``*/*``, means text/plain.
    """
    best_votable: tuple[float, int, int] | None = None
    best_plain: tuple[float, int, int] | None = None
    specificity = {"text/plain": 2, "text/*": 1, "*/*": 0}
    for position, (media, quality) in enumerate(_media_ranges(accept or "")):
        rank = (quality, 2 if media in VOTABLE_ACCEPT_TYPES else specificity.get(media, -1),
                -position)
        if media in VOTABLE_ACCEPT_TYPES and quality > 0:
            best_votable = max(best_votable or rank, rank)
        elif media in specificity and quality > 0:
            best_plain = max(best_plain or rank, rank)
    if best_votable is None:
        return False
    return best_plain is None or best_votable > best_plain


def names_votable(response_formats: Iterable[str]) -> bool:
    """Whether any RESPONSEFORMAT value names a VOTable type (``votable``, its MIME type
    with or without parameters, or an alias of it)."""
    for text in response_formats:
        bare = text.split(";")[0].strip().lower()
        if FORMAT_ALIASES.get(bare, bare) == VOTABLE_MIME:
            return True
    return False


def sync_wants_plain_errors(scope: Scope) -> bool:
    """Whether an error answered before the endpoint runs (CORS preflight, authentication)
    takes the text/plain form: the request is for SODA ``/sync`` and does not prefer a
    VOTable in ``Accept``."""
    if not scope.get("path", "").rstrip("/").endswith("/sync"):
        return False
    return not accept_prefers_votable(Headers(scope=scope).get("accept"))
