"""The demo page driven in a real browser: headless Chromium through selenium (Debian's `chromium` and
`chromium-driver`; `.ci/run` installs them). Skipped, with the reason, where no browser can be had.

Set ``TBPS_SCREENSHOT=docs/images/demo.png`` to refresh the screenshot the docs and the Space README show.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


def _browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,2200"):
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    try:
        return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as err:  # a browser that cannot start here (missing libraries, no /dev/shm, ...)
        pytest.skip(f"headless Chromium did not start: {type(err).__name__}: {str(err).splitlines()[0]}")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from test_demo import SMALL, make_demo_model

    from tbps_hf.demo import build_engine

    root = tmp_path_factory.mktemp("browser")
    make_demo_model(root / "model", root / "data")
    return build_engine(
        root / "model", dataset="procpedes", cache_dir=root / "data", dataset_options=SMALL, progress=False,
        device="cpu",
    )  # fmt: skip


@pytest.mark.slow
def test_search_select_and_see_the_attention_map_in_chromium(engine, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from tbps_hf.demo import build_demo

    driver = _browser()
    k = 6
    demo = build_demo(engine=engine, top_k=k)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(demo.local_url)
        box = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#query textarea")))
        query = engine.example_queries("procpedes test")[0]
        box.send_keys(query)
        driver.find_element(By.CSS_SELECTOR, "#search").click()
        thumbs = wait.until(lambda d: (lambda imgs: imgs if len(imgs) == k else False)(
            d.find_elements(By.CSS_SELECTOR, "#results img")))  # fmt: skip
        assert all(img.get_attribute("src") for img in thumbs)
        message = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#message").text.strip() or False)
        expected = engine.search(query, k, "procpedes test")
        assert f"First true match at rank {expected.first_true_rank}" in message

        thumbs[0].click()
        attention = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#attention img")))
        assert attention.get_attribute("src")
        explanation = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#explanation").text.strip() or False)
        assert expected.hits[0].label in explanation and "Noun phrases" in explanation
        assert driver.find_element(By.CSS_SELECTOR, "#crop img").get_attribute("src")

        # "Random query" fills a caption of the split and searches it: judged (rank, AP, ✓/✗ marks).
        driver.find_element(By.CSS_SELECTOR, "#random").click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#query textarea").get_attribute("value") != query)
        picked = driver.find_element(By.CSS_SELECTOR, "#query textarea").get_attribute("value")
        assert picked in engine.gallery("procpedes test").queries
        judged = engine.search(picked, k, "procpedes test")
        wait.until(lambda d: f"First true match at rank {judged.first_true_rank}" in d.find_element(By.CSS_SELECTOR, "#message").text)

        # Uploading a crop in the page (the accordion's file input) adds it to this session's searches.
        engine.gallery(None).load(0).save(tmp_path / "mine.png")
        driver.find_element(By.CSS_SELECTOR, "#uploads button").click()  # open the accordion
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(tmp_path / "mine.png"))
        wait.until(lambda d: "1 uploaded crop(s)" in d.page_source)

        shot = Path(os.environ.get("TBPS_SCREENSHOT") or tmp_path / "demo.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        driver.quit()
        demo.close()
