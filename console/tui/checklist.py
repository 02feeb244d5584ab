"""A selection list whose marks read without colour: ``[x]`` on a selected line, ``[ ]`` on not.

Textual's ``SelectionList`` draws the same ``▐X▌`` on every line and tells selected from not by
colour alone, which a monochrome terminal, a screen reader's text or a screen capture loses.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widgets import OptionList, SelectionList
from textual.widgets.option_list import OptionDoesNotExist

SELECTED_MARK = "[x]"
UNSELECTED_MARK = "[ ]"


class CheckList(SelectionList[str]):
    """``SelectionList`` with text marks; its keys, mouse and messages are the stock ones.

    A mark is as wide as the stock button (three cells and a space), so the layout is unchanged.
    """

    DEFAULT_CSS = """
    CheckList {
        & > .selection-list--button {
            color: $text-muted;
        }
        & > .selection-list--button-highlighted {
            color: $text-muted;
        }
        & > .selection-list--button-selected {
            color: $text-success;
            text-style: bold;
        }
        & > .selection-list--button-selected-highlighted {
            color: $text-success;
            text-style: bold;
        }
    }
    """

    def render_line(self, y: int) -> Strip:
        line = OptionList.render_line(self, y)  # the prompt alone, without the stock button
        index = self.scroll_offset.y + y
        try:
            selection = self.get_option_at_index(index)
        except OptionDoesNotExist:
            return line
        selected = selection.value in self.selected
        component = "selection-list--button"
        if selected:
            component += "-selected"
        if self.highlighted == index:
            component += "-highlighted"
        base = next(iter(line)).style or self.rich_style
        colour = self.get_component_rich_style(component)
        # the line's background, the mark's colour; the meta lets a click on the mark toggle
        mark_style = base + Style(color=colour.color, bold=colour.bold, meta={"option": index})
        mark = SELECTED_MARK if selected else UNSELECTED_MARK
        return Strip([Segment(mark, mark_style), Segment(" ", base), *line])
