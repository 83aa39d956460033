"""Open a loclab report.html in headless Chromium and check it renders: every figure decodes, nothing overflows.

Usage: python scripts/check_report_browser.py STUDY/report.html [--screenshot OUT.png]
Needs Debian's `chromium` and `chromium-driver` and the `selenium` package (developer tools, not loclab
dependencies). Prints what it saw and exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHECK_JS = """
const imgs = [...document.images];
const vw = document.documentElement.clientWidth;
const wide = [...document.querySelectorAll('body *')].filter(e => {
  const r = e.getBoundingClientRect();
  // a table may scroll inside its own box (overflow-x: auto); anything else must fit the page
  return r.right > vw + 1 && !e.closest('table') && !e.closest('pre');
}).map(e => e.tagName + (e.className ? '.' + e.className : ''));
return {
  images: imgs.length,
  decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
  broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
  headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
  tables: document.querySelectorAll('table').length,
  page_width: vw,
  scroll_width: document.documentElement.scrollWidth,
  overflowing: wide.slice(0, 10),
};
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("report", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={args.width},1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(args.report.resolve().as_uri())
        seen = driver.execute_script(CHECK_JS)
        if args.screenshot:
            height = driver.execute_script("return document.body.scrollHeight")
            driver.set_window_size(args.width, min(height, 16000))
            driver.save_screenshot(str(args.screenshot))
    finally:
        driver.quit()
    print(json.dumps(seen, indent=1))
    ok = seen["images"] > 0 and seen["decoded"] == seen["images"] and not seen["overflowing"] \
        and seen["scroll_width"] <= seen["page_width"]
    print("OK: every figure decodes and nothing overflows" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
