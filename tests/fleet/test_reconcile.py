"""Reconciliation verdicts: clean, and every kind of problem it must name."""

from __future__ import annotations

from simulator.fleet.reconcile import DeviceLog, reconcile


def log_with(**seqs: dict[str, object]) -> DeviceLog:
    log = DeviceLog()
    for name, fields in seqs.items():
        entry = log.seq(int(name[1:]))
        entry.genuine = int(fields.get("genuine", 1))  # type: ignore[call-overload]
        entry.heights = set(fields.get("heights", ()))  # type: ignore[call-overload]
        for kind in fields.get("probes", ()):  # type: ignore[attr-defined]
            entry.probes[kind] += 1
        for code in fields.get("rejected", ()):  # type: ignore[attr-defined]
            entry.rejected[code] += 1
        for code in fields.get("answers", ()):  # type: ignore[attr-defined]
            entry.answers[code] += 1
    return log


def test_clean_run_with_expected_rejections() -> None:
    log = log_with(s1={"heights": [3]}, s2={"heights": [4], "probes": ["rollback"],
                                            "rejected": ["rule.replay"]},
                   s3={"heights": [5], "probes": ["tamper"], "answers": ["cose.signature"]},
                   s4={"heights": [6], "probes": ["clone"], "answers": ["rule.replay"]})
    report = reconcile({"gw-1": log})
    assert report.clean, report.problems
    assert report.committed == 4 and report.expected_rejections == 2
    assert report.lines()[0] == "reconciliation CLEAN"


def test_every_problem_is_named() -> None:
    log = log_with(s1={"heights": []}, s2={"heights": [4, 9]},
                   s3={"genuine": 0, "heights": [5]},
                   s4={"heights": [6], "rejected": ["rule.replay"]},
                   s5={"heights": [7], "probes": ["rollback"]},
                   s6={"heights": [8], "probes": ["tamper"], "answers": ["accepted-ish"]})
    problems = reconcile({"gw-1": log}).problems
    text = "\n".join(problems)
    assert len(problems) == 6
    for needle in ("seq 1: never committed", "seq 2: committed at 2 heights",
                   "seq 3: committed but the gateway never signed",
                   "seq 4: rejected:rule.replay", "seq 5: a rollback/clone batch got no",
                   "seq 6: tampered copy answered"):
        assert needle in text
