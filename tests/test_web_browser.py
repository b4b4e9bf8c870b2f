"""The web page in a real headless browser (Debian's Chromium driven by Playwright).

A user uploads a catalog, chooses images, submits, watches the job, looks at the gallery and
downloads the manifest and bundle; cuts out one target; aborts and deletes jobs; and reads
errors next to the fields. ``WEB_SCREENSHOTS=<dir>`` also saves screenshots of the views
(``make screenshots`` writes them to docs/screenshots/).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from astropy.io import fits
from astropy.io.votable import from_table, writeto
from astropy.table import Table
from playwright import sync_api
from server import LiveServer, assert_valid_votable, start_server

from vo_service.config import Limits, Settings

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
IN_CI = os.environ.get("CI", "").lower() == "true"
MAX_ROWS = 30
WAIT_MS = 30_000
SCREENSHOTS = os.environ.get("WEB_SCREENSHOTS")
# Bright galaxies and stars of the demo sky: a gallery worth looking at.
BRIGHT = ("74", "90", "147", "157", "191", "243", "279", "283")


def screenshot(page, name: str, selector: str | None = None) -> None:  # noqa: ANN001
    """Save a screenshot of the page (or one element) when WEB_SCREENSHOTS is set."""
    if not SCREENSHOTS:
        return
    Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
    target = page.locator(selector) if selector else page
    target.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))


def catalog_csv(demo_archive: Path, count: int, *, outside: bool = False,
                ids: tuple[str, ...] = ()) -> bytes:
    """``count`` demo sources (those of ``ids`` if given) as name, ra, dec, label (+ one
    target in no image)."""
    with open(demo_archive / "sources.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if not ids or row["id"] in ids][:count]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["name", "ra", "dec", "label"])
    for row in rows:
        writer.writerow([f"src{row['id']}", row["ra"], row["dec"], f"L{row['id']}"])
    if outside:
        writer.writerow(["far", "150.0", "60.0", "Lfar"])
    return out.getvalue().encode()


def upload(page, name: str, content: bytes) -> None:  # noqa: ANN001
    page.set_input_files("#catalog-file", {"name": name, "mimeType": "application/octet-stream",
                                           "buffer": content})


@pytest.fixture(scope="module")
def server(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A private server (jobs change its state) with a small upload row limit."""
    settings = Settings(data_roots=(demo_archive,),
                        state_dir=tmp_path_factory.mktemp("web-browser"),
                        limits=Limits(max_upload_rows=MAX_ROWS))
    live = start_server(settings)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium from the system's packages (``make test`` installs it as root)."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        message = f"Chromium not found at {CHROMIUM}; apt-get install chromium"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@contextlib.contextmanager
def open_page(browser, url: str) -> Iterator[object]:  # noqa: ANN001
    """A fresh browser context showing ``url``; on exit it is closed and no JavaScript
    error may have happened on the way."""
    context = browser.new_context(viewport={"width": 1360, "height": 900},
                                  accept_downloads=True)
    context.set_default_timeout(WAIT_MS)
    new_page = context.new_page()
    problems: list[str] = []
    new_page.on("pageerror", lambda error: problems.append(str(error)))
    new_page.goto(url)
    yield new_page
    context.close()
    assert not problems, problems


@pytest.fixture
def page(browser, server: LiveServer) -> Iterator[object]:  # noqa: ANN001
    """A fresh page on the web page, ready (the archive's choices loaded)."""
    with open_page(browser, server.base_url + "/") as new_page:
        new_page.wait_for_selector("body[data-ready=true]")
        yield new_page


def images_loaded(page, selector: str, count: int | None = None) -> int:  # noqa: ANN001
    """Wait until ``count`` (or at least one) images match ``selector`` and all have decoded;
    return how many there are."""
    page.wait_for_function(
        "([s, n]) => { const all = [...document.querySelectorAll(s)];"
        " return (n === null ? all.length > 0 : all.length === n)"
        " && all.every(i => i.complete && i.naturalWidth > 0); }",
        arg=[selector, count])
    return page.locator(selector).count()


