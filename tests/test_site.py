"""The report's page (plots/site.py), read by a real browser: Debian's Chromium, headless.

How the browser is asked: over the DevTools protocol on a pipe (``--remote-debugging-pipe``: the browser reads
commands on fd 3 and answers on fd 4, NUL-separated JSON; no port, no WebSocket library). That is the robust
way, where ``--enable-logging=stderr`` is not: Chromium 156 logs ``console.error`` as ``INFO:CONSOLE`` and mixes
it with its own D-Bus noise, so a grep for "ERROR:CONSOLE" would pass a broken page. Over the protocol the test
sees, per page: every uncaught exception (``Runtime.exceptionThrown``), every console error or warning
(``Runtime.consoleAPICalled``), every error the browser itself logs (``Log.entryAdded``: a refused
Content-Security-Policy, a failed load) and every request the page makes (``Network.requestWillBeSent``),
and it reads back what the page's own inline check wrote on load (``<body data-images="N ok=N broken=0">``).
The screenshot is the plain ``--screenshot`` flag at 1280 x 2000, as a reader's laptop shows it.

Chromium is installed by ``make install-chromium`` (``make test`` depends on it); where it is missing these
tests fail, never skip. The results folder is written by the test (rows of tests/test_plots.py, no training),
and the report is made by the CLI, as ``make report`` makes it.
"""

import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench import results
from conftest import run_cli
from plots import claims, report, site
from test_plots import REFERENCE, RUNS, _history, _seeds

# as root in a container: no sandbox; nothing from the network (no QUIC, no background or component fetches)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
HOSTILE = "<script>alert(1)</script>"
PROVENANCE = {"tf_version": "2.18.1", "keras_version": "3.15.1", "horovod_version": "0.28.1", "host": "node-7",
              "git_commit": "424dc26"}


def chromium() -> str:
    """The browser's path; an assertion (a failure, never a skip) when it is missing."""
    path = shutil.which("chromium")
    assert path, "chromium is not installed: run `make install-chromium` (`make test` installs it)"
    return path


