"""Open an HTML report in a real headless browser and read back which images decoded.

Used by test/test_report.py and test/test_demo.py. Debian's ``chromium`` (``make setup`` installs
it where apt is available); :func:`chromium_or_skip` skips the calling test with a clear message
where no Chromium/Chrome binary is found.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Appended to a copy of the report (same folder, so relative URLs resolve exactly as in the
# report): after the load event it writes every image's natural size into the DOM, which
# `--dump-dom` then prints.
_PROBE = """
<script>
window.addEventListener('load', function () {
  var out = Array.prototype.map.call(document.images, function (img) {
    return {src: img.getAttribute('src'), complete: img.complete,
            naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight};
  });
  var pre = document.createElement('pre');
  pre.id = 'image-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"""


def chromium_or_skip() -> str:
    """Path of a Chromium / Chrome binary, or skip the test saying how to get one."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "no headless browser (chromium) found: `make setup` installs Debian's chromium where apt is "
        "available (apt-get install chromium); the pure-Python src check still ran"
    )


def decoded_images(report: Path, browser: str, timeout_s: float = 120.0) -> List[Dict[str, object]]:
    """Load ``report`` (an HTML file) in headless ``browser``; one dict per ``<img>``.

    Returns:
        ``[{"src", "complete", "naturalWidth", "naturalHeight"}, ...]`` in document order; a
        natural width of 0 means the browser could not load or decode that image.

    Raises:
        AssertionError: the browser failed or printed no result.
    """
    report = Path(report).resolve()
    text = report.read_text(encoding="utf-8")
    probed = text.replace("</body>", _PROBE + "</body>") if "</body>" in text else text + _PROBE
    fd, probe_name = tempfile.mkstemp(prefix=".imgcheck_", suffix=".html", dir=report.parent)
    os.close(fd)
    probe = Path(probe_name)
    try:
        probe.write_text(probed, encoding="utf-8")
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            cmd = [
                browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
                "--virtual-time-budget=20000", "--dump-dom", probe.as_uri(),
            ]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    finally:
        probe.unlink(missing_ok=True)
    match = re.search(r'<pre id="image-check">(.*?)</pre>', result.stdout, re.S)
    assert match, f"browser printed no image report (rc {result.returncode}):\n{result.stderr[-3000:]}"
    return json.loads(html.unescape(match.group(1)))
