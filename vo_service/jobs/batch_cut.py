"""One unit of batch work: the targets of one image, cut in one pass, through the cache.

Runs on a worker thread. Stamps live in the cutout cache; the outcome of each
(target, image) — status, pixel box, message — is remembered, with its stamps' cache entries
if it had stamps, else in the job store (:mod:`vo_service.jobs.outcome_memo`), so a target
met before is answered without opening the image: from the cache if it had a stamp, at
once if it had none. A unit met as a whole before (the same catalog, run again) is answered
from its table of contents (:mod:`vo_service.jobs.unit_contents`). Each stamp of the unit,
cut or found, goes straight into the job's bundle (a :class:`StampSink`: the bundle
itself, or a part of it written by a remote worker); the job serves its stamps from there,
so a job makes no file per stamp.
"""

from __future__ import annotations

import contextlib
import hashlib
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from vo_service.cache import (
    CachedFile,
    CutoutCache,
    canonical_json,
    pack_layout,
    read_pack_ranges,
    source_identity,
)
from vo_service.engine.batch import IMAGE_FAILED, ImageTask, cut_unit
from vo_service.engine.cutout import StampStatus
from vo_service.engine.executors import pickled_as_arguments
from vo_service.engine.preview import render_preview
from vo_service.engine.reading import OpenImage, OpenImagePool
from vo_service.engine.spectral import CutoutError
from vo_service.jobs.outcome_memo import (
    PixelRanges,
    RememberedOutcome,
    outcome_of_stamp,
    stamp_meta,
)
from vo_service.jobs.unit_contents import (
    CONTENTS_VERSION,
    UnitEntry,
    contents_bytes,
    read_contents,
)
from vo_service.products import stitching
from vo_service.products.job_products import ProductPlan, product_unit_results
from vo_service.shapes import CenterSize

SUFFIX = {"fits": ".fits", "png": ".png"}
# Targets whose cached stamps are opened at once (one index query and transaction each).
OPEN_TARGETS = 64
# Bump when the bytes of a stamp change for the same request (old entries are then unused).
# 2: previews of physical values (BSCALE/BZERO, BLANK as missing); 3: keys hashed in parts;
# 4: an image's keys share their first digits
KEY_VERSION = 4
# Hex digits of an image's own digest that begin each of its keys: a unit's index rows
# then lie side by side in the cache index (and the job store), so recording 256 of them
# rewrites a few pages, not one page each (SQLite's time per unit roughly halved).
IMAGE_DIGITS = 16


class OutcomeMemory(Protocol):
    """Where outcomes of (target, image) pairs without stamps are remembered (the job
    store; also stamps' outcomes of earlier versions)."""

    def stamp_outcomes(self, keys: list[str]) -> dict[str, RememberedOutcome]: ...

    def save_stamp_outcomes(self, outcomes: dict[str, RememberedOutcome]) -> None: ...


class StampSink(Protocol):
    """Where a unit puts its stamps: a ZIP member each (``ZipAppender``, ``ZipStream``)."""

    def add(self, name: str, chunks: Iterable[bytes | memoryview],
            crc: int | None = None) -> None: ...


class AppendingSink(StampSink, Protocol):
    """A sink appending its members to a file on this machine (``ZipAppender``): the
    cache records new stamps where they lie in it instead of copying them."""

    def flush(self) -> None: ...

    def data_offsets(self) -> dict[str, int]: ...


@pickled_as_arguments
@dataclass(frozen=True)
class Target:
    """One usable catalog row: position (ICRS deg) and stamp size."""

    row: int
    target_id: str
    ra: float
    dec: float
    size: float
    unit: str

    @property
    def region(self) -> CenterSize:
        return CenterSize(self.ra, self.dec, self.size, self.size, self.unit)