class Browser:
    """One headless Chromium driven over the DevTools pipe; ``load`` opens a page in a fresh tab."""

    def __init__(self, profile: Path):
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()

        def onto_3_and_4():  # in the child: the pipe ends onto fds 3 and 4 (via fds >= 10: they may be 3 or 4)
            r, w = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10), fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.log = profile / "chromium.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={profile / 'profile'}",
                                          "--remote-debugging-pipe", "about:blank"], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, close_fds=False, preexec_fn=onto_3_and_4,
                                         start_new_session=True)
        os.close(cmd_r)
        os.close(out_w)
        self._buf, self._id, self.events = b"", 0, []

    def _read(self, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._out_r], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                raise TimeoutError(f"chromium sent nothing for {timeout} s; its log: {self.log.read_text()[-2000:]}")
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                raise EOFError(f"chromium closed the pipe; its log: {self.log.read_text()[-2000:]}")
            self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        os.write(self._cmd_w, json.dumps({**message, **({"sessionId": session} if session else {})}).encode() + b"\0")
        while True:
            answer = self._read(timeout)
            if answer.get("id") == self._id:
                assert "error" not in answer, f"{method}: {answer['error']}"
                return answer["result"]
            self.events.append(answer)

    def wait(self, method: str, session: str, timeout: float = 30) -> dict:
        seen = [e for e in self.events if e.get("method") == method and e.get("sessionId") == session]
        while not seen:
            event = self._read(timeout)
            self.events.append(event)
            seen = [event] if event.get("method") == method and event.get("sessionId") == session else []
        return seen[0]

    def load(self, url: str, width: int = 1280, height: int = 900) -> "Tab":
        """``url`` in a new tab ``width`` CSS pixels wide, after its load event (the page's check has run)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=session)
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait("Page.loadEventFired", session)
        return Tab(self, session)

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, TimeoutError, AssertionError):
            self.send("Browser.close", timeout=10)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the browser we started and its children
            self.proc.wait(10)
        os.close(self._cmd_w)
        os.close(self._out_r)


class Tab:
    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session

    def eval(self, expression: str):
        got = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                session=self.session)
        assert "exceptionDetails" not in got, got
        return got["result"].get("value")

    def events(self, *methods: str) -> list[dict]:
        return [e["params"] for e in self.browser.events if e.get("sessionId") == self.session
                and e.get("method") in methods]

    def problems(self) -> list[str]:
        """Every uncaught exception, console error or warning, and error the browser logged, one line each."""
        out = [f"uncaught: {e['exceptionDetails'].get('exception', {}).get('description') or e['exceptionDetails']}"
               for e in self.events("Runtime.exceptionThrown")]
        out += [f"console.{e['type']}: {e['args']}" for e in self.events("Runtime.consoleAPICalled")
                if e["type"] in ("error", "warning", "assert")]
        out += [f"{e['entry']['source']} {e['entry']['level']}: {e['entry']['text']}"
                for e in self.events("Log.entryAdded") if e["entry"]["level"] in ("error", "warning")]
        return out

    def requests(self) -> list[str]:
        return [e["request"]["url"] for e in self.events("Network.requestWillBeSent")]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()


def _rows() -> pd.DataFrame:
    """tests/test_plots.py's runs with three seeds a side at 4096 and the provenance a trainer records."""
    rows = pd.concat([RUNS, pd.DataFrame(_seeds("p", "nlcg-fr", 4096, [0.61, 0.63, 0.62])
                                         + _seeds("q", "momentum", 4096, [0.31, 0.33, 0.30]))], ignore_index=True)
    return rows.assign(**PROVENANCE, wall_time_s=[30.0 * (i + 1) for i in range(len(rows))],
                       started_at=[f"2025-01-0{1 + i % 3}T10:00:{i:02d}+00:00" for i in range(len(rows))])


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """(the CLI's report folder of a written results folder, the CLI's output)."""
    tmp = tmp_path_factory.mktemp("site")
    folder = tmp / "results" / "toy"
    rows = _rows()
    for _, r in rows.iterrows():
        results.append_run(folder, r.to_dict(), _history(rows[rows.run_id == r.run_id]).to_dict("records"))
    p = run_cli(["report", str(folder), "--out", str(tmp / "figs"), "--reference", str(REFERENCE)])
    assert p.returncode == 0, p.stderr[-3000:]
    return tmp / "figs" / "toy", p


def _png(fig) -> bytes:
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    return buf.getvalue()


# ---- the page, as text -----------------------------------------------------------------------------------