def test_upload_choose_submit_watch_gallery_download(page, server: LiveServer,  # noqa: ANN001
                                                     demo_archive: Path,
                                                     tmp_path: Path) -> None:
    upload(page, "targets.csv", catalog_csv(demo_archive, 8, outside=True, ids=BRIGHT))
    page.wait_for_selector("#catalog-summary:not([hidden])")
    assert page.inner_text("#catalog-facts") == "9 rows, 4 columns (CSV)"
    assert page.input_value("#ra-column") == "ra" and page.input_value("#dec-column") == "dec"
    assert page.input_value("#id-column") == "name"
    page.select_option("#id-column", "label")  # the user prefers another ID column
    page.check("#instruments input[value=NISP]")
    bands = page.locator("#bands input[name=BANDNAME]:enabled")  # RGS is a cube: no BGSUB
    assert bands.evaluate_all("all => all.map(i => i.value)") == ["NIR-Y", "NIR-J", "NIR-H"]
    assert page.is_checked("#products input[value=BGSUB]")
    assert page.is_checked("#products input[value=CATALOG-PSF]")  # as in Euclid's service
    assert not page.is_checked("#products input[value=RMS]")
    page.check("#products input[value=RMS]")
    page.fill("#size", "32")
    screenshot(page, "form", "#catalog-job")
    screenshot(page, "overview")
    page.click("#submit-job")

    done = page.wait_for_selector("#job-rows tr[data-phase=COMPLETED]")
    bar = done.query_selector("[role=progressbar]")
    assert bar.get_attribute("aria-valuenow") == bar.get_attribute("aria-valuemax") != "0"
    assert "targets.csv" in done.inner_text()

    page.wait_for_selector("#gallery:not([hidden]) #gallery-table tbody tr")
    rows = page.locator("#gallery-table tbody tr")
    assert rows.count() == 9
    header = page.inner_text("#gallery-table thead")
    for band in ("NIR-Y", "NIR-J", "NIR-H", "BGSUB", "RMS", "CATALOG-PSF", "colour"):
        assert band in header
    # 3 bands x (BGSUB, RMS and the PSF at the target)
    assert images_loaded(page, "#gallery-table img.thumb:not(.composite)", 8 * 9) == 8 * 9
    assert images_loaded(page, "#gallery-table img.composite", 8) == 8
    assert page.locator("#gallery-table tbody th .tid").first.inner_text() == "L74"
    far = page.locator("#gallery-table tr[data-target=Lfar]")
    assert "no-overlap" in far.inner_text() and "inside no image" in far.inner_text()
    screenshot(page, "gallery", "#gallery")

    first = page.locator("#gallery-table img.thumb:not(.composite)").first
    linear_src = first.get_attribute("src")
    page.select_option("#stretch", "log")
    page.check("#invert")
    assert "STRETCH=log" in first.get_attribute("src") and "INVERT=true" in first.get_attribute(
        "src") and first.get_attribute("src") != linear_src
    images_loaded(page, "#gallery-table img.thumb:not(.composite)")
    first.click()
    page.wait_for_selector("#viewer[open]")
    images_loaded(page, "#viewer-image")
    assert "FITS" in page.inner_text("#viewer-links")
    page.click("#viewer button[aria-label=Close]")

    fits_link = page.locator("#gallery-table .cell-links a").first
    stamp = httpx.get(server.base_url + "/" + fits_link.get_attribute("href"))
    assert fits.getdata(io.BytesIO(stamp.content)).shape == (32, 32)
    with page.expect_download() as manifest_download:
        page.click("#download-manifest")
    manifest = assert_valid_votable(Path(manifest_download.value.path()).read_bytes())
    manifest_ids = list(manifest.get_first_table().array["target_id"])
    assert set(manifest_ids) == {f"L{i}" for i in BRIGHT} | {"Lfar"}
    assert len(manifest_ids) >= 8 * 9 + 1  # more where neighbouring tiles overlap
    with page.expect_download() as bundle_download:
        page.click("#download-bundle")
    with zipfile.ZipFile(bundle_download.value.path()) as bundle:
        names = bundle.namelist()
    assert "manifest.xml" in names and {n.split("/")[0] for n in names} >= {"NIR-Y", "NIR-H"}


def test_catalog_rows_and_photometry_from_the_page(page, server: LiveServer,  # noqa: ANN001
                                                  demo_archive: Path) -> None:
    upload(page, "stars.csv", catalog_csv(demo_archive, 3, ids=BRIGHT))
    page.wait_for_selector("#catalog-summary:not([hidden])")
    page.check("#instruments input[value=VIS]")
    page.check("#products input[value=CATALOG]")  # the tile's source catalog
    assert page.is_disabled("#apertures")
    page.check("#photometry")
    page.fill("#apertures", "1 1.5")
    page.select_option("#psf", "interpolated")
    page.click("#submit-job")
    page.wait_for_selector("#gallery:not([hidden]) #gallery-table tbody tr")
    assert "CATALOG" in page.inner_text("#gallery-table thead")
    assert page.locator("#gallery-table a.rows-link").count() >= 3
    job_id = page.locator("#job-rows tr[data-phase=COMPLETED]").first.get_attribute(
        "data-job-id")
    document = httpx.get(server.url(f"async/{job_id}")).text
    for text in ('id="PHOTOMETRY">true<', 'id="APERTURE">1 1.5<', 'id="PSF">interpolated<'):
        assert text in document
    assert "photometry" in document  # the photometry.xml result


