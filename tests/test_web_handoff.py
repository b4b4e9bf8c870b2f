"""The page hands results to desktop VO tools (SAMP Web Profile) and draws them on the sky.

SAMP: a real hub (pyvo's ``SAMPHubServer`` with the Web Profile on its fixed port 21012,
loopback only) whose consent dialog always accepts, and a registered client standing in
for TOPCAT and Aladin that records every message and fetches its URLs. Sky view: Aladin
Lite in headless Chromium draws the archive's footprints and a job's targets with no
request leaving the machine. ``WEB_SCREENSHOTS=<dir>`` also saves the sky view.
"""

from __future__ import annotations

import contextlib
import io
import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import astropy.units as u
import httpx
import numpy as np
import pytest
from astropy.io import fits
from mocpy import MOC
from PIL import Image
from playwright.sync_api import expect
from pyvo.samp import SAMPHubServer, SAMPIntegratedClient
from server import LiveServer, assert_valid_votable, start_server
from test_web_browser import (  # noqa: F401 - the browser fixture
    BRIGHT,
    SCREENSHOTS,
    WAIT_MS,
    browser,
    catalog_csv,
    images_loaded,
)
from uws_client import results_of, wait_final

from vo_service.config import Settings

pytestmark = pytest.mark.browser

WEB_PROFILE_PORT = 21012  # fixed by SAMP 1.3 §5.2: pages find the hub there
MTYPES = ("table.load.votable", "image.load.fits", "coverage.load.moc.fits",
          "table.highlight.row", "coord.pointAt.sky")
FOOTPRINT_RGB = (0x22, 0xD3, 0xEE)
TARGET_RGB = (0xF4, 0x3F, 0x5E)


class AlwaysConsent:
    """A Web Profile consent dialog (pyvo/astropy ``web_profile_dialog``) that accepts every
    registration and remembers who asked: the hub hands it ``queue_request`` and
    ``queue_result`` when it starts."""

    def __init__(self) -> None:
        self.asked: list[tuple] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._answer, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _answer(self) -> None:
        while not self._stop.is_set():
            try:
                request = self.queue_request.get(timeout=0.1)
            except (AttributeError, queue.Empty):
                continue
            self.asked.append(request)
            self.queue_result.put(True)


class Recorder:
    """A SAMP client subscribed to the hand-off MTypes, recording what arrives."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        self.client = SAMPIntegratedClient(name="recorder", addr="127.0.0.1")

    def connect(self, hub: SAMPHubServer) -> None:
        self.client.connect(hub_params=hub.params)
        for mtype in MTYPES:
            self.client.bind_receive_notification(mtype, self._note)

    def _note(self, private_key, sender_id, mtype, params, extra) -> None:  # noqa: ANN001
        self.received.append((mtype, dict(params)))

    def wait_for(self, page, mtype: str, count: int = 1) -> list[dict]:  # noqa: ANN001
        """The params of the last ``count`` messages of ``mtype`` once that many arrived.
        Waits through the page: Playwright routes the page's requests (to the hub too)
        only while the test is inside a Playwright call."""
        deadline = time.monotonic() + WAIT_MS / 1000
        while time.monotonic() < deadline:
            found = [params for kind, params in self.received if kind == mtype]
            if len(found) >= count:
                return found[-count:]
            page.wait_for_timeout(50)
        raise AssertionError(f"no {count} x {mtype} arrived; got {self.received}")

    def clear(self) -> None:
        self.received.clear()


@pytest.fixture(scope="module")
def samp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Recorder, AlwaysConsent]]:
    """A SAMP hub with the Web Profile on 127.0.0.1:21012 and a recording client."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", WEB_PROFILE_PORT)) == 0:
            pytest.fail(f"port {WEB_PROFILE_PORT} is taken: a SAMP hub (TOPCAT, Aladin) runs "
                        "here; stop it for this test")
    consent = AlwaysConsent()
    hub = SAMPHubServer(web_profile=True, web_profile_dialog=consent, addr="127.0.0.1",
                        lockfile=str(tmp_path_factory.mktemp("samp") / "samp-lock"))
    hub.start(wait=False)
    consent.start()
    recorder = Recorder()
    recorder.connect(hub)
    yield recorder, consent
    with contextlib.suppress(Exception):
        recorder.client.disconnect()
    consent.stop()
    hub.stop()