def test_the_page_puts_the_primary_claim_first_then_the_figures_with_their_claims_the_runs_and_provenance(tmp_path):
    rows = _rows()
    doc = claims.build(rows, None, "imagenet")
    hist = _history(rows)
    made = {n: _png(report.draw(n, rows, hist, None, "imagenet", 4096)) for n in ("top1_vs_batch", "critical_batch")}
    (tmp_path / "extra.png").write_bytes(made["critical_batch"])
    text = site.page(doc, rows, {**made, "extra": tmp_path / "extra.png"})
    order = [text.index(s) for s in ('id="primary"', 'id="fig-top1_vs_batch"', 'id="fig-critical_batch"',
                                     'id="fig-extra"', 'id="runs"', 'id="provenance"')]
    assert order == sorted(order)
    primary = text[order[0]:order[1]]
    p = doc["primary"]
    assert p["verdict"] == "holds" and '<span class="verdict holds">holds</span>' in primary
    assert f"{p['gain_points']:+.2f} points" in primary and "[+27.5, +33.8]" in primary and "p &lt; 0.0001" in primary
    assert "nlcg-fr against the best baseline at batch 4096" in primary and "0, 1, 2" in primary  # the seeds
    # top1_vs_batch shows the per-batch comparisons: 256 (-2.00, no interval) and 4096 (+30.67 [...])
    batch = text[order[1]:order[2]]
    assert "budgets run at every batch (3 epochs)" in batch and "-2.00" in batch and "+30.67 [+27.5, +33.8]" in batch
    assert "No claims.json entry is mapped to this figure." in text[order[3]:order[4]]  # a figure it does not know
    assert "critical_batch" in text[order[2]:order[3]] and "needs 3 batches or more" in text[order[2]:order[3]]
    runs = text[order[4]:order[5]]
    assert runs.count("<tr>") == len(rows) + 1 and "diverged" in runs and "failed" in runs and "1 min 00 s" in runs
    prov = text[order[5]:]
    assert "2.18.1 (14 runs)" in prov and "424dc26" in prov and "node-7" in prov
    assert "2025-01-01 10:00:00 to 2025-01-03 10:00:11 UTC" in prov
    assert text.count("<script") == 1 and "http://" not in text and "https://" not in text  # no request possible
    assert ".pdf" not in text  # figures given as bytes have no PDF to link to
    with pytest.raises(ValueError, match="not a PNG"):
        site.page(doc, rows, {"bad": b"GIF89a"})


def test_the_critical_batch_and_noise_scale_figures_show_their_numbers():
    rows = _rows()
    doc = claims.build(rows, None, "imagenet")
    doc["critical_batch"] = [{"nlcg": "nlcg-fr", "baseline": "momentum", "b_crit_nlcg": 2048.4,
                              "b_crit_baseline": 512.0, "ratio": 4.0, "ratio_low": 1.5, "ratio_high": "inf",
                              "verdict": "holds", "extrapolated": True}]
    doc["noise_scale_mapping"] = {"n_runs": 12, "start": 540.2, "end": 1210.0, "batches": [
        {"global_batch": 4096, "paper_batch": 87461, "over_start": 7.58, "over_end": 3.39}]}
    png = _png(report.draw("top1_vs_batch", rows, _history(rows), None, "imagenet"))
    text = site.page(doc, rows, {"steps_to_target": png, "critical_batch": png, "noise_scale": png})
    crit = text[text.index('id="fig-critical_batch"'):text.index('id="fig-noise_scale"')]
    cells = "<td>nlcg-fr</td><td class=\"num\">2048</td><td>momentum</td><td class=\"num\">512</td>"
    assert cells in crit and "4.00 [1.50, inf] extrapolated" in crit and "verdict holds" in crit
    assert cells in text[:text.index('id="fig-critical_batch"')]  # steps_to_target: the steps the fit reads
    noise = text[text.index('id="fig-noise_scale"'):text.index('id="runs"')]
    assert "start 540, end 1,210" in noise and "87,461" in noise and "7.58" in noise and "3.39" in noise


def test_every_string_from_the_data_is_escaped(tmp_path, browser):
    rows = _rows()
    rows.loc[rows.run_id == "a0", "run_id"] = HOSTILE
    rows.loc[rows.run_id == "c", "optimizer"] = f"rmsprop{HOSTILE}"
    rows["host"] = '"><img src=x onerror=alert(2)>'
    doc = claims.build(rows, None, "imagenet")
    doc["sweep"] = HOSTILE
    doc["primary"]["optimizer"] = HOSTILE
    doc["claims"][0]["label"] = HOSTILE
    png = _png(report.draw("top1_vs_batch", rows, _history(rows), None, "imagenet"))
    text = site.page(doc, rows, {f'"><b>{HOSTILE}': png})
    assert "alert(1)</script>" not in text and "<img src=x" not in text and "<b>" not in text
    assert text.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6 and text.count("<script") == 1
    (tmp_path / "index.html").write_text(text)
    tab = browser.load((tmp_path / "index.html").as_uri())
    assert tab.problems() == []  # an injected <script> would be refused by the page's CSP, and logged
    shown = tab.eval("document.body.innerText")
    assert shown.count(HOSTILE) >= 5 and "onerror=alert(2)" in shown
    assert tab.eval("document.images.length") == 1 and tab.eval("document.title").startswith(HOSTILE)


