"""What the Pilot tests of every screen share."""


async def wait_for(pilot, condition, timeout: float = 60.0) -> None:
    """Let the app run until ``condition()`` holds (background workers, the training thread)."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError("timed out waiting for the app")
