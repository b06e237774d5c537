"""The keymap file remaps bindings by id (the keys, the footer, the help and the palette follow);
a bad file is told line by line and the rest still applies. The palette is made from the
bindings."""

from __future__ import annotations

import pytest
from pilot_helpers import make_app
from textual.widgets._footer import FooterKey

from cnntui.model import weights_from
from screens.commands import CnnCommands
from screens.help import HelpScreen, help_rows
from screens.keys import binding_sections, keymap_path, load_keymap
from screens.stepper import StepperScreen
from screens.training import TrainingScreen

SIZE = (100, 30)
IDS = {b.id for _, bindings in binding_sections() for b in bindings if b.id}


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "cnntui").mkdir()
    return tmp_path / "cnntui" / "keymap.toml"


def test_the_keymap_lives_in_xdg_config_home(config, monkeypatch, tmp_path):
    assert keymap_path() == config
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert keymap_path() == tmp_path / "home" / ".config" / "cnntui" / "keymap.toml"


def test_every_binding_has_a_unique_id():
    ids = [b.id for _, bindings in binding_sections() for b in bindings if b.action
           != "command_palette"]
    assert None not in ids and len(ids) == len(set(ids))


async def test_a_remapped_key_steps_and_the_footer_help_and_palette_show_it(config):
    config.write_text('# vi keys for stepping\nnext_step = "j"\nprevious_step = "k,left"\n')
    app = make_app(weights_from("seed")[0])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert not app.keymap_errors
        await pilot.press("j")
        assert app.step_index == 1
        await pilot.press("right")  # no longer next_step
        assert app.step_index == 1
        await pilot.press("left")
        assert app.step_index == 0
        footer_keys = {k.key for k in app.screen.query(FooterKey)}
        assert {"j", "k"} <= footer_keys and "right" not in footer_keys
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        rows = {row[2]: row[0] for _, bindings in app.screen.sections
                for row in help_rows(bindings)}
        assert rows["next_step"] == "j" and rows["previous_step"] == "k ←"
        assert rows["first_step"] == "Home g"  # untouched
        await pilot.press("escape")
        provider = CnnCommands(app.screen)
        commands = {name: keys for name, _, keys in provider._commands()}
        assert commands["Next step"] == "j n"  # next_step and next_step_n


async def test_mistakes_are_told_by_line_and_the_rest_applies(config):
    config.write_text('next_step = "j"\nnxt_step = "x"\n\nprevious_step = 3\n'
                      'first_step = "a b"\n')
    app = make_app(weights_from("seed")[0])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        errors = app.keymap_errors
        assert len(errors) == 3
        assert "line 2: no binding has the id 'nxt_step'" in errors[0]
        assert "line 4: previous_step needs a string of keys" in errors[1]
        assert "line 5: 'a b' is not a list of keys" in errors[2]
        shown = [n.message for n in app._notifications]
        assert all(any(e in m for m in shown) for e in errors)
        await pilot.press("j")
        assert app.step_index == 1
        await pilot.press("left")  # previous_step kept its keys
        assert app.step_index == 0


async def test_a_file_that_is_not_toml_is_told_with_its_line_and_the_defaults_apply(config):
    config.write_text('next_step = "j"\nprevious_step = "k\n')
    app = make_app(weights_from("seed")[0])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert len(app.keymap_errors) == 1
        assert f"{config}, line 2:" in app.keymap_errors[0]
        assert "the default keys apply" in app.keymap_errors[0]
        await pilot.press("right")
        assert app.step_index == 1


def test_no_file_is_no_keymap_and_an_unreadable_one_is_one_sentence(tmp_path):
    assert load_keymap(tmp_path / "none.toml", IDS) == ({}, [])
    keymap, errors = load_keymap(tmp_path, IDS)  # a folder
    assert keymap == {} and len(errors) == 1 and errors[0].startswith("could not read")
    (tmp_path / "bad.toml").write_bytes(b"next_step = \"\xff\"\n")
    keymap, errors = load_keymap(tmp_path / "bad.toml", IDS)
    assert keymap == {} and len(errors) == 1


async def test_the_palette_lists_each_screens_bindings_by_their_tooltips(config):
    app = make_app(weights_from("seed")[0])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        names = {name for name, _, _ in CnnCommands(app.screen)._commands()}
        for b in StepperScreen.BINDINGS:
            if not b.id.startswith(("cell_", "channel_", "all_channels")):
                assert (b.tooltip or b.description) in names, b.id
        await pilot.press("t")
        assert isinstance(app.screen, TrainingScreen)
        commands = CnnCommands(app.screen)._commands()
        names = [name for name, _, _ in commands]
        assert names[:len(TrainingScreen.BINDINGS)] == [b.tooltip for b in
                                                        TrainingScreen.BINDINGS]
        assert not any(n.startswith("Go to step") for n in names)
        # a command runs its binding's action on its screen
        by_name = {name: run for name, run, _ in commands}
        lr = app.screen.trainer.lr
        await by_name["Double the learning rate (also while running)"]()
        assert app.screen.trainer.lr == 2 * lr
