"""The one batch pipeline: the planner (targets x images -> per-image units) and the unit
cutter, as the Python API, the CLI and catalog jobs use them."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
from astropy.wcs import FITSFixedWarning

from tests import fits_factory
from tests.test_engine_batch import targets_on
from vo_service.engine.batch import IMAGE_FAILED, cut_many, cut_unit, plan_units
from vo_service.engine.reading import OpenImagePool

warnings.simplefilter("ignore", FITSFixedWarning)


def test_every_target_on_every_image_exactly_once_in_chunks_of_neighbours(tmp_path):
    first = fits_factory.sip_image(tmp_path / "a.fits")
    second = fits_factory.sip_image(tmp_path / "b.fits")
    regions = targets_on(first, 7)
    units = plan_units([(first, 0), (second, 0)], regions, chunk=3,
                       names=lambda target, image: f"t{target}_i{image}.fits")
    pairs = [(unit.image, unit.target(k)) for unit in units for k in range(len(unit.regions))]
    assert sorted(pairs) == [(image, target) for image in (0, 1) for target in range(7)]
    assert all(len(unit.regions) <= 3 for unit in units)
    for unit in units:
        assert unit.path == (first, second)[unit.image]
        decs = [region.dec for region in unit.regions]
        assert decs == sorted(decs)  # neighbours: one band of declination per unit
        for k, region in enumerate(unit.regions):
            assert region is regions[unit.target(k)]
            assert unit.stamp_name(k) == f"t{unit.target(k)}_i{unit.image}.fits"


def test_without_chunks_a_unit_per_image_keeps_input_order(tmp_path):
    path = fits_factory.sip_image(tmp_path / "a.fits")
    regions = targets_on(path, 5)
    [unit] = plan_units([(path, 0)], regions, pad=True)
    assert unit.regions == tuple(regions) and unit.pad
    assert [unit.target(k) for k in range(5)] == list(range(5))
    assert plan_units([(path, 0)], []) == []


def test_the_unit_cutter_gives_the_stamps_of_cutting_each_image_alone(tmp_path):
    path = fits_factory.sip_image(tmp_path / "a.fits")
    regions = targets_on(path, 12)
    [unit] = plan_units([(path, 0)], regions, pad=True)
    with contextlib.closing(OpenImagePool(size=2)) as images:
        results = sorted(cut_unit(unit, images), key=lambda result: result.index)
    expected = cut_many(path, 0, regions, pad=True)
    assert [r.status for r in results] == [r.status for r in expected]
    for result, reference in zip(results, expected, strict=True):
        assert result.pixel_box == reference.pixel_box
        if reference.has_stamp:
            np.testing.assert_array_equal(result.data, reference.data)


def test_an_unreadable_image_answers_every_region_with_an_error(tmp_path):
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"not a FITS file at all")
    [unit] = plan_units([(broken, 0)], targets_on(fits_factory.sip_image(
        tmp_path / "a.fits"), 3))
    results = list(cut_unit(unit))
    assert sorted(r.index for r in results) == [0, 1, 2]
    assert all(r.status == "error" and r.reason == IMAGE_FAILED and r.message
               for r in results)


def _stamp_bytes(hdulists) -> list[bytes]:
    import io

    out = []
    for hdulist in hdulists:
        buffer = io.BytesIO()
        hdulist.writeto(buffer)
        out.append(buffer.getvalue())
    return out


def test_the_python_api_cuts_alike_on_every_executor(tmp_path):
    """``vo_service.cutout(executor=...)``: local threads, local processes and a Dask
    cluster give the stamps, in the order, of cutting one file after the other."""
    from distributed import Client, LocalCluster

    import vo_service
    from vo_service.engine.executors import DaskExecutor, LocalExecutor, ProcessExecutor

    files = [fits_factory.sip_image(tmp_path / f"{name}.fits") for name in "abc"]
    coordinates = [(region.ra, region.dec) for region in targets_on(files[0], 6)]
    expected = _stamp_bytes(vo_service.cutout(files, coordinates, 16))
    assert len(expected) >= 9  # most targets fall on every file
    with LocalExecutor(2) as threads:
        assert _stamp_bytes(vo_service.cutout(files, coordinates, 16, executor=threads)) \
            == expected
    with ProcessExecutor(2) as processes:
        assert _stamp_bytes(vo_service.cutout(files, coordinates, 16, executor=processes)) \
            == expected
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None, silence_logs=40) as cluster, \
            Client(cluster, set_as_default=False) as client:
        dask = DaskExecutor(cluster.scheduler_address, client=client)
        assert _stamp_bytes(vo_service.cutout(files, coordinates, 16, executor=dask)) \
            == expected