@pytest.fixture(scope="module")
def server(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(Settings(data_roots=(demo_archive,),
                                 state_dir=tmp_path_factory.mktemp("web-handoff")))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def job(server: LiveServer, demo_archive: Path) -> dict:
    """A finished catalog job of bright demo sources in three NISP bands."""
    with httpx.Client(timeout=120) as client:
        created = client.post(server.url("async"), data={
            "UPLOAD": "cat,param:cat", "INSTRUMENT": "NISP",
            "BANDNAME": ["NIR-Y", "NIR-J", "NIR-H"], "PRODUCTTYPE": "BGSUB", "SIZE": "32",
            "RUNID": "bright", "PHASE": "RUN"},
            files={"cat": ("bright.csv", catalog_csv(demo_archive, 8, ids=BRIGHT))},
            follow_redirects=True)
        root = wait_final(client, str(created.url))
        results = results_of(root)
    job_id = str(created.url).rsplit("/", 1)[1]
    return {"id": job_id, "url": str(created.url), "results": results,
            "sky": httpx.get(server.url(f"api/jobs/{job_id}/sky")).json()}


@contextlib.contextmanager
def offline_page(chromium, url: str) -> Iterator[tuple[object, list[str]]]:  # noqa: ANN001
    """A page on ``url`` that may reach only the service and the SAMP hub (loopback);
    every other request is refused and listed. No JavaScript error may happen."""
    context = chromium.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(WAIT_MS)
    elsewhere: list[str] = []

    def route(request_route) -> None:  # noqa: ANN001
        request_url = request_route.request.url
        if request_url.startswith(("http://127.0.0.1:", "http://localhost:")):
            request_route.continue_()
        else:
            elsewhere.append(request_url)
            request_route.abort()

    context.route("**/*", route)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    yield page, elsewhere
    context.close()
    assert not problems, problems


def open_gallery(page, job: dict) -> None:  # noqa: ANN001
    page.click("#refresh-jobs")
    row = page.locator(f"#job-rows tr[data-job-id='{job['id']}']")
    row.get_by_role("button", name="Gallery").click()
    page.wait_for_selector("#gallery:not([hidden]) #gallery-table tbody tr")


def fetch(url: str) -> bytes:
    """What a desktop tool does with a received URL: a plain GET, no token, no cookies."""
    response = httpx.get(url, timeout=60)
    assert response.status_code == 200, (url, response.status_code, response.text[:300])
    return response.content


def load_moc(content: bytes, tmp_path: Path) -> MOC:
    path = tmp_path / f"moc-{len(list(tmp_path.iterdir()))}.fits"
    path.write_bytes(content)
    return MOC.load(str(path), format="fits")


def test_samp_messages_reach_a_desktop_client(browser, server: LiveServer, job: dict,  # noqa: ANN001, F811
                                              samp, tmp_path: Path) -> None:  # noqa: ANN001
    recorder, consent = samp
    recorder.clear()
    with offline_page(browser, server.base_url + "/") as (page, elsewhere):
        # the job list: the manifest to TOPCAT
        page.click("#refresh-jobs")
        row = page.locator(f"#job-rows tr[data-job-id='{job['id']}']")
        row.get_by_role("button", name="→ SAMP").click()
        (loaded,) = recorder.wait_for(page, "table.load.votable")
        manifest_url = job["results"]["manifest"][0]
        assert loaded["url"] == loaded["table-id"] == manifest_url
        assert "bright" in loaded["name"]
        manifest = assert_valid_votable(fetch(loaded["url"])).get_first_table().to_table()
        assert len(consent.asked) == 1  # the page registered once, the user was asked once
        identity, _address, origin = consent.asked[0]
        assert identity["samp.name"] == "vo-service" and origin == server.base_url
        # the status line follows the hub's answer: wait for it as a user would
        expect(page.locator("#jobs .samp-status")).to_contain_text(
            "sent the manifest to 1 SAMP client")

        # the gallery: the job's MOC and the archive's coverage
        open_gallery(page, job)
        page.click("#samp-job-moc")
        (job_moc,) = recorder.wait_for(page, "coverage.load.moc.fits")
        assert job_moc["url"] == job["results"]["coverage"][0]
        moc = load_moc(fetch(job_moc["url"]), tmp_path)
        targets = job["sky"]["targets"]
        assert all(moc.contains_lonlat([t["ra"]] * u.deg, [t["dec"]] * u.deg)[0]
                   for t in targets)
        page.click("#samp-archive-moc")
        archive = recorder.wait_for(page, "coverage.load.moc.fits", 2)[-1]
        assert archive["url"] == server.url("coverage")
        assert load_moc(fetch(archive["url"]), tmp_path).sky_fraction > moc.sky_fraction

        # every FITS stamp of the first target, then one stamp
        first = page.locator("#gallery-table tbody tr").first
        target_id = first.get_attribute("data-target")
        expected = [r for r in manifest if r["target_id"] == target_id and r["status"] == "ok"]
        first.locator("button.samp-stamps").click()
        stamps = recorder.wait_for(page, "image.load.fits", len(expected))
        assert {s["url"] for s in stamps} == {str(r["access_url"]) for r in expected}
        for stamp in stamps:
            assert stamp["image-id"] == stamp["url"] and target_id in stamp["name"]
            with fits.open(io.BytesIO(fetch(stamp["url"]))) as hdus:
                assert hdus[0].data.shape == (32, 32)
        recorder.clear()
        first.locator("button.samp-stamp").first.click()
        (one,) = recorder.wait_for(page, "image.load.fits")
        assert one["url"] in {str(r["access_url"]) for r in expected}

        # highlight: the target's manifest row in TOPCAT, its position in Aladin
        first.locator("button.samp-highlight").click()
        (highlighted,) = recorder.wait_for(page, "table.highlight.row")
        assert highlighted["table-id"] == highlighted["url"] == manifest_url
        row_index = int(highlighted["row"])
        assert manifest[row_index]["target_id"] == target_id  # 0-based, as SAMP counts
        (pointed,) = recorder.wait_for(page, "coord.pointAt.sky")
        assert float(pointed["ra"]) == pytest.approx(float(manifest[row_index]["ra"]))
        assert float(pointed["dec"]) == pytest.approx(float(manifest[row_index]["dec"]))
        expect(page.locator("#gallery .samp-status")).to_contain_text("to 1 SAMP client")
        assert elsewhere == []
    assert len(consent.asked) == 1


def colour_pixels(png: bytes, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    """How many pixels of a screenshot are close to ``rgb``."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(pixels - np.array(rgb)).max(axis=-1) <= tolerance).sum())


def texture(png: bytes, x: float, y: float, half: int = 6) -> float:
    """Standard deviation of the grey levels around (x, y) of a screenshot: about 0 on the
    empty sky, large on a picture of sky noise and stars."""
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L")).astype(float)
    row, column = int(round(y)), int(round(x))
    if not (half <= row < grey.shape[0] - half and half <= column < grey.shape[1] - half):
        return float("nan")
    return float(grey[row - half:row + half, column - half:column + half].std())


def test_sky_view_draws_footprints_and_targets_offline(browser, server: LiveServer,  # noqa: ANN001, F811
                                                      job: dict) -> None:
    with offline_page(browser, server.base_url + "/") as (page, elsewhere):
        page.locator("#sky").scroll_into_view_if_needed()
        page.wait_for_selector("#sky-view[data-footprints]")
        footprints = httpx.get(server.url("api/footprints")).json()
        assert int(page.get_attribute("#sky-view", "data-footprints")) == footprints["total"] > 0
        assert f"{footprints['total']} footprints" in page.inner_text("#sky-facts")
        page.wait_for_timeout(500)  # Aladin Lite draws on its next animation frames
        archive_view = page.locator("#sky-view").screenshot()
        box = page.locator("#sky-view").bounding_box()
        width, height = Image.open(io.BytesIO(archive_view)).size
        assert abs(width - box["width"]) < 2 and abs(height - box["height"]) < 2
        assert colour_pixels(archive_view, FOOTPRINT_RGB) > 500  # the footprints' outlines
        # the archive's own pictures under the footprints nearest the centre
        page.check("#sky-images")
        images = [f for f in footprints["footprints"] if f["type"] == "image"]
        page.wait_for_selector(f"#sky-view[data-images='{min(12, len(images))}']")
        page.wait_for_timeout(500)
        with_images = page.locator("#sky-view").screenshot()
        centres = [page.evaluate("([ra, dec]) => window.voSky.pixelOf(ra, dec)",
                                 np.mean(f["vertices"], axis=0).tolist()) for f in images]
        textured = [texture(with_images, x, y) - texture(archive_view, x, y)
                    for x, y in (c for c in centres if c)]
        assert sum(change > 5 for change in textured) >= 2  # sky noise and stars appeared
        page.uncheck("#sky-images")
        page.wait_for_selector("#sky-view[data-images='0']")

        open_gallery(page, job)
        page.locator("#sky").scroll_into_view_if_needed()
        page.wait_for_selector(f"#sky-view[data-targets='{len(job['sky']['targets'])}']")
        page.wait_for_timeout(500)
        job_view = page.locator("#sky-view").screenshot()
        assert colour_pixels(job_view, TARGET_RGB) > 20 * len(job["sky"]["targets"]) // 2

        # a click on a target shows its stamps beside the view
        target = job["sky"]["targets"][0]
        x, y = page.evaluate("([ra, dec]) => window.voSky.pixelOf(ra, dec)",
                             [target["ra"], target["dec"]])
        box = page.locator("#sky-view").bounding_box()
        page.mouse.click(box["x"] + x, box["y"] + y)
        page.wait_for_selector(f"#sky-target[data-row='{target['row']}']")
        assert target["target_id"] in page.inner_text("#sky-target h3")
        assert images_loaded(page, "#sky-target img", 3) == 3  # NIR-Y, NIR-J, NIR-H
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            page.check("#sky-images")
            page.wait_for_selector("#sky-view:not([data-images='0'])")
            page.wait_for_timeout(1000)
            page.locator("#sky").screenshot(path=str(Path(SCREENSHOTS) / "sky.png"))
        assert elsewhere == []  # no HiPS, no HiPS list, no logging: nothing left the machine

