"""Batches: one open and one world->pixel call per image, streamed bundles, parallel
images, the Python API, and the demo archive end to end."""

from __future__ import annotations

import gc
import io
import os
import tarfile
import warnings
import zipfile

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS, FITSFixedWarning

import vo_service
from tests import fits_factory
from tests.test_engine_cutout import assert_wcs_round_trip
from vo_service.engine import geometry
from vo_service.engine.api import cut
from vo_service.engine.batch import (
    ImageTask,
    cut_many,
    cut_task,
    iter_cutouts,
    run_tasks,
    write_multi_extension,
    write_task_files,
)
from vo_service.engine.bundle import BundleWriter
from vo_service.engine.reading import OpenImage
from vo_service.shapes import CenterSize, Circle, Polygon

warnings.simplefilter("ignore", FITSFixedWarning)


def targets_on(path, count: int, seed: int = 1, hdu: int = 0) -> list[CenterSize]:
    with fits.open(path) as hdus:
        header = hdus[hdu].header
        wcs = WCS(header).celestial
        nx, ny = header["NAXIS1"], header["NAXIS2"]
    rng = np.random.default_rng(seed)
    sky = wcs.pixel_to_world(rng.uniform(-5, nx + 5, count), rng.uniform(-5, ny + 5, count))
    sky = sky.icrs
    return [CenterSize(float(ra) % 360, float(dec), 12, 9) for ra, dec in
            zip(sky.ra.deg, sky.dec.deg, strict=True)]


def test_many_regions_one_vectorized_world_to_pixel_call(tmp_path, monkeypatch):
    path = fits_factory.sip_image(tmp_path / "sip.fits")
    calls = []
    original = geometry.SkyToPixel.pixels

    def counting(self, ra, dec):
        calls.append(len(ra))
        return original(self, ra, dec)

    monkeypatch.setattr(geometry.SkyToPixel, "pixels", counting)
    regions = targets_on(path, 60) + [Circle(150.0, 2.2, 0.005),
                                      Polygon(((150.0, 2.2), (150.01, 2.2), (150.0, 2.21)))]
    results = cut_many(path, 0, regions, pad=True)
    assert len(calls) == 1 and calls[0] > len(regions)
    assert [r.index for r in results] == list(range(len(regions)))
    for region, result in zip(regions[::7], results[::7], strict=True):
        single = cut(path, 0, region, pad=True)
        assert single.status == result.status and single.pixel_box == result.pixel_box
        if single.has_stamp:
            assert np.array_equal(single.data, result.data, equal_nan=True)


def test_compressed_row_tiles_strip_reads_equal_plain_reads(tmp_path):
    plain = fits_factory.sip_image(tmp_path / "plain.fits")
    packed = fits_factory.compressed_copy(plain, tmp_path / "packed.fits")
    regions = targets_on(plain, 80, seed=3)  # 80 x 9 rows > 160 rows: strip mode
    with OpenImage(packed, 1) as image:
        assert image.tile_shape == (200, 1)
        strips = sorted(iter_cutouts(image, regions), key=lambda r: r.index)
    sections = [cut(packed, 1, region) for region in regions[:5]]
    plains = cut_many(plain, 0, regions)
    for strip, section, plain_result in zip(strips, sections + plains[5:], plains, strict=True):
        assert strip.status == plain_result.status == section.status
        if strip.has_stamp:
            assert np.array_equal(strip.data, plain_result.data)
            assert np.array_equal(section.data, plain_result.data)


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_bundle_streams_valid_fits_members(tmp_path, fmt):
    path = fits_factory.sip_image(tmp_path / "sip.fits")
    regions = targets_on(path, 20, seed=5)
    buffer = io.BytesIO()
    with BundleWriter(buffer, fmt) as bundle, OpenImage(path) as image:
        for result in iter_cutouts(image, regions):
            if result.has_stamp:
                bundle.add(f"stamp_{result.index:03d}.fits", result)
    expected = {r.index: r for r in cut_many(path, 0, regions) if r.has_stamp}
    buffer.seek(0)
    if fmt == "zip":
        with zipfile.ZipFile(buffer) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
    else:
        with tarfile.open(fileobj=buffer) as archive:
            members = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
    assert len(members) == len(expected) == bundle.count
    for name, payload in members.items():
        with fits.open(io.BytesIO(payload)) as hdus:
            hdus.verify("exception")
            assert np.array_equal(hdus[0].data, expected[int(name[6:9])].data)


