"""`nascomp ui` seen through a real browser: the trials of a search are listed on the runs page.

MLflow 3 lists a search's trials collapsed under their parent run (one row with a "+" expander),
so their names are not in the page until the expander is clicked. The test drives headless
Chromium over the DevTools protocol (on a pipe: no extra package, no browser download), clicks
the expander with real mouse events, and reads the rendered text.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.search.conftest import nascomp, tiny_args
from tests.search.raycluster import free_port, processes_in_sessions

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    # Without these, Chromium dials Google's hosts at start and this closed network refuses them.
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "headless Chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("NASCOMP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"NASCOMP_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def _above_4(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fd 3 in, fd 4 out),
    the transport Playwright itself uses; messages are JSON separated by NUL bytes."""

    def __init__(self, executable: str, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # bash puts the two pipe ends on the fd numbers Chromium expects, then execs it.
        # Move them above 4 first: one of them may be fd 3 itself (pytest's captures hold
        # low numbers), and the first redirection would then clobber it.
        to_browser_r, from_browser_w = (_above_4(fd) for fd in (to_browser_r, from_browser_w))
        self.process = subprocess.Popen(
            [
                "/bin/bash",  # dash takes single-digit fd numbers only
                "-c",
                f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}',
                executable,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]

    def call(
        self, method: str, params: dict | None = None, *, page: bool = False, timeout_s: float = 30
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if page:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:  # anything else is an event we do not use
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, page=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 60) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout_s
        error = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError as exc:  # the page is still loading (no document.body yet)
                value, error = None, exc
            if value:
                return value
            time.sleep(0.25)
        raise TimeoutError(f"never true: {expression} (last error: {error})")

    def click(self, x: float, y: float) -> None:
        # Real mouse events at a point, as a user's click, not element.click() in the page.
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
                page=True,
            )

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", {"format": "png"}, page=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            self.call("Browser.close", timeout_s=5)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)


@pytest.fixture
def browser() -> Iterator[Browser]:
    executable = _chromium()
    profile = Path(tempfile.mkdtemp(prefix="chromium-"))
    opened = Browser(executable, profile)
    try:
        yield opened
    finally:
        opened.close()
        shutil.rmtree(profile, ignore_errors=True)