@dataclass
class StampTask:
    """Targets on one image; each entry is (target, stem of its files in the job).
    ``product``: how to make a PSF or catalog product instead of cutting (None: an image)."""

    record: object
    entries: list[tuple[Target, str]]
    stitch: str | None = None  # resampling method of stitched stamps (None: plain cutouts)
    neighbours: tuple = ()  # the other tiles of the record's mosaic, for stitching
    product: ProductPlan | None = None

    def unit(self, regions: list[CenterSize], max_pixels: int) -> ImageTask:
        """The engine's unit of work cutting ``regions`` from this task's image."""
        return ImageTask(self.record.path, self.record.hdu, tuple(regions),
                         max_pixels=max_pixels, origfile=self.record.path.name)


@pickled_as_arguments
@dataclass
class Outcome:
    """What became of one (target, image): status, box, and stamps by format (path in the
    bundle, size)."""

    target: Target
    status: StampStatus
    message: str = ""
    ranges: PixelRanges | None = None
    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    from_cache: bool = False


class StampKeys:
    """Cache keys of the stamps of one source image's targets.

    The canonical description of what the image contributes (its identity on disk, and
    for stitched stamps the method and the neighbours, for a PSF or catalog product what
    else makes its bytes) is hashed once; each target's keys continue that hash with the
    target's position and size, then with what is keyed: the outcome, or a stamp format
    and its rendering. Every key begins with ``IMAGE_DIGITS`` digits of the image's own
    digest, the rest from the continued hash.
    """

    def __init__(self, identity: dict, formats: tuple[str, ...], stitch: dict | None = None,
                 product: dict[str, object] | None = None) -> None:
        request = {"product": "batch-stamp", "version": KEY_VERSION, "source": identity,
                   "pad": False, "stitch": stitch, "made": product}
        self._image = hashlib.sha256(canonical_json(request) + b"|")
        self._prefix = self._image.hexdigest()[:IMAGE_DIGITS]
        self._formats = list(formats)
        self._what = {"outcome": b"|" + canonical_json({"what": "outcome"})}
        for fmt in formats:
            render = {} if fmt == "fits" else {"stretch": "linear", "limits": "zscale"}
            self._what[fmt] = b"|" + canonical_json({"what": "stamp", "format": fmt,
                                                 "render": render})

    def of(self, target: Target) -> dict[str, str]:
        """The keys of ``target``'s outcome and of each of its stamp formats."""
        hashed = self._image.copy()
        hashed.update(canonical_json([target.ra, target.dec, target.size, target.unit]))
        keys = {}
        for what, suffix in self._what.items():
            key = hashed.copy()
            key.update(suffix)
            keys[what] = self._prefix + key.hexdigest()[IMAGE_DIGITS:]
        return keys

    def unit(self, targets: Sequence[Target], max_pixels: int) -> str:
        """The key of the table of contents of a unit cutting ``targets``, in this order."""
        hashed = self._image.copy()
        hashed.update(canonical_json({
            "what": "unit-contents", "version": CONTENTS_VERSION, "formats": self._formats,
            "max_pixels": max_pixels,
            "targets": [[t.ra, t.dec, t.size, t.unit] for t in targets]}))
        return self._prefix + hashed.hexdigest()[IMAGE_DIGITS:]