def test_multi_extension_file_with_lookup_tables_keeps_each_wcs(real_data, tmp_path):
    """Each stamp's DPj/D2IMj EXTVER records point at its own (shifted) lookup tables."""
    path = real_data / "fits/images/dist_lookup.fits"
    with fits.open(path) as hdus:
        source = WCS(hdus[1].header, fobj=hdus)
    targets = [source.pixel_to_world(x, y).icrs for x, y in ((12, 10), (70, 60), (35, 85))]
    results = cut_many(path, 1, [CenterSize(t.ra.deg, t.dec.deg, 15, 15) for t in targets])
    out = write_multi_extension(results, tmp_path / "multi.fits",
                                extname=lambda r: f"STAMP{r.index}")
    with fits.open(out) as hdus:
        hdus.verify("exception")
        names = [hdu.name for hdu in hdus]
        assert names.count("WCSDVARR") == 6 and names.count("D2IMARR") == 3
        referenced = set()
        for result in results:
            stamp = hdus[f"STAMP{result.index}"]
            referenced.add(tuple(stamp.header[key] for key in
                                 ("DP1.EXTVER", "DP2.EXTVER", "D2IM1.EXTVER")))
            wcs = WCS(stamp.header, fobj=hdus)
            xs, ys = np.array([0.0, 14, 0, 14, 7]), np.array([0.0, 0, 14, 14, 7])
            expected = source.all_pix2world(xs + result.pixel_box.x0,
                                             ys + result.pixel_box.y0, 0)
            assert np.allclose(wcs.all_pix2world(xs, ys, 0), expected, rtol=0, atol=1e-10)
        assert len(referenced) == 3


def test_api_single_outfile_with_lookup_tables_keeps_each_wcs(real_data):
    """vo_service.cutout on a lookup-table file finds its image HDU without `hdu=` and
    every extension of the single file maps its corners to the source's sky."""
    path = real_data / "fits/images/dist_lookup.fits"
    with fits.open(path) as hdus:
        source = WCS(hdus[1].header, fobj=hdus)
    targets = SkyCoord([source.pixel_to_world(x, y).icrs for x, y in ((12, 10), (70, 60))])
    [hdus] = vo_service.cutout(path, targets, 11, single_outfile=True)
    stamps = [hdu for hdu in hdus if hdu.name.startswith("CUTOUT")]
    assert len(stamps) == 2
    for stamp in stamps:
        x0, y0 = stamp.header["CUTX0"] - 1, stamp.header["CUTY0"] - 1
        wcs = WCS(stamp.header, fobj=hdus)
        xs, ys = np.array([0.0, 10, 0, 10]), np.array([0.0, 0, 10, 10])
        assert np.allclose(wcs.all_pix2world(xs, ys, 0),
                           source.all_pix2world(xs + x0, ys + y0, 0), rtol=0, atol=1e-10)


@pytest.mark.parametrize("processes", [False, True])
def test_many_images_in_parallel_write_files(real_data, tmp_path, processes):
    names = ["fits/images/HorseHead.fits", "fits/images/gc_msx_e.fits",
             "fits/images/comp.fits", "fits/cubes/l1448_13co.fits"]
    tasks = [ImageTask(real_data / name, 1 if "comp" in name else 0,
                       tuple(targets_on(real_data / name, 4, hdu=1 if "comp" in name else 0)))
             for name in names]
    tasks.append(ImageTask(real_data / "fits/cubes/l1448_13co.fits", 0, tasks[-1].regions,
                           band=(2.7e-3, 2.8e-3)))  # cannot answer BAND: every row an error
    done = dict(run_tasks(tasks, write_task_files, workers=2, processes=processes,
                          args=(tmp_path,)))
    assert sorted(done) == list(range(len(tasks)))
    for records in done.values():
        assert [r.index for r in records] == [0, 1, 2, 3]
    assert all(r.status == "error" and "rest frequency" in r.message for r in done[4])
    written = [r.path for records in done.values() for r in records if r.path]
    assert written and all(p.exists() for p in written)
    with fits.open(written[0]) as hdus:
        assert "ORIGFILE" in hdus[0].header
    in_memory = dict(run_tasks(tasks[:2], cut_task, workers=2))
    assert len(in_memory[0]) == 4


def test_python_api_in_memory_to_files_and_single_file(real_data, tmp_path):
    files = [real_data / "fits/images/gc_2mass_k.fits", real_data / "fits/images/gc_msx_e.fits"]
    galactic = SkyCoord([359.94, 0.0] * u.deg, [-0.04, 0.0] * u.deg, frame="galactic")
    stamps = vo_service.cutout(files, galactic, 16)
    assert len(stamps) == 4 and all(s[0].data.shape == (16, 16) for s in stamps)
    reference = Cutout2D(fits.getdata(files[0]), galactic[0], 16,
                         wcs=WCS(fits.getheader(files[0])))
    assert np.array_equal(stamps[0][0].data, reference.data)
    paths = vo_service.cutout(files, (266.4, -28.93), (10, 20) * u.arcsec, output_dir=tmp_path)
    assert len(paths) == 2 and all(p.exists() for p in paths)
    single = vo_service.fits_cut(files, [(266.4, -28.93), (266.41, -28.92)], 8,
                                 output_dir=tmp_path)
    with fits.open(single) as hdus:
        assert len(hdus) == 5
    with pytest.warns(UserWarning, match="not cut"):
        assert vo_service.cutout(files[0], (10.0, 10.0), 8) == []


@pytest.mark.slow
def test_demo_archive_every_image_hdu(demo_archive):
    checked = 0
    for path in sorted(demo_archive.rglob("*.fits")):
        with fits.open(path) as hdus:
            for index, hdu in enumerate(hdus):
                if hdu.header.get("NAXIS", 0) < 2:
                    continue
                wcs = WCS(hdu.header, fobj=hdus)
                if not wcs.has_celestial:  # PSF model grids: stamps, not sky images
                    continue
                ny, nx = hdu.data.shape[-2:]
                target = wcs.celestial.pixel_to_world(nx * 0.3 + 0.21, ny * 0.6 - 0.17).icrs
                result = cut(path, index, CenterSize(target.ra.deg, target.dec.deg, 11, 7))
                assert result.status == "ok", (path.name, result.message)
                plane = hdu.data.reshape((-1, ny, nx))[0]
                reference = Cutout2D(plane, target, (7, 11), wcs=wcs.celestial)
                stamp = result.hdu.data.reshape((-1, 7, 11))[0]
                assert np.array_equal(stamp, reference.data, equal_nan=True), path.name
                assert_wcs_round_trip(result, wcs)
                checked += 1
    assert checked >= 20


