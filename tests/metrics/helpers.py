"""Reading an exposition back: `prometheus_client.parser`, the way a scraper would."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(text: bytes | str) -> list[Sample]:
    """Every sample of an exposition in the text format."""
    body = text.decode() if isinstance(text, bytes) else text
    return [s for family in text_string_to_metric_families(body) for s in family.samples]


def value(text: bytes | str, name: str, **labels: str) -> float | None:
    """The value of the one sample `name` with exactly these labels; None when absent."""
    found = [s.value for s in samples(text) if s.name == name and s.labels == labels]
    assert len(found) <= 1, f"{name}{labels} appears {len(found)} times"
    return found[0] if found else None


def total(text: bytes | str, name: str, **labels: str) -> float:
    """The sum of the samples `name` whose labels include these (0 when none)."""
    return sum(
        s.value
        for s in samples(text)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )
