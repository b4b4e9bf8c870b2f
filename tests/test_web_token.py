"""The web page on a service with bearer tokens (headless Chromium): without a token it
says what is missing; with one pasted it runs a catalog job, shows the gallery's pictures
and downloads the manifest, all with the token sent as an Authorization header."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from server import LiveServer, assert_valid_votable, serve_archive
from test_web_browser import (  # noqa: F401  (the browser fixture)
    BRIGHT,
    browser,
    catalog_csv,
    images_loaded,
    open_page,
    upload,
)

pytestmark = pytest.mark.browser

TOKEN = "carol-page-token"


@pytest.fixture(scope="module")
def server(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[LiveServer]:
    with serve_archive(demo_archive, tmp_path_factory.mktemp("web-token"),
                       tokens=f"carol:{TOKEN}") as live:
        yield live


def test_page_works_with_a_pasted_token(browser, server: LiveServer,  # noqa: ANN001, F811
                                        demo_archive: Path) -> None:
    with open_page(browser, server.base_url + "/") as page:
        page.wait_for_selector("#error-submit:not([hidden])")
        assert "bearer token" in page.inner_text("#error-submit")

        page.fill("#token", TOKEN)
        page.click("#token-save")
        page.wait_for_selector("body[data-ready=true]")
        assert "token set" in page.inner_text("#token-state")
        upload(page, "targets.csv", catalog_csv(demo_archive, 3, ids=BRIGHT))
        page.wait_for_selector("#catalog-summary:not([hidden])")
        page.check("#instruments input[value=NISP]")
        page.fill("#size", "16")
        page.click("#submit-job")
        page.wait_for_selector("#job-rows tr[data-phase=COMPLETED]")
        page.wait_for_selector("#gallery:not([hidden]) #gallery-table tbody tr")
        count = images_loaded(page, "#gallery-table img.thumb")
        assert count >= 3
        assert page.locator("#gallery-table img.thumb").first.get_attribute("src").startswith(
            "blob:")
        with page.expect_download() as manifest_download:
            page.click("#download-manifest")
        manifest = assert_valid_votable(Path(manifest_download.value.path()).read_bytes())
        assert len(manifest.get_first_table().array) >= 3
