"""What the Pilot tests of every screen share."""


async def wait_for(pilot, condition, timeout: float = 60.0) -> None:
    """Let the app run until ``condition()`` holds (background workers, the training thread)."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError("timed out waiting for the app")


def make_app(params, desc: str = "seed", **kw):
    """The stepper app as the Pilot tests drive it: no PyTorch worker, predictions up front."""
    from screens.app import CnnApp

    kw.setdefault("reference", "off")
    kw.setdefault("predictions", "sync")
    kw.setdefault("color", "truecolor")
    return CnnApp(params, desc, **kw)


def pretrained_app(key: str = "simple", index: int = 5, **kw):
    """The stepper on architecture ``key`` with its shipped weights, on digit ``index``."""
    from cnntui import model

    arch = model.ARCHITECTURES[key]
    params, desc = model.weights_from(model.PRETRAINED, arch)
    return make_app(params, desc, arch=arch, index=index, **kw)


async def wait_for_exports(pilot) -> None:
    """Let a save (ctrl+s, a figure) finish: its PNG is made in a worker thread, then saved."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
