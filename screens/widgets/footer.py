"""Textual's Footer without its leak.

Every time the active bindings change (a focus change, a run that starts or ends, a dialog), the
Footer recomposes: it removes its FooterKeys and makes new ones, each ``data_bind``-ed to the
footer's ``compact``. That binding adds a watcher (the key and a callback) to the footer's own
watcher list, which Textual prunes of removed keys only when ``compact`` changes, and here it
never does. So every recompose kept the old keys alive: about 1 MB per training run. And each
removed key's render cache stays referenced from a class-level ``lru_cache`` of Textual's.

This footer recomposes only when what it shows changes, drops the removed keys' watchers after
each recompose, and empties their render caches.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer as TextualFooter


class Footer(TextualFooter):
    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self._shown: tuple | None = None

    def shown_bindings(self, screen: Screen) -> tuple:
        """What the footer would show for ``screen``: its keys, labels, enabled states."""
        return tuple((b.key, b.action, b.description, b.key_display, enabled, tooltip,
                      b.group.description if b.group else None)
                     for _, b, enabled, tooltip in screen.active_bindings.values() if b.show)

    def bindings_changed(self, screen: Screen) -> None:
        if self.is_attached and screen is self.screen and screen.app.app_focus:
            shown = self.shown_bindings(screen)
            if shown == self._shown and self._bindings_ready:
                return
            self._shown = shown
        super().bindings_changed(screen)

    async def recompose(self) -> None:
        for child in self.query_children("*").exclude(".-textual-system"):
            for node in child.walk_children(with_self=True):
                node._styles_cache.clear()
        await super().recompose()
        self.prune_watchers()

    def prune_watchers(self) -> None:
        """Forget the watchers that belong to widgets already removed from the DOM."""
        watchers: dict[str, list] = getattr(self, "__watchers", None) or {}
        for entries in watchers.values():
            entries[:] = [(node, callback) for node, callback in entries
                          if not (getattr(node, "_closing", False)
                                  or getattr(node, "_closed", False))]
