"""Every key binding by screen, and the user's keymap file that remaps them by binding id.

The keymap is ``$XDG_CONFIG_HOME/cnntui/keymap.toml`` (``~/.config/cnntui/keymap.toml`` when
that is unset), one line per binding to change, its id (the help screen lists them) and the
keys, comma-separated, in Textual's names::

    next_step = "right,j"
    previous_step = "left,k"

A file with mistakes still remaps what it can; each mistake is told once, naming its line.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from textual.binding import Binding

KEY_NAMES = {
    "right": "→", "left": "←", "up": "↑", "down": "↓", "home": "Home", "end": "End",
    "space": "space", "tab": "Tab", "escape": "Esc", "enter": "Enter", "question_mark": "?",
    "left_square_bracket": "[", "right_square_bracket": "]", "pageup": "PgUp",
    "pagedown": "PgDn", "f1": "F1", "plus": "+", "minus": "-", "equals_sign": "=",
}
# one key name, as Textual spells them ("right", "ctrl+s", "?"): no spaces, no commas
_KEY_RE = re.compile(r"^[^\s,]+$")


def key_text(keys: str) -> str:
    """``left,h`` -> ``← h``: a binding's keys as the help and the palette show them."""
    return " ".join(KEY_NAMES.get(k, k) for k in keys.split(","))


def binding_sections() -> list[tuple[str, list[Binding]]]:
    """(title, bindings) for every screen, in the help's order."""
    from screens.app import CnnApp
    from screens.canvas import CanvasScreen
    from screens.help import HelpScreen
    from screens.picker import PickerScreen
    from screens.stepper import StepperScreen
    from screens.summary import SummaryScreen
    from screens.training import SaveWeightsScreen, TrainingScreen

    return [
        # stepping first: the cell-mode arrows come first only to win the keys in cell mode
        ("Stepper", sorted(StepperScreen.BINDINGS, key=lambda b: b.action.startswith("move"))),
        ("Training (t)", TrainingScreen.BINDINGS),
        ("Save dialog (w)", SaveWeightsScreen.BINDINGS),
        ("Everywhere", [*CnnApp.BINDINGS,
                        Binding("ctrl+p", "command_palette",  # Textual's, shown here too
                                "command palette: go to step, open digit N, all actions")]),
        ("Digit picker (d)", PickerScreen.BINDINGS),
        ("Drawing canvas (D)", CanvasScreen.BINDINGS),
        ("Summary (i)", SummaryScreen.BINDINGS),
        ("Help", HelpScreen.BINDINGS),
    ]


def remapped(bindings: list[Binding], keymap: dict[str, str]) -> list[Binding]:
    """``bindings`` with the keys the keymap gives them (as Textual applies it to the keys)."""
    return [b.with_key(keymap[b.id], key_display=None) if b.id in keymap else b
            for b in bindings]


def keymap_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "cnntui" / "keymap.toml"


def load_keymap(path: Path, ids: set[str]) -> tuple[dict[str, str], list[str]]:
    """The keymap in ``path`` (binding id -> keys) for the bindings ``ids``, and one sentence
    per mistake. No file: no keymap and no mistake."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, []
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        return {}, [f"could not read the keymap {path}: {reason}; the default keys apply"]
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        where = re.search(r"\(at line (\d+), column \d+\)|\(at end of document\)", str(e))
        what = re.sub(r"\s*\(at .*\)$", "", str(e))
        line = (f"line {where.group(1)}" if where and where.group(1) else "its end")
        return {}, [f"{path}, {line}: {what}; the default keys apply"]
    lines = text.splitlines()

    def line_of(key: str) -> str:
        pattern = re.compile(rf"^\s*(\[\s*)?[\"']?{re.escape(key)}[\"']?\s*(=|\])")
        return next((f"line {n}" for n, s in enumerate(lines, 1) if pattern.match(s)),
                    "a line")

    keymap: dict[str, str] = {}
    errors: list[str] = []
    for key, value in table.items():
        if key not in ids:
            errors.append(f"{path}, {line_of(key)}: no binding has the id {key!r} "
                          f"(the help, ?, lists them)")
        elif not isinstance(value, str) or not value.strip():
            errors.append(f"{path}, {line_of(key)}: {key} needs a string of keys, "
                          f"such as \"right,l\"")
        elif not all(_KEY_RE.match(k.strip()) for k in value.split(",")):
            errors.append(f"{path}, {line_of(key)}: {value!r} is not a list of keys "
                          f"separated by commas, such as \"right,l\"")
        else:
            keymap[key] = ",".join(k.strip() for k in value.split(","))
    return keymap, errors
