from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.launcher import Stack
from tests.receiver import Receiver


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(Path(tmp_path_factory.mktemp("stack"))).start()
    yield running
    running.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rcv = Receiver()
    yield rcv
    rcv.stop()