def test_demo_archive_cube_band_and_epochs_time(demo_archive):
    (cube,) = demo_archive.rglob("*CUBE*.fits")
    header = fits.getheader(cube)
    centre = WCS(header).celestial.pixel_to_world(30, 30).icrs
    region = CenterSize(centre.ra.deg, centre.dec.deg, 10, 10)
    waves = WCS(header).spectral.pixel_to_world(np.arange(header["NAXIS3"])).to_value(u.m)
    result = cut(cube, 0, region, band=(waves[10], waves[19]))
    assert result.pixel_box.ranges[2] == (10, 20)
    assert cut(cube, 0, region, band=(3e-6, 4e-6)).status == "no-overlap"
    epochs = sorted(demo_archive.rglob("EPOCHS/*/*BGSUB*.fits"))
    mjds = [fits.getheader(path)["MJD-OBS"] for path in epochs]
    hits = [cut(path, 0, region_near(path), time=(mjds[1] - 0.01, mjds[1] + 0.01)).status
            for path in epochs]
    assert hits.count("ok") == 1 and hits[1] == "ok"


def region_near(path) -> CenterSize:
    header = fits.getheader(path)
    centre = WCS(header).pixel_to_world(header["NAXIS1"] / 2, header["NAXIS2"] / 2).icrs
    return CenterSize(centre.ra.deg, centre.dec.deg, 8, 8)


def test_zip64_records_read_back(tmp_path):
    from vo_service.engine.bundle import ZipStream

    members = {f"m{i}.fits": bytes([i]) * (700 + i) for i in range(5)}
    target = tmp_path / "big.zip"
    archive = ZipStream(target, zip64_from=1000)  # offsets past 1000 use ZIP64 records
    for name, payload in members.items():
        archive.add(name, [payload[:100], memoryview(payload[100:])])
    archive.close()
    with zipfile.ZipFile(target) as readback:
        assert readback.testzip() is None
        assert {name: readback.read(name) for name in readback.namelist()} == members


@pytest.mark.parametrize("workers", [1, 2])
def test_bundle_tasks_one_zip_from_many_tasks(real_data, tmp_path, workers):
    from vo_service.engine.batch import bundle_tasks

    image = real_data / "fits/images/HorseHead.fits"
    regions = targets_on(image, 12, seed=9)
    tasks = [ImageTask(image, 0, tuple(regions[:6]), names=tuple(f"a{i}.fits" for i in range(6))),
             ImageTask(image, 0, tuple(regions[6:]), names=tuple(f"b{i}.fits" for i in range(6))),
             ImageTask(real_data / "fits/images/comp.fits", 1, tuple(targets_on(
                 real_data / "fits/images/comp.fits", 3, hdu=1)))]
    done = bundle_tasks(tasks, tmp_path / "all.zip", workers=workers)
    expected = cut_many(image, 0, regions)
    with zipfile.ZipFile(tmp_path / "all.zip") as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        for task_index, prefix in ((0, "a"), (1, "b")):
            for record in done[task_index]:
                reference = expected[record.index + 6 * task_index]
                assert record.status == reference.status
                if record.path:
                    assert str(record.path) == f"{prefix}{record.index}.fits"
                    payload = archive.read(str(record.path))
                    assert payload == reference.fits_bytes()
        assert sum(1 for name in names if name.startswith("comp_h1_")) == sum(
            1 for record in done[2] if record.path)
    assert not list(tmp_path.glob(".*.part"))


def test_zip_parts_append_into_files_and_memory(tmp_path):
    from vo_service.engine.bundle import ZipStream

    part_path = tmp_path / "one.part"
    part = ZipStream(part_path)
    part.add("x.fits", [b"abc" * 100])
    entries = part.close_part()
    for target in (tmp_path / "out.zip", io.BytesIO()):
        archive = ZipStream(target)
        archive.add("first.fits", [b"first"])
        archive.append_part(part_path, entries)
        archive.add("last.fits", [b"last"])
        archive.close()
        source = target if isinstance(target, io.BytesIO) else open(target, "rb")  # noqa: SIM115
        with source, zipfile.ZipFile(source) as readback:
            assert readback.read("x.fits") == b"abc" * 100
            assert readback.read("last.fits") == b"last"


