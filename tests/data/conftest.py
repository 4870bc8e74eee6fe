"""Fixtures shared by the data tests."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture
def messages():
    """What the datamodules report through Lightning's rank_zero_info."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    handler = Keep(level=logging.INFO)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old_level)