def cut_task(task: StampTask, cache: CutoutCache, memory: OutcomeMemory,
             formats: tuple[str, ...], max_pixels: int, sink: StampSink,
             appended_to: Path | None = None) -> list[Outcome]:
    """Cut (or find in the cache) every target of one image; add its stamps to ``sink``.

    The cache index and the outcome memory are read and written once per task (one query,
    one transaction; reads per part of ``OPEN_TARGETS`` targets), not once per stamp; a
    target met before with stamps is answered from what their entries keep, one without
    from the outcome memory. ``appended_to``: the file ``sink`` (then an
    :class:`AppendingSink`) appends to; new stamps are cached where they lie in it, not
    copied (:meth:`vo_service.cache.CutoutCache.put_linked`).
    """
    record = task.record
    try:
        identity = source_identity(record.path, record.hdu)
        stitch = _stitch_key(task)
    except OSError as exc:
        return [Outcome(t, StampStatus.ERROR, f"the image cannot be read: {exc}")
                for t, _ in task.entries]
    made = task.product.key_parts() if task.product is not None else None
    keyer = StampKeys(identity, formats, stitch, made)
    unit_key = keyer.unit([target for target, _ in task.entries], max_pixels)
    if (outcomes := _from_unit_contents(cache, unit_key, task.entries, sink)) is not None:
        return outcomes
    keyed = [(target, stem, keyer.of(target)) for target, stem in task.entries]
    outcomes: list[Outcome] = []
    misses = []
    for start in range(0, len(keyed), OPEN_TARGETS):  # bounded open files (large stamps)
        part = keyed[start:start + OPEN_TARGETS]
        opened = cache.open_many([keys[fmt] for _, _, keys in part for fmt in formats])
        try:
            remembered = {keys["outcome"]: _kept_with_stamps(opened, keys, formats)
                          for _, _, keys in part}
            if unknown := [key for key, outcome in remembered.items() if outcome is None]:
                remembered.update(memory.stamp_outcomes(unknown))  # without stamps, or old
            for target, stem, keys in part:
                outcome = None
                if (known := remembered.get(keys["outcome"])) is not None:
                    outcome = _from_cache(opened, target, stem, keys, known, formats, sink)
                if outcome is None:
                    misses.append((target, stem, keys))
                else:
                    outcomes.append(outcome)
        finally:
            for cached in opened.values():
                if cached is not None:
                    cached.close()
    if misses:
        whole = len(misses) == len(keyed)  # the unit met none before: it gets a table
        linked = (appended_to, sink) if appended_to is not None else None
        outcomes.extend(_cut_misses(record, misses, cache, memory, formats, max_pixels,
                                    sink, task, unit_key if whole else None, linked))
    return outcomes


def _from_unit_contents(cache: CutoutCache, key: str, entries: list[tuple[Target, str]],
                        sink: StampSink) -> list[Outcome] | None:
    """The outcomes of a unit met before, from its table of contents, its stamps (read in
    one piece and checked) added to ``sink``; None without a table that holds (nothing
    is added then)."""
    cached = cache.open(key)
    if cached is None:
        return None
    contents = read_contents(b"".join(cached.iter_chunks()), len(entries))
    if contents is None:
        return None
    try:
        pack = cached.path if contents.pack is None else cache.pack_path(contents.pack)
    except ValueError:  # not a pack name
        return None
    pieces = read_pack_ranges(pack, [stamp[1:] for entry in contents.entries
                                     for stamp in entry.stamps])
    if pieces is None:  # a stamp evicted with its pack, or damaged: target by target
        return None
    outcomes = []
    for (target, stem), entry in zip(entries, contents.entries, strict=True):
        outcome = Outcome(target, entry.status, entry.message, entry.ranges,
                          from_cache=True)
        for fmt, offset, size, crc in entry.stamps:
            relative = stem + SUFFIX[fmt]
            sink.add(relative, (pieces[offset],), crc=crc)
            outcome.files[fmt] = (relative, size)
        outcomes.append(outcome)
    return outcomes


def _kept_with_stamps(opened: dict[str, CachedFile | None], keys: dict[str, str],
                      formats: tuple[str, ...]) -> RememberedOutcome | None:
    """The outcome a target's stamps keep with their cache entries, if all are there."""
    stamps = [opened.get(keys[fmt]) for fmt in formats]
    if any(stamp is None for stamp in stamps):
        return None
    return outcome_of_stamp(stamps[0].meta)


def _from_cache(opened: dict[str, CachedFile | None], target: Target, stem: str,
                keys: dict[str, str], remembered: RememberedOutcome,
                formats: tuple[str, ...], sink: StampSink) -> Outcome | None:
    outcome = Outcome(target, remembered.status, remembered.message, remembered.ranges,
                      from_cache=True)
    if not remembered.has_stamp:
        return outcome
    if any(opened.get(keys[fmt]) is None for fmt in formats):  # evicted: cut again
        return None
    for fmt in formats:
        relative = stem + SUFFIX[fmt]
        cached = opened[keys[fmt]]
        sink.add(relative, cached.iter_chunks(), crc=cached.crc32)  # verified by the cache
        outcome.files[fmt] = (relative, cached.size)
    return outcome


