"""The console as a person runs it: ``devlab --out DIR`` in a real terminal (tmux), driven by
keystrokes and read back from the screen, then checked against the files and the store it left.

Each test starts its own tmux server on a private socket (``support.tmux.Terminal``), with
no user configuration (HOME and the XDG folders inside ``tmp_path``), and kills that server in a
``finally`` block. Every wait is a bounded poll of ``capture-pane``; a failure shows the last
screen captured (and the exit status, if devlab has exited).
"""

from __future__ import annotations

import csv
import math
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.helpers import MODELS_DIR, REPO_ROOT, STORE_NAME, read_results_csv, store_jobs
from support.tmux import POLL_S, TMUX, Terminal, devlab_in_terminal, poll

WIDTH, HEIGHT = 160, 45

START_TIMEOUT_S = 30.0  # python + textual import, first device discovery
DIALOG_TIMEOUT_S = 10.0
JOB_TIMEOUT_S = 60.0  # the sample MLP takes well under a second on any CPU
EXPORT_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 30.0

PATH_PLACEHOLDER = "path/to/model.onnx or a folder"  # shown while the Add path field is empty
MEDIAN_CELL = re.compile(r"\d+\.\d+ (?:us|ms)")

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(tmp_path, WIDTH, HEIGHT)
    try:
        yield term
    finally:
        term.kill()


def devlab_command(tmp_path: Path, out: Path) -> list[str]:
    """``devlab --out DIR`` with a terminal type and no user configuration."""
    return devlab_in_terminal(tmp_path / "home", "--out", str(out))


def private_model(tmp_path: Path) -> Path:
    target = tmp_path / "models" / "mlp.onnx"
    target.parent.mkdir(exist_ok=True)
    return Path(shutil.copy(MODELS_DIR / "mlp.onnx", target))


def open_console(terminal: Terminal, tmp_path: Path, out: Path) -> str:
    (tmp_path / "home").mkdir(exist_ok=True)
    terminal.start(devlab_command(tmp_path, out), cwd=REPO_ROOT)
    # the app is up and its first discovery found the host CPU (the Add dialog lists it)
    return terminal.wait_for(
        "the console with host:cpu discovered",
        lambda s: "Queue [2]" in s and re.search(r"\b[1-9]\d* device\(s\)", s) is not None,
        START_TIMEOUT_S,
    )


def path_field_empty(screen: str) -> bool:
    return PATH_PLACEHOLDER in screen


def focus_path_field(terminal: Terminal) -> None:
    """Put the keyboard in the Add dialog's path field, whichever widget has focus on open.

    The dialog opens with the path field focused (test_add_dialog_focuses_path_field checks
    that); this helper does not count on it, so a broken focus fails that test, not this one.
    Keys typed right after Tab can still reach the widget Tab leaves (Textual forwards them
    before the Tab has moved the focus), so probe with ``x`` (bound to nothing) until one lands
    in the field, then empty the field (ctrl+a: start, ctrl+k: delete right).
    """
    terminal.type("x")
    if not poll(lambda: not path_field_empty(terminal.capture()), 2.0):
        terminal.keys("Tab")  # from no focus, or the scroll container, to the path field

        def typed_x_landed() -> bool:
            terminal.type("x")
            time.sleep(POLL_S)
            return not path_field_empty(terminal.capture())

        if not poll(typed_x_landed, DIALOG_TIMEOUT_S):
            pytest.fail(f"the Add dialog's path field never took keys\n{terminal.report()}")
    terminal.keys("C-a", "C-k")
    terminal.wait_for("the path field to be empty again", path_field_empty, DIALOG_TIMEOUT_S)


def path_typed(screen: str, path: Path) -> bool:
    """The whole path shows in the field (its tail, when longer than the field)."""
    return str(path)[-70:] in screen and not path_field_empty(screen)


def table_row(screen: str, model: str) -> str | None:
    for line in screen.splitlines():
        if f" {model} " in line and "host:cpu" in line:
            return line
    return None


def test_add_run_results_export_quit(terminal: Terminal, tmp_path: Path) -> None:
    out = tmp_path / "lab"
    model = private_model(tmp_path)
    seen: list[str] = []

    seen.append(open_console(terminal, tmp_path, out))

    terminal.keys("a")
    seen.append(terminal.wait_for_text("Add models", DIALOG_TIMEOUT_S))
    focus_path_field(terminal)
    terminal.type(str(model))
    seen.append(
        terminal.wait_for(
            "the model path in the Add dialog",
            lambda s: path_typed(s, model),
            DIALOG_TIMEOUT_S,
        )
    )
    terminal.keys("Enter")
    seen.append(
        terminal.wait_for(
            "the Add dialog to close", lambda s: "Add models" not in s, DIALOG_TIMEOUT_S
        )
    )
    terminal.keys("2")  # the console opens on Devices; the job is followed in the Queue

    def mlp_done(screen: str) -> bool:
        if "does not exist" in screen or "not queued" in screen:
            pytest.fail(f"the model was not queued\n{terminal.report()}")
        row = table_row(screen, "mlp")
        return "Add models" not in screen and row is not None and " done " in row

    screen = terminal.wait_for("the mlp job to be done in the Queue view", mlp_done, JOB_TIMEOUT_S)
    seen.append(screen)
    assert "1 done" in screen, terminal.report()

    terminal.keys("5")

    def results_shown(screen: str) -> bool:
        row = table_row(screen, "mlp")
        return (
            "median latency (bar)" in screen
            and row is not None
            and "done" in row
            and MEDIAN_CELL.search(row) is not None
        )

    screen = terminal.wait_for("mlp with a median in the Results view", results_shown, 10.0)
    seen.append(screen)
    assert "mlp @ host:cpu" in screen, terminal.report()  # the latency plot

    terminal.keys("e")
    screen = terminal.wait_for_text("Export results", DIALOG_TIMEOUT_S)
    seen.append(screen)
    assert str(out / "export") in screen, terminal.report()  # the default folder, prefilled
    terminal.keys("Enter")

    results_csv = out / "export" / "results.csv"
    deadline = time.monotonic() + EXPORT_TIMEOUT_S
    while not results_csv.exists():
        if time.monotonic() >= deadline:
            terminal.capture()
            pytest.fail(f"{results_csv} was not written\n{terminal.report()}")
        time.sleep(POLL_S)
    seen.append(terminal.wait_for_text("written to", EXPORT_TIMEOUT_S))  # the notification

    rows = read_results_csv(results_csv.parent)
    mlp_rows = [row for row in rows if row["model"] == "mlp"]
    assert len(mlp_rows) == 1, rows
    assert mlp_rows[0]["status"] == "done", mlp_rows[0]
    median = float(mlp_rows[0]["median_us"])
    assert math.isfinite(median) and median > 0, mlp_rows[0]
    with open(results_csv, newline="", encoding="utf-8") as handle:
        assert "median_us" in (csv.DictReader(handle).fieldnames or [])

    everything = "\n".join(seen)
    assert "done" in everything and "mlp" in everything, terminal.report()

    assert terminal.exit_status() is None, terminal.report()
    terminal.keys("C-q")
    if not poll(lambda: terminal.exit_status() is not None, EXIT_TIMEOUT_S):
        terminal.capture()
        pytest.fail(f"devlab still runs {EXIT_TIMEOUT_S:g} s after ctrl+q\n{terminal.report()}")
    assert terminal.exit_status() == "0", terminal.report()
    # the pane closes with the command, and the session with its only pane
    assert poll(lambda: not terminal.session_alive(), EXIT_TIMEOUT_S), terminal.report()

    jobs = store_jobs(out / STORE_NAME)
    assert [(job["model_path"], job["state"]) for job in jobs] == [(str(model), "done")], jobs
    assert jobs[0]["result_json"] is not None, jobs


def test_add_dialog_focuses_path_field(terminal: Terminal, tmp_path: Path) -> None:
    """Press ``a`` and type a path: the path lands in the dialog's path field."""
    model = private_model(tmp_path)
    open_console(terminal, tmp_path, tmp_path / "lab")
    terminal.keys("a")
    terminal.wait_for_text("Add models", DIALOG_TIMEOUT_S)
    terminal.type(str(model))
    landed = poll(lambda: path_typed(terminal.capture(), model), 5.0)
    assert landed, f"the typed path is not in the Add dialog's path field\n{terminal.report()}"