def test_stamps_across_tile_edges_are_stitched_when_the_page_asks(
        page, server: LiveServer, demo_archive: Path) -> None:  # noqa: ANN001
    seam_stars = tuple(str(i) for i in range(300901, 300908))  # demo stars on tile seams
    upload(page, "seams.csv", catalog_csv(demo_archive, 7, ids=seam_stars))
    page.wait_for_selector("#catalog-summary:not([hidden])")
    page.check("#instruments input[value=VIS]")
    page.check("#products input[value=BGSUB]")
    assert page.input_value("#stitch") == "none"  # the default cuts each image on its own
    page.select_option("#stitch", "interp")
    page.click("#submit-job")
    page.wait_for_selector("#gallery:not([hidden]) #gallery-table tbody tr")
    assert page.locator("#gallery-table .tag.stitched").count() >= 1
    job_id = page.locator("#job-rows tr[data-phase=COMPLETED]").first.get_attribute(
        "data-job-id")
    assert 'id="STITCH">interp<' in httpx.get(server.url(f"async/{job_id}")).text


def test_single_target_form_shows_a_cutout_per_band(page, server: LiveServer) -> None:  # noqa: ANN001
    page.fill("#quick-pos", "03:31:35.59 -28:04:48.6")  # a bright galaxy of the demo sky
    page.select_option("#quick-instrument", label="DECAM")
    page.fill("#quick-size", "12")
    page.select_option("#quick-unit", "arcsec")
    page.click("#quick-submit")
    assert images_loaded(page, "#quick-results img", 4) == 4
    assert "RA 52.898292°, Dec -28.080167°" in page.inner_text("#quick-facts")
    captions = page.locator("#quick-results figcaption").all_inner_texts()
    assert [c.split()[0] for c in captions] == ["DES-G", "DES-R", "DES-I", "DES-Z"]
    fits_url = page.locator("#quick-results figcaption a").first.get_attribute("href")
    assert fits_url.startswith("sync?") and "RESPONSEFORMAT=application%2Ffits" in fits_url
    cutout = fits.getdata(io.BytesIO(httpx.get(f"{server.base_url}/{fits_url}").content))
    # 12 arcsec at 0.3 arcsec per pixel; SODA's CIRCLE box includes the pixels it touches
    assert cutout.shape[0] == cutout.shape[1] and abs(cutout.shape[0] - 40) <= 1
    screenshot(page, "single-target", "#quick")
    page.locator("#quick-results img").nth(1).focus()
    page.keyboard.press("Enter")  # enlarge from the keyboard too
    page.wait_for_selector("#viewer[open]")
    assert page.inner_text("#viewer-title") == "DES-R BGSUB"
    assert page.locator("#viewer-links a").get_attribute("href").endswith(
        page.locator("#quick-results figcaption a").nth(1).get_attribute("href"))


def test_abort_and_delete_from_the_job_list(page, server: LiveServer,  # noqa: ANN001
                                            demo_archive: Path) -> None:
    created = httpx.post(server.url("async"), data={"UPLOAD": "cat,param:cat", "RUNID": "later"},
                         files={"cat": ("t.csv", catalog_csv(demo_archive, 3))},
                         follow_redirects=True)  # PENDING: not started
    job_id = str(created.url).rsplit("/", 1)[1]
    page.click("#refresh-jobs")
    row = page.locator(f"#job-rows tr[data-job-id='{job_id}']")
    assert row.get_attribute("data-phase") == "PENDING"
    screenshot(page, "jobs", "#jobs")
    row.get_by_role("button", name="Abort").click()
    page.wait_for_selector(f"#job-rows tr[data-job-id='{job_id}'][data-phase=ABORTED]")
    assert httpx.get(server.url(f"async/{job_id}/phase")).text == "ABORTED"
    page.locator(f"#job-rows tr[data-job-id='{job_id}']").get_by_role(
        "button", name="Gallery").click()
    page.wait_for_selector("#error-gallery:not([hidden])")
    assert "aborted before it wrote a manifest" in page.inner_text("#error-gallery")
    page.locator(f"#job-rows tr[data-job-id='{job_id}']").get_by_role(
        "button", name="Delete").click()
    page.wait_for_selector(f"#job-rows tr[data-job-id='{job_id}']", state="detached")
    assert page.is_hidden("#gallery")  # the deleted job's gallery closed with it
    assert httpx.get(server.url(f"async/{job_id}")).status_code == 404


