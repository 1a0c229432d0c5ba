"""The HTML report in a real headless browser (Chromium through Playwright): it loads without console errors
or a single request beyond its own file, every chart has a size on screen, and a hostile model name is shown
as text rather than run."""

from __future__ import annotations

import shutil

import pytest
from helpers.plotted_runs import HOSTILE, decoder_run, encoder_run

from enginebench.formats.html import write_html_report

sync_api = pytest.importorskip("playwright.sync_api")  # pip install 'enginebench[test]'; `make test` has it
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome", "chrome"))), None)


@pytest.mark.slow  # a real Chromium
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found on PATH (apt-get install chromium)")
def test_the_report_renders_in_a_browser_and_runs_nothing_it_was_given(tmp_path):
    report = tmp_path / "report.html"
    other = encoder_run(run_id="enc2")  # a second model: the model path becomes part of the charts' labels
    other.results = [r for r in other.results if r.engine == "onnxruntime" and r.scenario == "latency"]
    write_html_report([encoder_run(model=HOSTILE), other, decoder_run()], str(report))
    url = report.as_uri()
    requests, errors = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url, wait_until="load")

            assert requests == [url]
            assert errors == []
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert HOSTILE in page.inner_text("body")  # shown as typed, in the summary and the tables
            assert page.locator("script, img[src='x']").count() == 0

            charts = page.locator("figure svg")
            assert charts.count() == 7  # fidelity against speed once per encoder scenario
            for i in range(charts.count()):
                box = charts.nth(i).bounding_box()
                assert box and box["width"] > 200 and box["height"] > 150, (i, box)
            assert "/tmp/<script>window" in charts.nth(0).text_content()  # the model in SVG text, escaped

            screenshot = tmp_path / "report.png"
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.stat().st_size > 50_000
        finally:
            browser.close()