def test_written_files_follow_the_umask(real_data, tmp_path):
    """Stamps, multi-extension files, bundles and CLI outputs are 0644 under umask 022
    (temporary files must not leave them owner-only)."""
    from vo_service.cli import main

    path = real_data / "fits/images/HorseHead.fits"
    regions = targets_on(path, 2)
    previous = os.umask(0o022)
    try:
        results = cut_many(path, 0, regions)
        written = [results[0].write(tmp_path / "one.fits"),
                   write_multi_extension(results, tmp_path / "multi.fits"),
                   *vo_service.cutout(path, [(r.ra, r.dec) for r in regions], 9,
                                      output_dir=tmp_path / "api")]
        with BundleWriter(tmp_path / "bundle.zip") as bundle:
            bundle.add("a.fits", results[0])
        written.append(tmp_path / "bundle.zip")
        assert main(["cutout", str(path), "--ra", str(regions[0].ra), "--dec",
                     str(regions[0].dec), "--size", "9", "--format", "both",
                     "--out", str(tmp_path / "cli"), "--quiet"]) == 0
        written += sorted((tmp_path / "cli").iterdir())
    finally:
        os.umask(previous)
    assert len(written) >= 7
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {
        p.name: "0o644" for p in written}


def _frozen_objects(task: object) -> int:
    return gc.get_freeze_count()


@pytest.mark.parametrize(("workers", "processes"), [(1, False), (2, False), (2, True)])
def test_batches_keep_the_collector_off_the_existing_heap(workers, processes):
    """While a batch runs, the objects that existed before it are frozen, in this process
    (its full collections, e.g. set off by unpickled results, walk only new objects) and in
    forked workers (whose collections would otherwise copy every inherited page); after
    the run they are collectable again."""
    assert gc.get_freeze_count() == 0
    seen_by_parent = []
    for _, seen_by_worker in run_tasks(list(range(4)), _frozen_objects, workers=workers,
                                       processes=processes):
        seen_by_parent.append(gc.get_freeze_count())
        assert seen_by_worker > 1000
    assert min(seen_by_parent) > 1000
    assert gc.get_freeze_count() == 0


def test_the_heap_stays_frozen_until_the_outermost_batch_ends():
    """Batches running at once (threads of a server) freeze the heap once: one ending
    does not unfreeze it under another."""
    outer = run_tasks(list(range(3)), _frozen_objects, workers=2)
    next(outer)
    assert dict(run_tasks([0], _frozen_objects))[0] > 1000
    assert gc.get_freeze_count() > 1000
    assert len(list(outer)) == 2
    assert gc.get_freeze_count() == 0


def _append_members(target: str, prefix: str) -> list:
    from vo_service.engine.bundle import ZipAppender

    appender = ZipAppender(target, buffer_bytes=700)  # a write every few members
    for number in range(40):
        appender.add(f"{prefix}{number}.fits", [prefix.encode() * (50 + number)])
    return appender.close()


def test_zip_appenders_in_several_processes_fill_one_archive(tmp_path):
    """Workers append concurrently; every member lands whole and the directory finds it."""
    from concurrent.futures import ProcessPoolExecutor

    from vo_service.engine.bundle import ZipStream

    target = tmp_path / "shared.zip"
    archive = ZipStream(target)
    archive.add("first.fits", [b"parent"])
    archive.flush()
    with ProcessPoolExecutor(3) as pool:
        for entries in pool.map(_append_members, [str(target)] * 3, "abc"):
            archive.adopt(entries)
    archive.add("last.fits", [b"after the workers"])
    archive.close()
    with zipfile.ZipFile(target) as readback:
        assert readback.testzip() is None
        assert len(readback.namelist()) == 2 + 3 * 40
        for prefix in "abc":
            for number in range(40):
                assert readback.read(f"{prefix}{number}.fits") == prefix.encode() * (50 + number)
        assert readback.read("first.fits") == b"parent"
        assert readback.read("last.fits") == b"after the workers"


