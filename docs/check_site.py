"""Checks the built site in a real headless browser (Chromium).

    python docs/check_site.py [site]

Opens every page of the built site (`mkdocs build`) in headless Chromium at
a laptop's width (1280 x 900) and checks what a reader sees:

* the page itself never scrolls sideways (a wide table scrolls inside its
  own box, the text does not);
* every docstring example is rendered as a code block (`>>>` inside
  `<code>`), never as nested quotes (`>>>` read as Markdown), which ran the
  examples' lines together into one paragraph.

Needs Debian's `chromium` and `chromium-driver` and the `selenium` package
(`.ci/test-all-backends` installs them). Exits 1 and names each page and
what is wrong; prints how many pages and examples it checked.
"""

import os
import pathlib
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

WIDTH, HEIGHT = 1280, 900

_MEASURE = """
const page = document.documentElement;
const codeExamples = [...document.querySelectorAll("pre code")].filter(c => c.textContent.includes(">>>")).length;
const quotedExamples = [...document.querySelectorAll("blockquote blockquote")]
  .filter(q => q.textContent.trim().length > 0).length;
return {overflow: page.scrollWidth - window.innerWidth, codeExamples, quotedExamples};
"""


def _driver():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={WIDTH},{HEIGHT}"):
        options.add_argument(flag)
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def check(site):
    pages = sorted(p for p in pathlib.Path(site).rglob("index.html") if "assets" not in p.parts)
    if not pages:
        raise SystemExit(f"No pages under {site!r}: run `mkdocs build` first.")
    problems, examples = [], 0
    driver = _driver()
    try:
        for page in pages:
            driver.get(page.resolve().as_uri())
            seen = driver.execute_script(_MEASURE)
            name = str(page.relative_to(site))
            examples += seen["codeExamples"]
            if seen["overflow"] > 0:
                problems.append(f"{name}: the page scrolls sideways by {seen['overflow']} px at {WIDTH} px")
            if seen["quotedExamples"]:
                problems.append(f"{name}: {seen['quotedExamples']} example(s) rendered as nested quotes, not code")
    finally:
        driver.quit()
    for problem in problems:
        print(f"check_site: {problem}")
    print(f"check_site: {len(pages)} pages, {examples} code examples checked in Chromium; {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(check(sys.argv[1] if len(sys.argv) > 1 else "site"))
