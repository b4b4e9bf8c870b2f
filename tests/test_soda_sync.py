"""SODA sync through the real server on loopback, with real clients (pyvo, httpx).

Cutouts are compared with astropy's Cutout2D on the source file: equal pixels, and a WCS
that maps the cutout's corners to the same sky positions as the source WCS did.
"""

from __future__ import annotations

import io
import json
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import astropy.units as u
import httpx
import numpy as np
import pytest
import pyvo
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS, FITSFixedWarning
from PIL import Image
from pyvo.dal.adhoc import DatalinkResults
from server import LiveServer, assert_valid_votable, query_status

from vo_service.config import Limits
from vo_service.engine import reading
from vo_service.products import cutouts
from vo_service.protocols import soda

CATALOG = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "catalog.json"
SERVED = [
    (entry["file"], entry["hdu"], tuple(entry["center_icrs"]), entry["radius_deg"])
    for entry in json.loads(CATALOG.read_text())["entries"]
    if entry.get("served") and entry["file"].startswith("fits/")
] if CATALOG.exists() else []
CUBE = "fits/derived/l1448_13co_restfrq.fits"
CUBE_BAND = "2.72049e-3 2.72050e-3"  # inside the cube's barycentric range
VOTABLE_ACCEPT = "application/x-votable+xml, text/plain;q=0.5"


# -- helpers ------------------------------------------------------------------------------


def record_of(server: LiveServer, file: str, hdu: int):
    """The index record of a served file (path relative to shared/data/real) and HDU."""
    for record in server.app.state.index.records():
        if record.path.as_posix().endswith(file.removeprefix("fits/")) and record.hdu == hdu:
            return record
    raise AssertionError(f"{file}[{hdu}] is not indexed")


def sync(server: LiveServer, method: str = "GET", headers: dict[str, str] | None = None,
         **params: object) -> httpx.Response:
    """One request to /sync; list values repeat the parameter."""
    pairs = [(k, v) for k, vs in params.items()
             for v in (vs if isinstance(vs, list) else [vs])]
    if method == "POST":
        form = {k: (vs if isinstance(vs, list) else [vs]) for k, vs in params.items()}
        return httpx.post(server.url("sync"), data=form, headers=headers, timeout=60)
    return httpx.get(server.url("sync"), params=pairs, headers=headers, timeout=60)


def wcs_of(hdulist: fits.HDUList, index: int) -> WCS:
    """The celestial WCS of an HDU, with SIP, lookup-table and plate distortions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(hdulist[index].header, fobj=hdulist).celestial


def box_of(header: fits.Header) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1), 0-based half-open, from the CUTX/CUTY cards the engine writes."""
    return header["CUTX0"] - 1, header["CUTX1"], header["CUTY0"] - 1, header["CUTY1"]


