"""Command palette (ctrl+p): the keys of the screen shown, made from its bindings, plus "go to
step" and "open digit N" on the stepper. Textual's own commands come too, its Screenshot replaced
by the app's (``CnnApp.get_system_commands``)."""

from __future__ import annotations

import re
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from cnntui import model
from screens.keys import key_text, remapped

if TYPE_CHECKING:
    from screens.app import CnnApp


# bindings the palette leaves out: a cursor move or a channel number is a key, not a command
_NOT_COMMANDS = ("cell_", "channel_", "all_channels", "quit_now")


class CnnCommands(Provider):
    """The keys of the screen shown and of the app, by what they do (their tooltips, so nothing
    is typed twice), each with its keys as the keymap has them; plus "go to step" and the
    architectures."""

    def _binding_commands(self) -> list[tuple[str, object, str]]:
        from screens.app import CnnApp

        app: CnnApp = self.app  # type: ignore[assignment]
        screen = self.screen
        commands: dict[str, tuple[object, str]] = {}
        for namespace, bindings in ((screen, type(screen).BINDINGS), (app, CnnApp.BINDINGS)):
            for b in remapped(bindings, app.keymap):
                if b.id is None or b.id.startswith(_NOT_COMMANDS):
                    continue
                name = b.tooltip or b.description
                if name in commands:  # two bindings, one command (n and the arrow): both keys
                    run, keys = commands[name]
                    commands[name] = run, f"{keys} {key_text(b.key)}"
                else:
                    commands[name] = partial(app.run_action, b.action, namespace), key_text(b.key)
        return [(name, run, keys) for name, (run, keys) in commands.items()]

    def _commands(self) -> list[tuple[str, object, str]]:
        from screens.stepper import StepperScreen

        app: CnnApp = self.app  # type: ignore[assignment]
        cmds = self._binding_commands()
        if not isinstance(self.screen, StepperScreen):
            return cmds
        cmds += [(f"Architecture: {a.key} ({a.name}, {len(a.param_shapes)} parameter tensors)",
                  partial(app.switch_arch, a.key), "opens its shipped weights")
                 for a in model.ARCHITECTURES.values() if a is not app.arch]
        if app.trace is not None:
            for s in app.trace.steps:
                cmds.append((f"Go to step {s.name} ({s.phase} {s.layer})",
                             partial(app.go_to, s.index), f"step {s.index + 1}"))
        return cmds

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)  # type: ignore[arg-type]

    async def search(self, query: str) -> Hits:
        from screens.stepper import StepperScreen

        app: CnnApp = self.app  # type: ignore[assignment]
        matcher = self.matcher(query)
        number = re.search(r"\d+", query)
        if number and isinstance(self.screen, StepperScreen):
            index = int(number.group())
            if 0 <= index < len(app.digits.labels):
                name = f"Open digit #{index} (label {int(app.digits.labels[index])})"
                yield Hit(1.0, matcher.highlight(name), partial(app.set_digit, index),
                          help="keeps the current step")
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback,  # type: ignore[arg-type]
                          help=help_text)