_EXEC_WITH_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def _start_ui(db: Path, port: int, cwd: Path) -> tuple[subprocess.Popen, str]:
    """`nascomp ui` as a user starts it; return the process and the URL it prints."""
    exe = Path(sys.executable).with_name("nascomp")
    command = [str(exe), "ui", "--tracking-uri", f"sqlite:///{db}", "--port", str(port)]
    ui = subprocess.Popen(
        # With Ctrl-C's default action, as in a terminal: a harness started in the background
        # (`cmd &` in a script) ignores SIGINT, and every process it starts inherits that; a
        # pytest worker that ran a search in-process has Tune's handler instead, which an exec
        # resets. So whether `nascomp ui` heard Ctrl-C depended on the tests run before.
        [sys.executable, "-c", _EXEC_WITH_DEFAULT_SIGINT, *command],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        # Its own session: it stands for a terminal, and lets the test find its mlflow children.
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        # Read to the end, even after the URL: the mlflow server logs every request to this
        # pipe and would block once it filled.
        assert ui.stdout is not None
        for line in ui.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    ui.lines = lines  # type: ignore[attr-defined]  # what it prints later, for _stop_ui
    deadline = time.monotonic() + 120
    seen = []
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if line.startswith("MLflow UI: "):
            # Said before the server answers, so a slow start is not a silent terminal.
            assert seen[0].startswith(f"starting the MLflow UI on http://127.0.0.1:{port} ")
            return ui, line.removeprefix("MLflow UI: ").strip()
    _stop_ui(ui)
    raise AssertionError("nascomp ui printed no URL:\n" + "".join(seen[-40:]))


def _stop_ui(ui: subprocess.Popen) -> None:
    # Ctrl+C, as a user stops it: nascomp catches KeyboardInterrupt and stops the mlflow server.
    # It gives the server 10 s after SIGTERM and its helpers 5 s more: the wait here is well
    # past that bound, so a machine slowed by the tests running beside it is not a hang.
    ui.send_signal(signal.SIGINT)
    try:
        ui.wait(timeout=60)
        return
    except subprocess.TimeoutExpired:
        pass
    # A hang: say what was still running and what nascomp ui printed last, then kill every
    # process of the session (the server has a process group of its own), so that a failed
    # test leaves no server behind.
    left = processes_in_sessions({ui.pid})
    for process in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
    ui.wait(timeout=10)
    printed: list[str] = []
    with contextlib.suppress(queue.Empty):
        while (line := ui.lines.get(timeout=1)) is not None:  # type: ignore[attr-defined]
            printed.append(line)
    running = "\n".join(process.cmdline[:160] for process in left)
    raise AssertionError(
        f"nascomp ui still running 60 s after Ctrl-C; its session held:\n{running}\n"
        "it printed last:\n" + "".join(printed[-30:])
    )


def _port_free(port: int) -> bool:
    """Nothing listens there. SO_REUSEADDR, as servers set it, looks past the TIME_WAIT
    entries that the browser's closed connections leave for a minute."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# The runs table is an ag-grid; a run's name is a link to its page, and the parent's Run Name
# cell holds the expander button that reveals its children.
EXPANDER_JS = """(() => {
  const link = document.querySelector('a[href$="/runs/%s"]');
  const button = link && link.closest('[role="gridcell"]').querySelector('button');
  if (!button) return null;
  const box = button.getBoundingClientRect();
  return box.width > 0 ? {x: box.x + box.width / 2, y: box.y + box.height / 2} : null;
})()"""

# Names shown as text a user can see: innerText skips what is hidden, and the element must take
# up room inside the window.
VISIBLE_NAMES_JS = """(() => {
  const names = %s;
  const text = document.body.innerText;
  return names.filter(name => text.includes(name) && [...document.querySelectorAll('a')].some(
    a => a.innerText.trim() === name && (r => r.width > 0 && r.height > 0 && r.bottom > 0
      && r.top < window.innerHeight)(a.getBoundingClientRect())));
})()"""

# Where the artifact tree shows a file's name, to click it.
TREE_ITEM_JS = """(() => {
  const name = %s;
  const item = [...document.querySelectorAll('body *')].find(e => [...e.childNodes].some(
    n => n.nodeType === Node.TEXT_NODE && n.textContent.trim() === name));
  const box = item && item.getBoundingClientRect();
  return box && box.width > 0 ? {x: box.x + box.width / 2, y: box.y + box.height / 2} : null;
})()"""

# The artifact viewer shows the PNG (loaded, with pixels) or the HTML page (its iframe, which
# MLflow sandboxes with scripts allowed: the plotly page draws inside it).
# (The viewer loads the file itself and shows it from a blob: URL, so the image is known by
# its size: the plot is over a thousand pixels wide, the page's icons are small.)
IMAGE_SHOWN_JS = """(() => [...document.images].some(
  i => i.complete && i.naturalWidth >= 800 && i.getBoundingClientRect().width > 200) || null)()"""
PAGE_SHOWN_JS = """(() => {
  const frame = document.querySelector('iframe.mlflow-html-iframe');
  return frame && frame.getBoundingClientRect().height > 100 || null;
})()"""

SCROLL_TO_FRONT_JS = """(() => {
  const heading = [...document.querySelectorAll('strong')]
    .find(e => e.innerText.includes('Pareto front'));
  if (heading) heading.scrollIntoView();
  return Boolean(heading);
})()"""

# Run ids that the run page's description links to (the front table of the parent run).
FRONT_LINKS_JS = """(() => {
  const ids = [...document.querySelectorAll('a[href*="/runs/"]')]
    .filter(a => /^[0-9a-f]{8}$/.test(a.innerText.trim()))
    .map(a => a.getAttribute('href').split('/runs/')[1].split('?')[0]);
  return ids.length ? ids : null;
})()"""


@pytest.mark.e2e
def test_ui_lists_the_trials_of_a_search(workdir: Path, browser: Browser) -> None:
    from mlflow.tracking import MlflowClient

    done = nascomp("search", *tiny_args(workdir), cwd=workdir, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    db = workdir / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("nascomp")
    assert experiment is not None
    (parent,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`nascomp.role` = 'search'"
    )
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    trial_names = sorted(run.info.run_name for run in children)
    # Each name says the model, and a finished trial's leads with its objectives' values, so
    # the runs table shows them without the user adding columns.
    assert len(trial_names) == 4 and all(" | cnn " in name for name in trial_names)
    finished = [r for r in children if r.data.tags["nascomp.status"] == "ok"]
    assert finished
    for run in finished:
        assert run.info.run_name.startswith(f"{run.data.metrics['val_accuracy']:.4f} · ")

    port = free_port()
    ui, url = _start_ui(db, port, workdir)
    try:
        runs = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs"
        assert url == f"{runs}?workflowType=machine_learning"  # the model-training workspace
        browser.call("Page.navigate", {"url": url}, page=True)
        # The parent row renders first, with its expander; its children are collapsed.
        browser.wait_for(
            f"document.body.innerText.includes({json.dumps(parent.info.run_name)})", timeout_s=90
        )
        expander = browser.wait_for(EXPANDER_JS % parent.info.run_id)
        visible = json.dumps(trial_names)
        before = browser.evaluate(VISIBLE_NAMES_JS % visible)
        if len(before) < len(trial_names):
            browser.click(expander["x"], expander["y"])
        try:
            shown = browser.wait_for(
                f"(v => v.length === {len(trial_names)} && v)({VISIBLE_NAMES_JS % visible})",
                timeout_s=30,
            )
        finally:
            browser.screenshot(workdir / "runs-page.png")
        assert sorted(shown) == trial_names

        # The parent run's page: its description is the front, each row a link to its trial.
        parent_page = f"{runs}/{parent.info.run_id}?workflowType=machine_learning"
        browser.call("Page.navigate", {"url": parent_page}, page=True)
        try:
            browser.wait_for("document.body.innerText.includes('Pareto front (final)')", 90)
            front_links = browser.wait_for(FRONT_LINKS_JS, timeout_s=30)
        finally:
            browser.evaluate(SCROLL_TO_FRONT_JS)  # the screenshot shows the table
            browser.screenshot(workdir / "parent-run.png")
        ranked = {r.info.run_id for r in finished}
        assert front_links and set(front_links) <= ranked
        # The plots the parent run carries: served, and shown by the UI's artifact viewer.
        for name, kind, shown_js in (
            ("pareto.png", b"\x89png", IMAGE_SHOWN_JS),
            ("pareto.html", b"<html", PAGE_SHOWN_JS),
        ):
            query = f"path={name}&run_uuid={parent.info.run_id}"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/get-artifact?{query}") as reply:
                assert kind in reply.read(200).lower(), name
            viewer = f"{runs}/{parent.info.run_id}/artifacts?workflowType=machine_learning"
            browser.call("Page.navigate", {"url": viewer}, page=True)
            try:
                item = browser.wait_for(TREE_ITEM_JS % json.dumps(name), timeout_s=60)
                browser.click(item["x"], item["y"])  # as a user picks the file in the tree
                assert browser.wait_for(shown_js, timeout_s=60), name
                time.sleep(5)  # for the reviewer's screenshot: the page's script draws the plot
            finally:
                browser.screenshot(workdir / f"artifact-{name}.png")
        # The server ran without MLflow's GenAI job runners (huey consumers, started with it
        # when enabled): nothing here used them, and each imports MLflow on the user's cores.
        running = [process.cmdline for process in processes_in_sessions({ui.pid})]
        assert any(" server " in line for line in running), running
        assert not [line for line in running if "huey" in line], running
    finally:
        _stop_ui(ui)

    # The server is gone with nascomp ui: its port is free and no process of it is left.
    assert ui.returncode == 0
    assert processes_in_sessions({ui.pid}) == []
    deadline = time.monotonic() + 10
    while not _port_free(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _port_free(port)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


@pytest.mark.e2e
def test_ui_prints_its_own_lines_on_stdout_and_the_servers_log_on_stderr(tmp_path: Path) -> None:
    """A script reads the URL from stdout: MLflow's server logged its start and every request
    between nascomp's two lines there."""
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.create_experiment("nascomp")
    port = free_port()
    exe = Path(sys.executable).with_name("nascomp")
    command = [str(exe), "ui", "--tracking-uri", f"sqlite:///{db}", "--port", str(port)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        ui = subprocess.Popen(
            [sys.executable, "-c", _EXEC_WITH_DEFAULT_SIGINT, *command],
            cwd=tmp_path,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        ui.lines = queue.Queue()  # type: ignore[attr-defined]  # what _stop_ui shows on a hang
        ui.lines.put(None)  # type: ignore[attr-defined]
        try:
            deadline = time.monotonic() + 120
            while "MLflow UI: " not in Path(f"/proc/self/fd/{out.fileno()}").read_text():
                assert ui.poll() is None and time.monotonic() < deadline, "no URL printed"
                time.sleep(0.5)
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30).read()
        finally:
            _stop_ui(ui)
        out.seek(0)
        err.seek(0)
        printed, logged = out.read().splitlines(), err.read()
    runs = f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs"
    assert printed == [
        f"starting the MLflow UI on http://127.0.0.1:{port} (store sqlite:///{db}); Ctrl-C "
        "stops it",
        f"MLflow UI: {runs}?workflowType=machine_learning",
    ]
    assert "GET /health" in logged  # the server's log: on stderr