def test_errors_appear_next_to_their_fields(page, server: LiveServer,  # noqa: ANN001
                                            demo_archive: Path) -> None:
    upload(page, "broken.csv", b"\x00\x01\x02 not a table" * 20)
    page.wait_for_selector("#error-catalog:not([hidden])")
    assert "unrecognised catalog format" in page.inner_text("#error-catalog")

    upload(page, "big.csv", catalog_csv(demo_archive, MAX_ROWS + 1))
    page.wait_for_selector("#error-catalog:text('30')")
    assert "rows" in page.inner_text("#error-catalog")

    upload(page, "fine.csv", catalog_csv(demo_archive, 3))
    page.wait_for_selector("#catalog-summary:not([hidden])")
    assert page.is_hidden("#error-catalog")
    jobs_before = len(httpx.get(server.url("api/jobs")).json()["jobs"])
    for box in page.locator("#bands input").all():
        box.uncheck()
    page.click("#submit-job")
    assert "no band chosen" in page.inner_text("#error-bands")
    assert len(httpx.get(server.url("api/jobs")).json()["jobs"]) == jobs_before

    page.locator("#bands input").first.check()
    page.fill("#workers", "99")  # refused by /async itself: its DALI message is shown
    page.click("#submit-job")
    page.wait_for_selector("#error-workers:not([hidden])")
    assert "WORKERS must be between 1 and 16" in page.inner_text("#error-workers")
    assert page.is_hidden("#error-bands")
    screenshot(page, "errors", "#catalog-job")

    page.fill("#quick-pos", "somewhere nice")
    page.click("#quick-submit")
    page.wait_for_selector("#error-quick-pos:not([hidden])")
    assert "cannot read 'somewhere nice' as a position" in page.inner_text("#error-quick-pos")


def test_the_page_reads_text_and_votable_error_messages(page) -> None:  # noqa: ANN001
    """/sync answers text/plain errors, the other endpoints VOTables: the page shows both."""
    content_type, from_sync, from_query = page.evaluate("""async () => {
        const { errorMessage } = await import("./static/js/api.js");
        const sync = await fetch("sync?ID=ivo%3A%2F%2Fnowhere%2Fx&CIRCLE=52.9%20-28.1%200.01");
        const query = await fetch("query?MAXREC=-1");
        return [sync.headers.get("content-type"), await errorMessage(sync),
                await errorMessage(query)];
    }""")
    assert content_type.startswith("text/plain")
    assert from_sync.startswith("ID 'ivo://nowhere/x' is not in this archive"), from_sync
    assert from_query.startswith("MAXREC"), from_query


def test_votable_and_fits_catalogs_preselect_their_columns(page) -> None:  # noqa: ANN001
    table = Table({"Name": ["a", "b"], "alpha": [52.93, 52.94], "delta": [-28.09, -28.1]})
    votable = from_table(table)
    fields = votable.get_first_table().fields
    fields[1].ucd, fields[2].ucd = "pos.eq.ra;meta.main", "pos.eq.dec;meta.main"
    xml = io.BytesIO()
    writeto(votable, xml)
    upload(page, "targets.xml", xml.getvalue())
    page.wait_for_selector("#catalog-facts:text('2 rows')")
    assert "VOTABLE" in page.inner_text("#catalog-facts")
    assert (page.input_value("#ra-column"), page.input_value("#dec-column"),
            page.input_value("#id-column")) == ("alpha", "delta", "Name")
    fits_table = io.BytesIO()
    fits.BinTableHDU(Table({"objid": [7, 8, 9], "RAJ2000": [52.9, 52.91, 52.92],
                            "DEJ2000": [-28.1, -28.1, -28.1]})).writeto(fits_table)
    upload(page, "targets.fits", fits_table.getvalue())
    page.wait_for_selector("#catalog-facts:text('3 rows')")
    assert (page.input_value("#ra-column"), page.input_value("#id-column")) == ("RAJ2000",
                                                                                 "objid")