def _stitch_key(task: StampTask) -> dict | None:
    """The stitching part of the stamp keys of a task (raises OSError for an unreadable
    neighbour)."""
    if not task.stitch:
        return None
    return {"method": task.stitch, "neighbours": [source_identity(other.path, other.hdu)
                                                  for other in task.neighbours]}


def _cut_misses(record, misses, cache: CutoutCache, memory: OutcomeMemory,
                formats: tuple[str, ...], max_pixels: int, sink: StampSink,
                task: StampTask, unit_key: str | None = None,
                linked: tuple[Path, AppendingSink] | None = None) -> list[Outcome]:
    """Cut the targets ``misses`` (target, stem, keys); with ``unit_key`` (they are the
    whole unit, in its order), store the unit's table of contents with its stamps;
    ``linked``: (file, sink appending to it), see :func:`cut_task`."""
    try:
        regions = [t.region for t, _, _ in misses]
        if task.product is not None:  # a PSF or a catalog: made per target, not cut
            results = product_unit_results(record, task.product, regions, max_pixels)
        elif task.stitch:
            with OpenImage(record.path, record.hdu) as image, \
                    contextlib.closing(OpenImagePool(size=8)) as neighbour_images:
                results = stitching.cut_stitched(
                    neighbour_images, image, record, task.neighbours, regions,
                    method=task.stitch, max_pixels=max_pixels)
        else:  # the engine's unit cutter; an image that cannot answer gives 'error's
            results = list(cut_unit(task.unit(regions, max_pixels)))
    except (CutoutError, OSError, ValueError) as exc:
        # the image cannot answer now: report it, remember nothing
        return [Outcome(t, StampStatus.ERROR, f"{type(exc).__name__}: {exc}")
                for t, _, _ in misses]
    outcomes: list[Outcome] = []
    learned: dict[str, RememberedOutcome] = {}
    pending = _PendingStamps(cache, linked)
    table: dict[int, tuple[Outcome, list[tuple[str, str]]]] = {}  # index -> (fmt, key)s
    for result in results:
        target, stem, keys = misses[result.index]
        ranges = result.pixel_box.ranges if result.pixel_box else None
        outcome = Outcome(target, result.status, result.message, ranges)
        if images := stitching.stitched_images(result):
            outcome.message = stitching.describe_sources(images)
        stamp_keys: list[tuple[str, str]] = []
        stamps = []
        if result.has_stamp:
            for fmt in formats:
                try:
                    content = result.fits_bytes() if fmt == "fits" else render_preview(
                        result.physical())  # BSCALE/BZERO applied, BLANK as missing
                except ValueError as exc:  # e.g. a preview of an empty stamp
                    outcome.message = f"no {fmt.upper()} preview: {exc}"
                    continue
                relative = stem + SUFFIX[fmt]
                crc = zlib.crc32(content)  # once, for the bundle and the cache
                sink.add(relative, (content,), crc=crc)
                outcome.files[fmt] = (relative, len(content))
                stamps.append((keys[fmt], content, crc, relative))
                stamp_keys.append((fmt, keys[fmt]))
        if result.reason != IMAGE_FAILED:  # the image may answer next time: remember nothing
            known = RememberedOutcome(outcome.status, outcome.message, ranges,
                                      result.has_stamp)
            if result.has_stamp:  # kept with the stamps' entries
                meta = stamp_meta(known)
                for key, content, crc, relative in stamps:
                    pending.add(key, content, crc, relative, meta)
            else:
                learned[keys["outcome"]] = known
            table[result.index] = (outcome, stamp_keys)
        outcomes.append(outcome)
    if unit_key is not None and len(table) == len(misses):
        pending.flush(unit_key, _table_of(table))
    else:
        pending.flush()
    memory.save_stamp_outcomes(learned)
    return outcomes


