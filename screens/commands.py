"""Command palette (ctrl+p): the same actions as the keys, plus "go to step" and "open digit N".
On the training screen it lists the training actions instead of the stepper's. Textual's own
commands come too, its Screenshot replaced by the app's (``CnnApp.get_system_commands``)."""

from __future__ import annotations

import re
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from cnntui import model

if TYPE_CHECKING:
    from screens.app import CnnApp
    from screens.training import TrainingScreen


class CnnCommands(Provider):
    """Actions of the stepper by name."""

    def _training_commands(self, screen: TrainingScreen) -> list[tuple[str, object, str]]:
        app: CnnApp = self.app  # type: ignore[assignment]
        run = partial(app.run_action, default_namespace=screen)
        return [
            ("Training: start / pause / resume", partial(run, "toggle"), "space"),
            ("Training: stop the run", partial(run, "stop"), "x"),
            ("Training: double the learning rate", partial(run, "lr(2.0)"), "+"),
            ("Training: halve the learning rate", partial(run, "lr(0.5)"), "-"),
            ("Training: switch optimiser (Adam / SGD)", partial(run, "optimizer"), "o"),
            ("Training: save the weights...", partial(run, "save"), "w"),
            ("Training: reset to the seed initialisation", partial(run, "reset"), "r"),
            ("Training: show results / live view", partial(run, "view"), "v"),
            ("Training: start from the stepper's weights (fine-tune)",
             partial(run, "from_stepper"), "f"),
            ("Back to the stepper with the trained weights", partial(run, "back"), "Esc"),
            ("Help: all keys", app.action_help, "? F1"),
            ("Quit", app.action_quit, "q ctrl+q"),
        ]

    def _commands(self) -> list[tuple[str, object, str]]:
        from screens.training import TrainingScreen

        app: CnnApp = self.app  # type: ignore[assignment]
        if isinstance(self.screen, TrainingScreen):
            return self._training_commands(self.screen)
        cmds: list[tuple[str, object, str]] = [
            ("Choose digit...", app.action_pick, "open the digit picker (d)"),
            ("Draw a digit...", app.action_draw,
             "a 28x28 canvas; the mouse or the keyboard paints; Enter steps through it (D)"),
            ("Next digit", partial(app.set_digit, app.index + 1), "]"),
            ("Previous digit", partial(app.set_digit, app.index - 1), "["),
            ("Next step", partial(app.go_to, app.step_index + 1), "→ l n"),
            ("Previous step", partial(app.go_to, app.step_index - 1), "← h p"),
            ("Play / pause", partial(app.stepper_action, "play"), "space"),
            ("Jump forward <-> backward", partial(app.stepper_action, "flip"), "Tab"),
            ("Toggle shared / per-channel colour scale",
             partial(app.stepper_action, "scale"), "s"),
            ("Toggle values table", partial(app.stepper_action, "values"), "v"),
            ("Toggle |grad| log view", partial(app.stepper_action, "magnitude"), "a"),
            ("Train the network (training screen)", app.action_train, "t"),
            ("Architectures: layers, shapes, parameters, MACs", app.action_summary, "i"),
            *((f"Architecture: {a.key} ({a.name}, {len(a.param_shapes)} parameter tensors)",
               partial(app.switch_arch, a.key), "opens its shipped weights")
              for a in model.ARCHITECTURES.values() if a is not app.arch),
            ("Help: all keys", app.action_help, "? F1"),
            ("Quit", app.action_quit, "q ctrl+q"),
        ]
        if app.trace is not None:
            for s in app.trace.steps:
                cmds.append((f"Go to step {s.name} ({s.phase} {s.layer})",
                             partial(app.go_to, s.index), f"step {s.index + 1}"))
        return cmds

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)  # type: ignore[arg-type]

    async def search(self, query: str) -> Hits:
        from screens.training import TrainingScreen

        app: CnnApp = self.app  # type: ignore[assignment]
        matcher = self.matcher(query)
        number = re.search(r"\d+", query)
        if number and not isinstance(self.screen, TrainingScreen):
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