def test_write_replaces_the_page_atomically(tmp_path):
    rows = _rows()
    doc = claims.build(rows, None, "imagenet")
    (tmp_path / site.NAME).write_text("old")
    path = site.write(tmp_path, doc, rows, {})
    assert path == tmp_path / "index.html" and path.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]  # no temp file left


# ---- the report's page in Chromium -----------------------------------------------------------------------


def test_the_report_cli_writes_the_page_last_and_names_it(reported):
    out, p = reported
    page = out / "index.html"
    assert f"the page: {page}" in p.stdout and "# Claims: toy" in p.stdout
    others = [f for f in out.iterdir() if f.name != "index.html"]
    assert others and all(f.stat().st_mtime_ns <= page.stat().st_mtime_ns for f in others)
    assert not [f for f in out.iterdir() if f.name.startswith(".")]  # no temp file left
    text = page.read_text()
    ids = [text.index(f'id="fig-{n}"') for n in report.FIGURES]
    assert ids == sorted(ids) and text.index('id="primary"') < ids[0] and ids[-1] < text.index('id="runs"')
    assert all(f'href="{n}.pdf"' in text for n in report.FIGURES)  # each figure's PDF beside it, relative


def test_the_reports_page_loads_in_chromium_with_no_error_no_request_and_every_image_decoded(reported, browser):
    out, _ = reported
    url = (out / "index.html").as_uri()
    tab = browser.load(url)
    assert tab.problems() == []
    assert {u for u in tab.requests() if not u.startswith("data:image/png;base64,")} == {url}
    n = len(report.FIGURES)
    assert tab.eval("document.body.getAttribute('data-images')") == f"{n} ok={n} broken=0"
    assert tab.eval("[...document.querySelectorAll('h2')].map(h => h.id || h.closest('section').id)") == \
        ["primary", "figures", "runs", "provenance"]
    # at 1280 px each figure sits beside its claims; nothing is wider than the window
    assert tab.eval("document.documentElement.scrollWidth") <= 1280
    img, aside = tab.eval("(s => [s.children[0].getBoundingClientRect().right, s.children[1].getBoundingClientRect()"
                          ".left])(document.getElementById('fig-top1_vs_batch'))")
    assert img < aside


def test_the_reports_page_reads_on_a_narrow_window(reported, browser):
    out, _ = reported
    tab = browser.load((out / "index.html").as_uri(), width=400, height=800)
    assert tab.problems() == []
    assert tab.eval("document.documentElement.scrollWidth") <= 400  # the page itself never scrolls sideways
    assert tab.eval("Math.max(...[...document.images].map(i => i.getBoundingClientRect().width))") <= 400
    # the runs table scrolls inside its own box; the figures stack above their claims
    assert tab.eval("(b => b.scrollWidth > b.clientWidth)(document.querySelector('#runs + p + .scroll'))")
    top, below = tab.eval("(s => [s.children[0].getBoundingClientRect().bottom, s.children[1].getBoundingClientRect()"
                          ".top])(document.getElementById('fig-top1_vs_batch'))")
    assert top <= below


def test_a_screenshot_at_1280_px_is_not_blank(reported, tmp_path):
    out, _ = reported
    shot = tmp_path / "page.png"
    p = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}", "--hide-scrollbars",
                        f"--screenshot={shot}", "--window-size=1280,2000", (out / "index.html").as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and shot.exists(), p.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (2000, 1280, 3)
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    nonwhite = float((pixels.min(axis=2) < 235).mean())
    assert colours > 500 and nonwhite > 0.05, (colours, nonwhite)
