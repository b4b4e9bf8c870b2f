"""The single-target form's time series in a real browser: a strip of stamps in time
order (epochs without a stamp say why) and the light curve plot."""

from __future__ import annotations

import pytest
from test_web_browser import (  # noqa: F401 - fixtures of the browser tests
    browser,
    images_loaded,
    page,
    screenshot,
    server,
)

pytestmark = pytest.mark.browser


def test_every_epoch_shows_a_strip_in_time_order_and_a_light_curve(  # noqa: F811
        page, variable_star: dict[str, str]) -> None:  # noqa: ANN001, F811
    star = variable_star
    page.fill("#quick-pos", f"{star['ra']} {star['dec']}")
    page.select_option("#quick-instrument", label="VIS")
    page.fill("#quick-size", "6")
    page.select_option("#quick-unit", "arcsec")
    page.check("#quick-series")
    page.click("#quick-submit")
    assert images_loaded(page, "#series-strip img", 20) == 20
    captions = page.locator("#series-strip figcaption").all_inner_texts()
    assert [c.split()[0] for c in captions] == [f"#{n}" for n in range(1, 21)]
    dates = [c.split()[1] for c in captions]
    assert dates == sorted(dates) and dates[0] == "2024-02-01"
    assert images_loaded(page, "#series-plot") == 1
    assert page.evaluate("document.getElementById('series-plot').naturalWidth") >= 600
    facts = page.inner_text("#series-facts")
    assert "20 epochs of VIS, 20 with a stamp" in facts
    screenshot(page, "time-series", "#quick")


def test_epochs_cut_by_the_image_edge_say_so(page) -> None:  # noqa: ANN001, F811
    # the field's east edge: dithers move it off some epochs' images
    page.fill("#quick-pos", "53.31123 -27.85")
    page.select_option("#quick-instrument", label="VIS")
    page.fill("#quick-size", "20")
    page.check("#quick-series")
    page.click("#quick-submit")
    page.wait_for_selector("#series-strip figure")
    page.wait_for_function("document.querySelectorAll('#series-strip figure').length === 20")
    captions = " ".join(page.locator("#series-strip figcaption").all_inner_texts())
    assert "partial" in captions or "no-overlap" in captions