def assert_equals_cutout2d(source: Path, hdu: int, cutout: fits.HDUList, index: int) -> None:
    """The cutout HDU has the source's pixels in its box and a WCS agreeing with Cutout2D."""
    x0, x1, y0, y1 = box_of(cutout[index].header)
    with fits.open(source) as original:
        data = original[hdu].data
        source_wcs = wcs_of(original, hdu)
        stamp = cutout[index].data
        cutout_wcs = wcs_of(cutout, index)
        if data.ndim == 3:  # a cube: compare channel by channel
            z0 = cutout[index].header["CUTZ0"] - 1
            planes = [(data[z0 + k], stamp[k]) for k in range(stamp.shape[0])]
        else:
            planes = [(data, stamp)]
        for plane, stamp_plane in planes:
            expected = Cutout2D(plane, ((x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2),
                                (y1 - y0, x1 - x0), wcs=source_wcs, mode="strict")
            np.testing.assert_array_equal(stamp_plane, expected.data)
        corners_x = np.array([0, x1 - x0 - 1, 0, x1 - x0 - 1], dtype=float)
        corners_y = np.array([0, 0, y1 - y0 - 1, y1 - y0 - 1], dtype=float)
        got = cutout_wcs.pixel_to_world(corners_x, corners_y)
        want = source_wcs.pixel_to_world(corners_x + x0, corners_y + y0)
        assert got.separation(want).max() < 1 * u.mas
        via_cutout2d = expected.wcs.pixel_to_world(corners_x, corners_y)
        assert got.separation(via_cutout2d).max() < 1 * u.mas


def assert_dali_error(response: httpx.Response, status: int, label: str, *words: str,
                      votable: bool = False) -> str:
    """``response`` is a /sync error with this status, label and words: text/plain
    ``<label>: <message>`` (the default), or with ``votable`` a valid DALI error VOTable."""
    assert response.status_code == status, response.text
    if votable:
        assert response.headers["content-type"].startswith("application/x-votable+xml")
        value, text = query_status(assert_valid_votable(response.content))
        assert value == "ERROR", text
    else:
        assert response.headers["content-type"].startswith("text/plain"), response.text
        text = response.text.strip()
        assert "\n" not in text, text
    assert text.startswith(f"{label}: "), text
    for word in words:
        assert word in text, text
    return text


# -- pyvo, every real image ---------------------------------------------------------------


def test_pyvo_sia_datalink_soda_gives_the_cutout2d_stamp(real_live_server: LiveServer) -> None:
    ra, dec, radius = 85.27499, -2.45830, 0.02
    service = pyvo.dal.SIA2Service(real_live_server.base_url)
    results = service.search(pos=(ra, dec, 0.001))
    dids = [row["obs_publisher_did"] for row in results]
    assert any("HorseHead.fits" in did and "ra0wrap" not in did for did in dids)
    record = record_of(real_live_server, "fits/images/HorseHead.fits", 0)
    for datalinks in results.iter_datalinks():
        if datalinks.original_row["obs_publisher_did"] != record.obs_publisher_did:
            continue
        stream = datalinks.get_first_proc().processed(circle=(ra, dec, radius) * u.deg)
        with fits.open(io.BytesIO(stream.read())) as cutout:
            x0, x1, y0, y1 = box_of(cutout[0].header)
            # a 0.02 deg radius at 1 arcsec pixels: about 144 pixels across
            assert 130 < x1 - x0 < 160 and 130 < y1 - y0 < 160
            assert_equals_cutout2d(record.path, 0, cutout, 0)
        break
    else:
        raise AssertionError("no DataLink document for HorseHead")


@pytest.mark.parametrize(("file", "hdu", "centre", "radius"), SERVED,
                         ids=[f"{f.split('/')[-1]}[{h}]" for f, h, _, _ in SERVED])
def test_every_real_image_cuts_like_cutout2d(real_live_server: LiveServer, file: str, hdu: int,
                                             centre: tuple[float, float], radius: float) -> None:
    record = record_of(real_live_server, file, hdu)
    response = sync(real_live_server, ID=record.obs_publisher_did,
                    CIRCLE=f"{centre[0]} {centre[1]} {radius / 3}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/fits"
    with fits.open(io.BytesIO(response.content)) as cutout:
        assert cutout[0].header["ORIG_EXT"] == hdu
        assert 0 < cutout[0].data.size < np.prod(record.shape)  # a cutout, not the file
        assert_equals_cutout2d(record.path, hdu, cutout, 0)


def test_range_through_ra_zero(real_live_server: LiveServer) -> None:
    record = record_of(real_live_server, "fits/derived/ra0wrap_HorseHead.fits", 0)
    response = sync(real_live_server, ID=record.obs_publisher_did,
                    POS="RANGE 359.99 0.01 -2.47 -2.45")
    assert response.status_code == 200, response.text
    with fits.open(io.BytesIO(response.content)) as cutout:
        x0, x1, _, _ = box_of(cutout[0].header)
        assert 60 < x1 - x0 < 90  # 0.02 deg across RA = 0, not the whole image width
        assert_equals_cutout2d(record.path, 0, cutout, 0)


# -- several cutouts, previews, cubes -------------------------------------------------------


def test_several_ids_and_shapes_give_one_multi_extension_file(real_live_server: LiveServer
                                                              ) -> None:
    chips = [record_of(real_live_server, "fits/images/test0.fits", h) for h in (3, 4)]
    ra, dec = chips[0].s_ra, chips[0].s_dec
    response = sync(real_live_server, "POST", ID=[c.obs_publisher_did for c in chips],
                    CIRCLE=f"{ra} {dec} 0.0008",
                    POLYGON=f"{ra - 0.001} {dec - 0.001} {ra + 0.001} {dec - 0.001} {ra} {dec}")
    assert response.status_code == 200, response.text
    with fits.open(io.BytesIO(response.content)) as cutout:
        assert cutout[0].data is None and cutout[0].header["NCUTOUT"] == 4
        assert [h.name for h in cutout[1:]] == ["CUTOUT1", "CUTOUT2", "CUTOUT3", "CUTOUT4"]
        for index, chip in zip((1, 2, 3, 4), (chips[0], chips[0], chips[1], chips[1]),
                               strict=True):
            assert cutout[index].header["ORIG_EXT"] == chip.hdu
            assert_equals_cutout2d(chip.path, chip.hdu, cutout, index)


def test_combinations_without_overlap_are_listed_not_extended(real_live_server: LiveServer
                                                              ) -> None:
    horsehead = record_of(real_live_server, "fits/images/HorseHead.fits", 0)
    m67 = record_of(real_live_server, "fits/images/M6707HH.fits", 0)
    response = sync(real_live_server, ID=[horsehead.obs_publisher_did, m67.obs_publisher_did],
                    CIRCLE=f"{horsehead.s_ra} {horsehead.s_dec} 0.01")
    with fits.open(io.BytesIO(response.content)) as cutout:
        assert len(cutout) == 2 and cutout[0].header["NCUTOUT"] == 1
        assert "no overlap: " + m67.obs_publisher_did in str(cutout[0].header["HISTORY"])


@pytest.mark.parametrize(("fmt", "pil_format"), [("image/png", "PNG"), ("jpeg", "JPEG")])
def test_previews_of_the_cutout(real_live_server: LiveServer, fmt: str, pil_format: str
                                ) -> None:
    record = record_of(real_live_server, "fits/images/HorseHead.fits", 0)
    circle = f"{record.s_ra} {record.s_dec} 0.02"
    fits_response = sync(real_live_server, ID=record.obs_publisher_did, CIRCLE=circle)
    with fits.open(io.BytesIO(fits_response.content)) as cutout:
        rows, cols = cutout[0].data.shape
    response = sync(real_live_server, ID=record.obs_publisher_did, CIRCLE=circle,
                    RESPONSEFORMAT=fmt, STRETCH="asinh", LIMITS="99.5", INVERT="true")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == ("image/png" if fmt == "image/png"
                                                else "image/jpeg")
    assert response.headers["content-disposition"].startswith("inline; filename=")
    image = Image.open(io.BytesIO(response.content))
    assert image.format == pil_format and image.size == (cols, rows)
    small = sync(real_live_server, ID=record.obs_publisher_did, CIRCLE=circle,
                 RESPONSEFORMAT=fmt, SIZE="20")
    assert max(Image.open(io.BytesIO(small.content)).size) == 20
    bad = sync(real_live_server, ID=record.obs_publisher_did, CIRCLE=circle,
               RESPONSEFORMAT=fmt, STRETCH="cubic")
    assert_dali_error(bad, 400, "UsageError", "stretch")


def test_a_preview_of_several_cutouts_is_refused(real_live_server: LiveServer) -> None:
    record = record_of(real_live_server, "fits/images/HorseHead.fits", 0)
    response = sync(real_live_server, ID=record.obs_publisher_did, RESPONSEFORMAT="image/png",
                    CIRCLE=[f"{record.s_ra} {record.s_dec} 0.01",
                            f"{record.s_ra} {record.s_dec} 0.02"])
    assert_dali_error(response, 400, "MultiValuedParamNotSupported", "FITS")


def test_cube_band_selects_channels(real_live_server: LiveServer) -> None:
    record = record_of(real_live_server, CUBE, 0)
    response = sync(real_live_server, ID=record.obs_publisher_did, BAND=CUBE_BAND,
                    CIRCLE=f"{record.s_ra} {record.s_dec} 0.1")
    assert response.status_code == 200, response.text
    with fits.open(io.BytesIO(response.content)) as cutout:
        channels = cutout[0].data.shape[0]
        assert 0 < channels < record.shape[0]
        assert_equals_cutout2d(record.path, 0, cutout, 0)
        with fits.open(record.path) as source:  # the spectral axis is shifted, not rescaled
            z0 = cutout[0].header["CUTZ0"] - 1
            spectral_cut = WCS(cutout[0].header).spectral.pixel_to_world_values(0)
            spectral_source = WCS(source[0].header).spectral.pixel_to_world_values(z0)
            assert spectral_cut == pytest.approx(spectral_source)
    only_band = sync(real_live_server, ID=record.obs_publisher_did, BAND=CUBE_BAND)
    assert only_band.status_code == 200
    with fits.open(io.BytesIO(only_band.content)) as cutout:
        assert cutout[0].data.shape == (channels, *record.shape[1:])


def test_band_outside_a_cube_is_a_usage_error(real_live_server: LiveServer) -> None:
    record = record_of(real_live_server, CUBE, 0)
    response = sync(real_live_server, ID=record.obs_publisher_did, BAND="5e-7 6e-7",
                    CIRCLE=f"{record.s_ra} {record.s_dec} 0.1")
    assert_dali_error(response, 400, "UsageError", "outside the cube's range")
    no_restfrq = record_of(real_live_server, "fits/cubes/l1448_13co.fits", 0)
    response = sync(real_live_server, ID=no_restfrq.obs_publisher_did, BAND=CUBE_BAND,
                    CIRCLE=f"{record.s_ra} {record.s_dec} 0.1")
    assert_dali_error(response, 400, "UsageError", "rest frequency")


def test_band_on_an_image_outside_its_band_is_a_usage_error(real_live_server: LiveServer
                                                            ) -> None:
    record = record_of(real_live_server, "fits/images/gc_2mass_k.fits", 0)  # K: 2.0-2.4 um
    circle = f"{record.s_ra} {record.s_dec} 0.05"
    inside = sync(real_live_server, ID=record.obs_publisher_did, CIRCLE=circle,
                  BAND="2.1e-6 2.2e-6")
    assert inside.status_code == 200
    outside = sync(real_live_server, ID=record.obs_publisher_did, CIRCLE=circle,
                   BAND="5e-7 6e-7")
    assert_dali_error(outside, 400, "UsageError", "spectral range")


def test_no_overlap_is_204_with_an_empty_body(real_live_server: LiveServer) -> None:
    record = record_of(real_live_server, "fits/images/HorseHead.fits", 0)
    response = sync(real_live_server, ID=record.obs_publisher_did, CIRCLE="10 10 0.1")
    assert response.status_code == 204 and response.content == b""
    post = sync(real_live_server, "POST", ID=record.obs_publisher_did, POS="CIRCLE 10 10 0.1")
    assert post.status_code == 204 and post.content == b""


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "status", "label", "words"), [
    ({"CIRCLE": "85.27 -2.46 0.01"}, 400, "UsageError", ["ID is missing"]),
    ({"ID": "ivo://vo-service.example/images?nothing.fits", "CIRCLE": "85.27 -2.46 0.01"},
     404, "UsageError", ["not in this archive"]),
    ({"ID": "{hh}"}, 400, "UsageError", ["give CIRCLE, POLYGON or POS"]),
    ({"ID": "{hh}", "CIRCLE": "85.27 -2.46 0"}, 400, "UsageError", ["radius"]),
    ({"ID": "{hh}", "CIRCLE": "85.27 -2.46 -0.1"}, 400, "UsageError", ["radius"]),
    ({"ID": "{hh}", "CIRCLE": "85.27 -2.46 NaN"}, 400, "UsageError", ["NaN"]),
    ({"ID": "{hh}", "CIRCLE": "85.27 91 0.1"}, 400, "UsageError", ["Dec"]),
    ({"ID": "{hh}", "POS": "CIRCLE 85.27 -90.5 0.1"}, 400, "UsageError", ["Dec"]),
    ({"ID": "{hh}", "POLYGON": "85.2 -2.4 85.3 -2.5"}, 400, "UsageError", ["at least 6"]),
    ({"ID": "{hh}", "POS": "BOX 85.27 -2.46 0.1"}, 400, "UsageError", ["CIRCLE, RANGE"]),
    ({"ID": "{hh}", "CIRCLE": "85.27 -2.46 0.01", "BAND": "2e-6 1e-6"}, 400, "UsageError",
     ["exceeds"]),
    ({"ID": "{hh}", "CIRCLE": "85.27 -2.46 0.01", "BAND": ["1e-6 2e-6", "3e-6 4e-6"]}, 400,
     "MultiValuedParamNotSupported", ["BAND"]),
    ({"ID": "{hh}", "CIRCLE": "85.27 -2.46 0.01", "POL": "Z"}, 400, "UsageError", ["POL"]),
    ({"ID": "{hh}", "CIRCLE": "85.27 -2.46 0.01", "RESPONSEFORMAT": "text/csv"}, 400,
     "UsageError", ["RESPONSEFORMAT"]),
    ({"ID": "{hh}", "CIRCLE": "85.27 -2.46 0.01", "RESPONSEFORMAT": ["fits", "fits"]}, 400,
     "UsageError", ["single-valued"]),
    ({"ID": "{hh}", "CIRCLE": "85.27 -2.46 0.01", "TIME": "1 2"}, 400, "UsageError",
     ["TIME"]),
])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_errors_are_text_or_dali_votables_on_request(
        real_live_server: LiveServer, params: dict, status: int, label: str, words: list[str],
        method: str) -> None:
    did = record_of(real_live_server, "fits/images/HorseHead.fits", 0).obs_publisher_did
    params = {k: (did if v == "{hh}" else v) for k, v in params.items()}
    text = assert_dali_error(sync(real_live_server, method, **params), status, label, *words)
    asked = sync(real_live_server, method, headers={"Accept": VOTABLE_ACCEPT}, **params)
    assert assert_dali_error(asked, status, label, *words, votable=True) == text


