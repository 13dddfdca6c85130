"""Headless Chromium for the pages' tests: Debian's chromium and chromium-driver (installed with apt as root when
missing), driven by selenium. `load` opens a page from its file:// path and reports what a reader would see."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np

from support.system_packages import apt_install

PACKAGES = ["chromium", "chromium-driver"]

# Every <audio> with its ready state and duration (or its error), every <img> with its decoded width.
MEDIA = """return {
  audio: [...document.querySelectorAll('audio')].map(a => ({src: a.src, ready: a.readyState, duration: a.duration,
                                                           error: a.error && a.error.code})),
  images: [...document.querySelectorAll('img')].map(i => ({src: i.src, complete: i.complete, width: i.naturalWidth})),
};"""


def install() -> str:
    """'' when Chromium and its driver are there (installing them if needed), else why not."""
    return apt_install(PACKAGES, ["chromium", "chromedriver"])


def load(page: Path, timeout: float = 60) -> tuple[dict, list[dict], np.ndarray]:
    """(media states, console messages of level SEVERE, screenshot [H, W, 3]) of `page` once every audio element
    has its metadata (or failed) and every image is complete."""
    import matplotlib.image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000", "--mute-audio"):
        options.add_argument(flag)
    options.add_argument("--allow-file-access-from-files")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(page.resolve().as_uri())
        deadline = time.time() + timeout
        while True:
            media = driver.execute_script(MEDIA)
            settled = all(a["ready"] >= 1 or a["error"] for a in media["audio"]) and all(
                i["complete"] for i in media["images"]
            )
            if settled or time.time() > deadline:
                break
            time.sleep(0.2)
        errors = [m for m in driver.get_log("browser") if m["level"] == "SEVERE"]
        shot = matplotlib.image.imread(io.BytesIO(driver.get_screenshot_as_png()), format="png")[..., :3]
    finally:
        driver.quit()
    return media, errors, shot
