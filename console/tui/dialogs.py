"""Modal dialogs: add models, export results, help. They collect input; the app acts on it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Button, Checkbox, Input, Label, Select, SelectionList, Static

from backends.core.options import BENCH_OPTIONS
from backends.core.records import Capabilities, Device, DeviceState, JobSettings
from backends.results.tables import RESULT_FORMATS
from console.tui.checklist import CheckList

OPTIONS_PER_ROW = 4  # number fields side by side in the add dialog
# Options a device may not honour: the option's field -> why a device does not. The Add dialog
# greys one out, and says why, unless every selected device has it (with the chosen runtime).
# ``per_layer`` and ``threads`` are ``Capabilities`` flags; ``power`` needs a monitor wired to
# the device (which the lab knows and the device does not), or a device that measures its own
# power with the runtime (``power_capture``: a Jetson's agent with tegrastats).
CAPABILITY_OPTIONS = {
    "per_layer": "its runtime has no profiled pass",
    "threads": "its runtime ignores a thread count",
    "power": "no power monitor powers it and it measures none with that runtime",
}

PATH_OPTIONS = {"clip_ranges", "accuracy_set"}  # text options that name a file or folder


class PathSuggester(Suggester):
    """Completes file and folder names as the operator types a path."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        return complete_path(value)


def complete_path(value: str) -> str | None:
    """The first entry of the typed path's folder that extends it (folders end with ``/``)."""
    if not value:
        return None
    expanded = os.path.expanduser(value)
    folder, prefix = os.path.split(expanded)
    try:
        names = sorted(os.listdir(folder or "."))
    except OSError:
        return None
    for name in names:
        if name.startswith(prefix) and name != prefix and not name.startswith("."):
            completed = os.path.join(folder, name)
            if os.path.isdir(completed):
                completed += os.sep
            return value + completed[len(expanded) :]
    return None


@dataclass
class AddRequest:
    paths: list[str]
    device_ids: list[str]
    runtime: str | None
    values: dict[str, Any]
    priority: int = 0
    errors: list[str] = field(default_factory=list)