@pytest.mark.parametrize(("headers", "params", "votable"), [
    ({}, {}, False),
    ({"Accept": "*/*"}, {}, False),  # requests, pyvo, curl
    ({"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}, {},
     False),  # a browser
    ({"Accept": "text/plain, application/x-votable+xml"}, {}, False),
    ({"Accept": "application/x-votable+xml;q=0.4, text/plain;q=0.5"}, {}, False),
    ({"Accept": "application/x-votable+xml"}, {}, True),
    ({"Accept": "text/xml, */*;q=0.1"}, {}, True),
    ({"Accept": "application/x-votable+xml, text/plain"}, {}, True),
    ({}, {"RESPONSEFORMAT": "votable"}, True),
    ({}, {"RESPONSEFORMAT": "application/x-votable+xml;serialization=TABLEDATA"}, True),
])
def test_the_client_chooses_text_or_votable_errors(
        real_live_server: LiveServer, headers: dict, params: dict, votable: bool) -> None:
    """text/plain unless Accept prefers a VOTable type or RESPONSEFORMAT names one; the
    status and the text stay the same."""
    did = record_of(real_live_server, "fits/images/HorseHead.fits", 0).obs_publisher_did
    response = sync(real_live_server, headers=headers, ID=did, CIRCLE="85.27 -2.46 -1",
                    **params)
    assert_dali_error(response, 400, "UsageError", "radius", votable=votable)


def test_pyvo_raises_the_message_of_a_sync_error(real_data: Path, tmp_path: Path,
                                                 live_server_factory) -> None:
    """pyvo shows its users the service's text (it reads text/plain error bodies only)."""
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(real_data / "fits/images/HorseHead.fits", root)
    server = live_server_factory(root)
    server.app.state.settings = replace(server.app.state.settings,
                                        limits=Limits(max_cutout_pixels=1000))
    record = server.app.state.index.records()[0]
    found = pyvo.dal.SIA2Service(server.base_url).search(pos=(record.s_ra, record.s_dec, 0.001))
    proc = next(found.iter_datalinks()).get_first_proc()
    # a circle off the image is no error: 204, and pyvo hands back an empty stream
    assert proc.processed(circle=(10, 10, 0.1) * u.deg).read() == b""
    # pyvo lets no malformed circle through (it checks RA, Dec and radius itself); one
    # larger than the service cuts is refused by the service
    with pytest.raises(pyvo.dal.DALServiceError) as refused:
        proc.processed(circle=(record.s_ra, record.s_dec, 0.05) * u.deg)
    assert refused.value.code == 400
    message = str(refused.value)
    assert message.startswith(f"UsageError: {record.obs_publisher_did}: the cutout has ")
    assert "more than the limit of 1000; ask for a smaller region" in message


def test_pyvo_raises_the_message_of_a_band_outside_the_image(live_server: LiveServer) -> None:
    found = pyvo.dal.SIA2Service(live_server.base_url).search(
        pos=(52.93, -28.09, 0.005), BANDNAME="VIS", PRODUCTTYPE="BGSUB", DPTYPE="image")
    row = next(r for r in found if "MEF" not in r["obs_publisher_did"])
    ra, dec = float(row["s_ra"]), float(row["s_dec"])
    proc = row.getdatalink().get_first_proc()
    with pytest.raises(pyvo.dal.DALServiceError) as refused:  # VIS is 0.55-0.9 um
        proc.processed(circle=(ra, dec, 0.002) * u.deg, band=(2.0, 2.1) * u.um)
    assert refused.value.code == 400
    message = str(refused.value)
    assert message.startswith("UsageError: BAND 2e-06 2.1e-06 m is outside the image's "
                              "spectral range"), message
    assert str(row["obs_publisher_did"]) in message


def test_empty_parameters_count_as_absent(real_live_server: LiveServer) -> None:
    record = record_of(real_live_server, "fits/images/HorseHead.fits", 0)
    response = sync(real_live_server, ID=record.obs_publisher_did, BAND="", TIME="", POL="",
                    POS=f"circle {record.s_ra} {record.s_dec} 0.01")  # old Aladin: lower case
    assert response.status_code == 200, response.text


def test_too_large_a_cutout_names_size_and_limit(real_data: Path, tmp_path: Path,
                                                 live_server_factory) -> None:
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(real_data / "fits/images/HorseHead.fits", root)
    server = live_server_factory(root)
    # (serve_archive(limits=...) collides with its own default Limits(); set it on the app)
    settings = server.app.state.settings
    server.app.state.settings = replace(settings, limits=Limits(max_cutout_pixels=1000))
    record = server.app.state.index.records()[0]
    response = sync(server, ID=record.obs_publisher_did,
                    CIRCLE=f"{record.s_ra} {record.s_dec} 0.05")
    text = assert_dali_error(response, 400, "UsageError", "limit of 1000")
    assert "pixels" in text


# -- cache, concurrency limit, changed sources ------------------------------------------------


@pytest.fixture
def small_server(real_data: Path, tmp_path: Path, live_server_factory) -> LiveServer:
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(real_data / "fits/images/sip-wcs.fits", root)
    return live_server_factory(root)


def test_a_repeated_request_is_served_from_the_cache(small_server: LiveServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = cutouts.make_product
    monkeypatch.setattr(cutouts, "make_product", lambda *a: calls.append(1) or original(*a))
    record = small_server.app.state.index.records()[0]
    params = {"ID": record.obs_publisher_did, "CIRCLE": f"{record.s_ra} {record.s_dec} 0.003"}
    first = sync(small_server, **params)
    second = sync(small_server, "POST", **params)
    assert first.headers["x-cache"] == "miss" and second.headers["x-cache"] == "hit"
    assert first.content == second.content and len(calls) == 1
    assert first.headers["etag"] == second.headers["etag"]
    assert first.headers["content-disposition"].startswith('attachment; filename="sip-wcs_')


def test_a_damaged_cache_file_is_recomputed(small_server: LiveServer) -> None:
    record = small_server.app.state.index.records()[0]
    params = {"ID": record.obs_publisher_did, "CIRCLE": f"{record.s_ra} {record.s_dec} 0.003"}
    first = sync(small_server, **params)
    path = small_server.app.state.cache.path_for(first.headers["etag"].strip('"'))
    damaged = bytearray(path.read_bytes())
    damaged[3000] ^= 0xFF
    path.write_bytes(bytes(damaged))
    second = sync(small_server, **params)
    assert second.headers["x-cache"] == "miss" and second.content == first.content
    path.unlink()
    third = sync(small_server, **params)
    assert third.headers["x-cache"] == "miss" and third.content == first.content
    assert sync(small_server, **params).headers["x-cache"] == "hit"


def test_a_changed_source_file_is_never_served_from_old_stamps(small_server: LiveServer
                                                               ) -> None:
    record = small_server.app.state.index.records()[0]
    params = {"ID": record.obs_publisher_did, "CIRCLE": f"{record.s_ra} {record.s_dec} 0.003"}
    before = sync(small_server, **params)
    with fits.open(record.path, mode="update") as source:
        source[0].data = source[0].data + 7
    after = sync(small_server, **params)
    assert after.status_code == 200 and after.headers["x-cache"] == "miss"
    with fits.open(io.BytesIO(before.content)) as old, fits.open(io.BytesIO(after.content)) as new:
        np.testing.assert_array_equal(new[0].data, old[0].data + 7)


def test_busy_service_answers_503_with_retry_after(small_server: LiveServer) -> None:
    record = small_server.app.state.index.records()[0]
    slots = soda.SyncSlots(1)
    slots.busy = 1  # every slot taken by (pretend) running cutouts
    small_server.app.state.sync_slots = slots
    response = sync(small_server, ID=record.obs_publisher_did,
                    CIRCLE=f"{record.s_ra} {record.s_dec} 0.003")
    assert_dali_error(response, 503, "ServiceUnavailable")
    assert int(response.headers["retry-after"]) > 0
    slots.busy = 0
    assert sync(small_server, ID=record.obs_publisher_did,
                CIRCLE=f"{record.s_ra} {record.s_dec} 0.003").status_code == 200


def test_identical_concurrent_requests_compute_once(small_server: LiveServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = cutouts.make_product
    monkeypatch.setattr(cutouts, "make_product", lambda *a: calls.append(1) or original(*a))
    record = small_server.app.state.index.records()[0]
    params = {"ID": record.obs_publisher_did, "CIRCLE": f"{record.s_ra} {record.s_dec} 0.002"}
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: sync(small_server, **params), range(8)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1 and len(calls) == 1


def test_large_cutouts_are_streamed_whole(real_live_server: LiveServer) -> None:
    record = record_of(real_live_server, "fits/images/HorseHead.fits", 0)
    with httpx.stream("GET", real_live_server.url("sync"), timeout=60, params={
            "ID": record.obs_publisher_did,
            "CIRCLE": f"{record.s_ra} {record.s_dec} 0.3"}) as response:
        assert response.status_code == 200
        content = b"".join(response.iter_bytes())
    assert int(response.headers["content-length"]) == len(content) > soda.INLINE_BYTES
    with fits.open(io.BytesIO(content)) as cutout:
        assert cutout[0].data.shape == record.shape  # clipped to the image: all of it
        assert_equals_cutout2d(record.path, 0, cutout, 0)


def test_pyvo_band_from_the_descriptor_hints_selects_every_channel(
        real_live_server: LiveServer) -> None:
    """The BAND range DataLink advertises for a cube is accepted by /sync as a whole."""
    record = record_of(real_live_server, CUBE, 0)
    links = DatalinkResults.from_result_url(
        real_live_server.url("links") + "?ID=" + quote(record.obs_publisher_did))
    proc = links.get_first_proc()
    band = next(p for p in links.get_adhocservice_by_ivoid(soda.SYNC_STANDARD_ID)
                .groups[0].entries if p.name == "BAND")
    low, high = float(band.values.min), float(band.values.max)
    stream = proc.processed(circle=(record.s_ra, record.s_dec, 0.05) * u.deg,
                            band=(low, high) * u.m)
    with fits.open(io.BytesIO(stream.read())) as cutout:
        assert cutout[0].data.shape[0] == record.shape[0]
        assert_equals_cutout2d(record.path, 0, cutout, 0)
    with pytest.raises(pyvo.dal.DALServiceError) as refused:  # just above the cube: a 400
        proc.processed(circle=(record.s_ra, record.s_dec, 0.05) * u.deg,
                       band=(high * 1.001, high * 1.002) * u.m)
    assert refused.value.code == 400
    assert "UsageError: " in str(refused.value) and "outside the cube's range" in str(
        refused.value)


def test_open_images_are_reused_and_bounded(real_live_server: LiveServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    opened = []

    class CountingImage(reading.OpenImage):
        def __init__(self, *args: object) -> None:
            opened.append(args)
            super().__init__(*args)

    monkeypatch.setattr(reading, "OpenImage", CountingImage)
    monkeypatch.setattr(cutouts, "IMAGES", reading.OpenImagePool(size=2))
    files = ["fits/images/HorseHead.fits", "fits/images/M6707HH.fits",
             "fits/images/sip-wcs.fits"]
    records = [record_of(real_live_server, file, 0) for file in files]
    for record in [records[0], records[0], records[1], records[2], records[2]]:
        request = soda.parse_sync_request(soda.Params.from_pairs([
            ("ID", record.obs_publisher_did),
            ("CIRCLE", f"{record.s_ra} {record.s_dec} 0.001")]))
        assert cutouts.cut_record(request, record, 10**6)[0].has_stamp
    assert len(opened) == 3  # the repeats reused the open image
    assert cutouts.IMAGES.idle_count() == 2  # HorseHead, least recently used, was closed