def _table_of(table: dict[int, tuple[Outcome, list[tuple[str, str]]]]
              ) -> Callable[[dict[str, tuple[int, int, int]], str | None], bytes]:
    """The unit's table of contents, given where its stamps lie in their pack (key ->
    offset, size, crc32) and the pack's name (None: the table's own pack)."""
    def contents(where: dict[str, tuple[int, int, int]], pack: str | None) -> bytes:
        return contents_bytes([
            UnitEntry(outcome.status, outcome.message, outcome.ranges,
                      tuple((fmt, *where[key]) for fmt, key in stamp_keys))
            for outcome, stamp_keys in (table[index] for index in range(len(table)))], pack)
    return contents


class _PendingStamps:
    """New stamps stored in the cache: recorded where they lie in the job's bundle
    (``linked``: the bundle's path and the sink appending to it), else copied a batch at
    a time, one pack file and one index transaction per batch, bounded in bytes so large
    stamps do not pile up."""

    MAX_BYTES = 32 * 1024 * 1024

    def __init__(self, cache: CutoutCache,
                 linked: tuple[Path, AppendingSink] | None = None) -> None:
        self.cache = cache
        self._linked = linked
        self._items: list[tuple[str, bytes]] = []
        self._crcs: dict[str, int] = {}
        self._metas: dict[str, str] = {}  # the outcome each stamp keeps (stamp_meta)
        self._members: dict[str, tuple[str, int]] = {}  # key -> (member name, size)
        self._bytes = 0
        self._batches = 0

    def add(self, key: str, content: bytes, crc: int, member: str, meta: str) -> None:
        """Store ``content`` (whose CRC-32 is ``crc``, the sink's member ``member``) under
        ``key``, keeping ``meta`` with it, with the next batch."""
        self._crcs[key] = crc
        self._metas[key] = meta
        if self._linked is not None:
            self._members[key] = (member, len(content))
            return
        self._items.append((key, content))
        self._bytes += len(content)
        if self._bytes >= self.MAX_BYTES:
            self.flush()

    def flush(self, contents_key: str | None = None,
              contents: Callable[[dict[str, tuple[int, int, int]], str | None], bytes]
              | None = None) -> None:
        """Store the pending stamps; with ``contents_key``, and if they are all the stamps
        stored (one pack), also a table of contents, in the pack of copies (last) or beside
        the linked one: ``contents`` makes its bytes from where each stamp lies (key ->
        offset, size, crc32) and the pack's name."""
        if self._linked is not None and self._flush_linked(contents_key, contents):
            return
        if contents_key is not None and contents is not None and not self._batches:
            where = {key: (offset, len(content), self._crcs[key])
                     for key, (offset, content) in pack_layout(self._items).items()}
            self._items.append((contents_key, contents(where, None)))
        if not self._items:
            return
        self.cache.put_pack(self._items, self._crcs, self._metas)
        self._items, self._crcs, self._metas, self._bytes = [], {}, {}, 0
        self._batches += 1

    def _flush_linked(self, contents_key: str | None, contents: Callable | None) -> bool:
        """Record the stamps where the sink put them in its file, and the table of
        contents beside them; False if the cache cannot link the file (the stamps, read
        back, are then pending as copies) or there are none (the table goes alone)."""
        path, sink = self._linked
        self._linked = None
        if not self._members:
            return False
        sink.flush()
        offsets = sink.data_offsets()
        entries = [(key, offsets[member], size, self._crcs[key])
                   for key, (member, size) in self._members.items()]
        beside = None
        if contents_key is not None and contents is not None:
            where = {key: (offset, size, crc) for key, offset, size, crc in entries}

            def beside(pack: str) -> list[tuple[str, bytes]]:
                return [(contents_key, contents(where, pack))]

        # the job's bundle, with the table naming it in the same transaction
        pack = self.cache.put_linked(path, entries, group=path.parent.name, beside=beside,
                                     metas=self._metas)
        if pack is None:  # another file system: copies
            pieces = read_pack_ranges(path, [entry[1:] for entry in entries])
            if pieces is None:  # the file changed under the unit: nothing to cache
                return True
            self._items = [(key, bytes(pieces[offset])) for key, offset, _, _ in entries]
            return False
        return True