def test_zip_appender_writes_a_few_members_at_a_time(tmp_path, monkeypatch):
    """Appenders write at most APPEND_BYTES at a time (megabyte writes cost the kernel
    several times more per byte); a larger member goes out alone and whole."""
    from vo_service.engine import bundle

    sizes = []
    real_writev = os.writev

    def recording(fd, buffers):
        sizes.append(real_writev(fd, buffers))
        return sizes[-1]

    monkeypatch.setattr(bundle.os, "writev", recording)
    target = tmp_path / "small.zip"
    archive = bundle.ZipStream(target)
    archive.flush()
    appender = bundle.ZipAppender(target)
    members = {f"s{number}.fits": bytes([number]) * (bundle.APPEND_BYTES // 6)
               for number in range(60)}  # five to a write
    members["large.fits"] = b"L" * (3 * bundle.APPEND_BYTES)
    for name, payload in members.items():
        appender.add(name, [payload])
    archive.adopt(appender.close())
    archive.close()
    local_header = 30 + len("large.fits")
    assert len(sizes) > 10
    assert [size for size in sizes if size > bundle.APPEND_BYTES] == [
        local_header + 3 * bundle.APPEND_BYTES]
    with zipfile.ZipFile(target) as readback:
        assert readback.testzip() is None
        assert {name: readback.read(name) for name in readback.namelist()} == members


def test_a_member_whose_crc_is_known_is_not_checksummed_again(tmp_path, monkeypatch):
    """A stamp verified by the cache comes with its CRC-32, which the ZIP header takes as
    it is (reading the archive back checks it); other members are checksummed here."""
    from vo_service.engine import bundle

    payloads = {"known.fits": b"K" * 5000, "computed.fits": b"C" * 5000}
    target = tmp_path / "crc.zip"
    archive = bundle.ZipStream(target)
    archive.flush()
    computed = []
    real_crc32 = bundle.zlib.crc32
    monkeypatch.setattr(bundle.zlib, "crc32", lambda data, start=0: computed.append(
        bytes(data[:1])) or real_crc32(data, start))
    appender = bundle.ZipAppender(target)
    appender.add("known.fits", [payloads["known.fits"]], crc=real_crc32(b"K" * 5000))
    appender.add("computed.fits", [payloads["computed.fits"]])
    archive.adopt(appender.close())
    archive.close()
    assert computed == [b"C"]
    with zipfile.ZipFile(target) as readback:
        assert readback.testzip() is None
        assert {name: readback.read(name) for name in readback.namelist()} == payloads


@pytest.mark.parametrize("second_write", ["fails", "succeeds"])
def test_an_append_cut_short_by_a_full_disk_says_it_is_the_disk(tmp_path, monkeypatch,
                                                                 second_write):
    """A worker's append that the kernel cuts short (the disk or quota ran out) fails with
    the disk's own error, so that the job reports a storage failure ("retry later"), not a
    bug; were the rest written after all, the members may be split by another process's
    append, and that is an I/O error too."""
    import errno

    from vo_service.engine import bundle
    from vo_service.errors import storage_failure

    target = tmp_path / "full.zip"
    bundle.ZipStream(target).close()
    appender = bundle.ZipAppender(target)
    appender.add("s.fits", [b"S" * 5000])
    monkeypatch.setattr(bundle.os, "writev", lambda fd, buffers: 1000)

    def write(fd, data):  # noqa: ANN001, ANN202
        if second_write == "fails":
            raise OSError(errno.ENOSPC, "No space left on device")
        return len(data)

    monkeypatch.setattr(bundle.os, "write", write)
    with pytest.raises(OSError) as raised:
        appender.flush()
    assert raised.value.errno == (errno.ENOSPC if second_write == "fails" else errno.EIO)
    assert storage_failure(raised.value) is not None
    assert appender.entries == []  # nothing of it is listed
