"""The target prober: the last result of each target, probed in the background."""

from __future__ import annotations

import threading

from amber.metrics import ProbeOutcome, TargetProber, TargetStats


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_target_has_its_last_result() -> None:
    clock = Clock()
    answers = {"s3": ProbeOutcome(True, 0.02), "nfs": ProbeOutcome(False, None)}
    prober = TargetProber(lambda: ["s3", "nfs"], answers.__getitem__, clock=clock)
    assert prober.results() == []
    prober.probe_all()
    assert prober.results() == [
        TargetStats("nfs", False, 1000.0, None),
        TargetStats("s3", True, 1000.0, 0.02),
    ]
    clock.now = 1060.0
    answers["nfs"] = ProbeOutcome(True, 0.5)
    prober.probe_all()
    assert prober.results() == [
        TargetStats("nfs", True, 1060.0, 0.5),
        TargetStats("s3", True, 1060.0, 0.02),
    ]


def test_a_probe_that_raises_is_a_failed_probe() -> None:
    def probe(name: str) -> ProbeOutcome:
        raise OSError(f"cannot reach {name}")

    prober = TargetProber(lambda: ["s3"], probe, clock=Clock())
    prober.probe_all()
    assert prober.results() == [TargetStats("s3", False, 1000.0, None)]


def test_removed_targets_are_forgotten_and_a_broken_list_keeps_the_last_results() -> None:
    names = ["a", "b"]
    broken = False

    def targets() -> list[str]:
        if broken:
            raise ValueError("the targets file is not valid JSON")
        return names

    prober = TargetProber(targets, lambda _: ProbeOutcome(True, 0.1), clock=Clock())
    prober.probe_all()
    names = ["b"]
    prober.probe_all()
    assert [r.name for r in prober.results()] == ["b"]
    broken = True
    prober.probe_all()
    assert [r.name for r in prober.results()] == ["b"]


def test_the_thread_probes_at_once_and_stops() -> None:
    probed = threading.Event()

    def probe(_: str) -> ProbeOutcome:
        probed.set()
        return ProbeOutcome(True, 0.0)

    prober = TargetProber(lambda: ["s3"], probe, interval=3600.0)
    prober.start()
    try:
        assert probed.wait(30)
    finally:
        prober.stop()
    assert [r.up for r in prober.results()] == [True]