class AddModelsScreen(ModalScreen[AddRequest | None]):
    """Choose model files or folders, devices, runtime and the measurement options."""

    AUTO_FOCUS = "#add-path"

    BINDINGS = [Binding("escape", "dismiss_dialog", "Close", id="dialog.close")]

    def __init__(
        self,
        devices: Iterable[Device],
        defaults: JobSettings,
        power_devices: Iterable[str] = (),
        initial_path: str = "",
    ) -> None:
        super().__init__()
        self.devices = [d for d in devices if d.state in (DeviceState.ONLINE, DeviceState.BUSY)]
        self.defaults = defaults
        self.power_devices = set(power_devices)
        self.initial_path = initial_path
        self._held: dict[str, Any] = {}  # a greyed-out checkbox's value, back when it applies

    def compose(self) -> ComposeResult:
        runtimes = sorted({r for device in self.devices for r in device.runtimes})
        # the title and the buttons stay on screen; the fields scroll between them
        with Vertical(classes="dialog", id="add-dialog"):
            yield Label("Add models", classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                yield Label("ONNX file or folder (tab completes)")
                yield Input(
                    self.initial_path,
                    placeholder="path/to/model.onnx or a folder",
                    suggester=PathSuggester(),
                    id="add-path",
                )
                yield Label("Devices ([x] selected; space or a click toggles)", markup=False)
                only_one = len(self.devices) == 1
                yield CheckList(
                    *[
                        (self.device_prompt(d, None), d.id, d.id == "host:cpu" or only_one)
                        for d in self.devices
                    ],
                    id="add-devices",
                )
                # what the selected devices would not honour, and why, next to the choice
                yield Static(id="add-unavailable", classes="note")
                yield Label("Runtime")
                yield Select(
                    [(r, r) for r in runtimes], prompt="the device's default", id="add-runtime"
                )
                yield from self._number_rows()
                for option in BENCH_OPTIONS:
                    if option.kind is str and option.dialog:  # a row each: names and paths are long
                        default = getattr(self.defaults, option.field)
                        yield Label(option.flag.lstrip("-"))
                        yield Input(
                            default or "",
                            placeholder=option.help,
                            suggester=PathSuggester() if option.field in PATH_OPTIONS else None,
                            id=f"add-{option.field}",
                        )
                for option in BENCH_OPTIONS:
                    if option.kind is bool and option.dialog:
                        box = Checkbox(
                            option.help,
                            bool(getattr(self.defaults, option.field)),
                            id=f"add-{option.field}",
                        )
                        if option.field == "power":  # only where some device can measure it
                            box.display = self.power_offered()
                        yield box
            yield Static(id="add-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Queue", variant="primary", id="add-queue")
                yield Button("Cancel", id="add-cancel")

    def _number_rows(self) -> ComposeResult:
        """The number options and the priority, ``OPTIONS_PER_ROW`` to a row."""
        cells = [
            (
                option.flag.lstrip("-"),
                getattr(self.defaults, option.field),
                "integer" if option.kind is int else "number",
                f"add-{option.field}",
            )
            for option in BENCH_OPTIONS
            if option.kind in (int, float) and option.dialog
        ]
        cells.append(("priority", 0, "integer", "add-priority"))
        for start in range(0, len(cells), OPTIONS_PER_ROW):  # rows keep the labels readable
            with Horizontal(classes="options"):
                for label, default, kind, widget_id in cells[start : start + OPTIONS_PER_ROW]:
                    with Vertical(classes="option"):
                        yield Label(label, id=f"{widget_id}-label")
                        shown = "" if default is None else str(default)
                        yield Input(shown, type=kind, id=widget_id)

    def device_prompt(self, device: Device, runtime: str | None) -> Text:
        """The device's line: its id and name, then (dim) what a job on it may ask for with
        ``runtime``, so the operator sees why an option greys out before ticking it."""
        prompt = Text(f"{device.id}  {device.name}")
        capabilities = device.capabilities_for(runtime)
        offers = offered(capabilities, self.powered(device, runtime))
        if offers is not None:
            prompt.append(f"  {offers}", style="dim")
        return prompt

    def on_mount(self) -> None:
        # the path field takes the keys from the start, whatever opened the dialog
        # (AUTO_FOCUS acts only while the app holds the terminal's focus)
        self.query_one("#add-path", Input).focus()
        self._offer_capabilities()

    @on(Select.Changed, "#add-runtime")
    def _runtime_changed(self) -> None:
        """What each device offers, and so what is greyed out, depends on the runtime."""
        runtime = self._runtime()
        devices = self.query_one("#add-devices", SelectionList)
        for index, device in enumerate(self.devices):
            devices.replace_option_prompt_at_index(index, self.device_prompt(device, runtime))
        self._offer_capabilities()

    @on(SelectionList.SelectedChanged, "#add-devices")
    def _offer_capabilities(self) -> None:
        """Grey out each option a selected device would not honour; say which device and why."""
        reasons = []
        for field_name, why in CAPABILITY_OPTIONS.items():
            option = next(o for o in BENCH_OPTIONS if o.field == field_name)
            if not option.dialog:
                continue
            widget = self.query_one(f"#add-{field_name}")
            if not widget.display:  # power, with no monitor on any device: not offered at all
                continue
            lacking = self.lacking(field_name)
            name = option.flag.lstrip("-")
            note = f"not on {', '.join(lacking)}" if lacking else None
            if lacking:
                reasons.append(f"{name}: {note} ({why})")
            if isinstance(widget, Checkbox):
                if lacking and not widget.disabled:
                    self._held[field_name] = widget.value
                    widget.value = False
                elif not lacking and widget.disabled:
                    widget.value = self._held.pop(field_name, widget.value)
                widget.label = f"{option.help} ({note})" if note else option.help
            else:
                self.query_one(f"#add-{field_name}-label", Label).update(
                    f"{name} (n/a)" if lacking else name
                )
            widget.disabled = bool(lacking)
            widget.tooltip = note
        unavailable = self.query_one("#add-unavailable", Static)
        unavailable.update(Text("\n".join(reasons)))
        unavailable.display = bool(reasons)

    def lacking(self, field_name: str) -> list[str]:
        """The selected devices that would not honour option ``field_name`` with the chosen
        runtime (one that has not said what it can do is not counted); for power, those no
        monitor powers that do not measure it themselves."""
        selected = set(self.query_one("#add-devices", SelectionList).selected)
        runtime = self._runtime()
        if field_name == "power":
            return [d.id for d in self.devices if d.id in selected and not self.powered(d, runtime)]
        lacking = []
        for device in self.devices:
            capabilities = device.capabilities_for(runtime) if device.id in selected else None
            if capabilities is not None and not getattr(capabilities, field_name):
                lacking.append(device.id)
        return lacking

    def powered(self, device: Device, runtime: str | None) -> bool:
        """Whether a power job on ``device`` with ``runtime`` gets an energy: a monitor powers
        it, or it measures its own power with that runtime."""
        if device.id in self.power_devices:
            return True
        capabilities = device.capabilities_for(runtime)
        return capabilities is not None and capabilities.power_capture

    def power_offered(self) -> bool:
        """Power is offered at all: some device is powered by a monitor or measures its own."""
        return bool(self.power_devices) or any(
            caps.power_capture for device in self.devices for caps in device.capabilities.values()
        )

    def _runtime(self) -> str | None:
        select = self.query_one("#add-runtime", Select)
        return None if select.is_blank() else str(select.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "add-cancel":
            self.dismiss(None)
        elif event.button.id == "add-queue":
            self._submit()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def action_dismiss_dialog(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        request = self.request()
        if request.errors:
            self.query_one("#add-error", Static).update(Text("\n".join(request.errors)))
            return
        self.dismiss(request)

    def request(self) -> AddRequest:
        """What the dialog holds now, with what is wrong with it."""
        errors = []
        path = self.query_one("#add-path", Input).value.strip()
        if not path:
            errors.append("give a model file or a folder of .onnx files")
        elif not Path(os.path.expanduser(path)).exists():
            errors.append(f"{path} does not exist")
        device_ids = list(self.query_one("#add-devices", SelectionList).selected)
        if not device_ids:
            errors.append("choose at least one device")
        runtime_select = self.query_one("#add-runtime", Select)
        if not runtime_select.is_blank():
            for device in self.devices:
                if device.id in device_ids and runtime_select.value not in device.runtimes:
                    errors.append(
                        f"{device.id} has no runtime {runtime_select.value} "
                        f"(it offers: {', '.join(device.runtimes) or 'none'})"
                    )
        values: dict[str, Any] = {}
        for option in BENCH_OPTIONS:
            if not option.dialog:
                continue  # left to the defaults (config file or CLI)
            widget = self.query_one(f"#add-{option.field}")
            if widget.disabled:  # a selected device would not honour it
                values[option.field] = False if option.kind is bool else None
                continue
            if option.kind is bool:
                values[option.field] = bool(widget.value)  # type: ignore[attr-defined]
                continue
            text = widget.value.strip()  # type: ignore[attr-defined]
            try:
                values[option.field] = option.kind(text) if text else None
            except ValueError:
                errors.append(f"{option.flag.lstrip('-')}: {text!r} is not a number")
        if values.get("accuracy_set"):  # as --accuracy: a bad set is named before queueing
            values["accuracy_set"], problem = checked_set(values["accuracy_set"])
            if problem:
                errors.append(problem)
        if values.get("min_seconds") is not None:
            values["runs"] = None  # timing by duration: the count does not apply
        try:
            priority = int(self.query_one("#add-priority", Input).value or 0)
        except ValueError:
            errors.append("priority must be a whole number")
            priority = 0
        return AddRequest(
            paths=[os.path.expanduser(path)] if path else [],
            device_ids=device_ids,
            runtime=None if runtime_select.is_blank() else str(runtime_select.value),
            values=values,
            priority=priority,
            errors=errors,
        )


def checked_set(text: str) -> tuple[str, str | None]:
    """``(resolved path, None)`` for an evaluation set that opens, else ``(text, why not)``."""
    from backends.accuracy.sets import SetError, open_set

    try:
        return str(open_set(os.path.expanduser(text)).path.resolve()), None
    except SetError as error:
        return text, f"accuracy: {error}"


def offered(capabilities: Capabilities | None, powered: bool) -> str | None:
    """What a job may ask of a device, as the device line shows it (None: it has not said)."""
    if capabilities is None:
        return "power" if powered else None
    offers = [
        name
        for name, has in (
            ("per-layer", capabilities.per_layer),
            ("threads", capabilities.threads),
            ("power", powered),
        )
        if has
    ]
    return " · ".join(offers) if offers else "timing only"


@dataclass
class ExportRequest:
    folder: Path
    formats: tuple[str, ...]


class ExportScreen(ModalScreen[ExportRequest | None]):
    """Where and in which format to export the results tables."""

    BINDINGS = [Binding("escape", "dismiss_dialog", "Close", id="dialog.close")]

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="export-dialog"):
            yield Label("Export results", classes="dialog-title")
            yield Label("Folder (created if missing)")
            yield Input(str(self.folder), suggester=PathSuggester(), id="export-folder")
            yield Label("Format")
            yield Select(
                [(f, f) for f in RESULT_FORMATS], value="csv", allow_blank=False, id="export-format"
            )
            yield Static(id="export-error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Export", variant="primary", id="export-go")
                yield Button("Cancel", id="export-cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "export-cancel":
            self.dismiss(None)
        else:
            self._submit()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def action_dismiss_dialog(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        folder = self.query_one("#export-folder", Input).value.strip()
        if not folder:
            self.query_one("#export-error", Static).update("give a folder")
            return
        fmt = str(self.query_one("#export-format", Select).value)
        self.dismiss(ExportRequest(Path(os.path.expanduser(folder)), (fmt,)))


class HelpScreen(ModalScreen[None]):
    """Every binding: key, what it does, and where it applies."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss_dialog", "Close", id="dialog.close")]

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        table = Table(title="devlab keys", expand=True)
        table.add_column("key", style="bold", no_wrap=True)
        table.add_column("action")
        table.add_column("where", style="dim")
        for key, description, where in self.rows:
            table.add_row(key, description, where)
        with VerticalScroll(classes="dialog", id="help-dialog"):
            yield Static(table)
            yield Label("ctrl+p opens the command palette; escape closes this help.", classes="dim")

    def action_dismiss_dialog(self) -> None:
        self.dismiss(None)
