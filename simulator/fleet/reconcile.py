"""Reconciliation: what every device sent, against what the nodes said about it.

Theory of operation
-------------------
While a fleet runs, each device's `SeqLog`s collect, per seq,

    genuine      batches signed by the gateway itself for this seq (1, or 0 when only a
                 fault sent something under this seq)
    probes       fault sends under this seq: tamper, replay, rollback, clone
    heights      distinct heights of verified "committed" receipt entries
    rejected     codes of verified "rejected:<code>" receipt entries
    answers      CoAP answer codes to probes (the node's unsigned word, for rejections
                 that by design carry no signed receipt, such as a forged signature)

and at the end `reconcile` checks, for every (device, seq):

    1. a genuine batch was committed exactly once: one height, no more, no less;
    2. no seq without a genuine batch was committed;
    3. every signed rejection has a reason the faults explain: rule.replay only where a
       rollback or clone batch used the seq;
    4. every fault that has an observable outcome produced it: rollback and clone a
       rule.replay (a signed receipt over MQTT, the 4.09 answer over CoAP), tamper the
       cose.signature answer over CoAP (over MQTT check 1 covers it: had the forgery
       been committed, the genuine batch would have been rejected as rule.replay).

A replayed batch needs no rule of its own: byte-identical, it can only be answered with
the original's commit (check 1 sees a second height if it was committed twice).

Pure: no I/O, no clock; the shell records, this module judges.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

REPLAY_CODE = "rule.replay"
SIGNATURE_CODE = "cose.signature"
TAMPER = "tamper"
REPLAY = "replay"
ROLLBACK = "rollback"
CLONE = "clone"
# Probe kinds whose seq the node must refuse as a replay, and the code it must give.
REPLAY_PROBES = (ROLLBACK, CLONE)
# Lines of problems printed before "... and N more": the count is always exact.
PROBLEMS_SHOWN_MAX = 40


@dataclass
class SeqLog:
    genuine: int = 0
    probes: Counter[str] = field(default_factory=Counter)
    heights: set[int] = field(default_factory=set)
    rejected: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)


@dataclass
class DeviceLog:
    seqs: dict[int, SeqLog] = field(default_factory=dict)

    def seq(self, seq: int) -> SeqLog:
        found = self.seqs.get(seq)
        if found is None:
            found = self.seqs[seq] = SeqLog()
        return found


@dataclass
class Report:
    devices: int = 0
    seqs: int = 0
    committed: int = 0
    expected_rejections: int = 0
    faults_checked: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        verdict = "CLEAN" if self.clean else f"FAILED ({len(self.problems)} problems)"
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults_checked.items()))
        out = [
            f"reconciliation {verdict}",
            f"  devices {self.devices}, seqs {self.seqs}, committed exactly once "
            f"{self.committed}, rejected for the expected reason {self.expected_rejections}",
            f"  fault outcomes checked: {faults or 'none'}",
        ]
        out.extend("  " + p for p in self.problems[:PROBLEMS_SHOWN_MAX])
        if len(self.problems) > PROBLEMS_SHOWN_MAX:
            out.append(f"  ... and {len(self.problems) - PROBLEMS_SHOWN_MAX} more")
        return out


def reconcile(logs: dict[str, DeviceLog]) -> Report:
    report = Report(devices=len(logs))
    for device_id in sorted(logs):
        for seq in sorted(logs[device_id].seqs):
            report.seqs += 1
            _check(device_id, seq, logs[device_id].seqs[seq], report)
    return report


def _check(device_id: str, seq: int, log: SeqLog, report: Report) -> None:
    where = f"{device_id} seq {seq}:"
    if log.genuine and len(log.heights) == 1:
        report.committed += 1
    elif log.genuine and not log.heights:
        report.problems.append(f"{where} never committed (no commit receipt)")
    elif log.genuine:
        report.problems.append(f"{where} committed at {len(log.heights)} heights "
                               f"{sorted(log.heights)}")
    elif log.heights:
        report.problems.append(f"{where} committed but the gateway never signed a batch "
                               "for it")
    replay_probes = sum(log.probes[k] for k in REPLAY_PROBES)
    for code, count in log.rejected.items():
        if code == REPLAY_CODE and replay_probes:
            continue
        report.problems.append(f"{where} rejected:{code} ×{count} with no fault to explain it")
    _check_probes(where, log, replay_probes, report)


def _check_probes(where: str, log: SeqLog, replay_probes: int, report: Report) -> None:
    if replay_probes:
        seen = log.rejected[REPLAY_CODE] + log.answers[REPLAY_CODE]
        if seen:
            report.expected_rejections += 1
            for kind in REPLAY_PROBES:
                report.faults_checked[kind] += log.probes[kind]
        else:
            report.problems.append(f"{where} a rollback/clone batch got no rule.replay "
                                   "(receipt or answer)")
    if log.probes[TAMPER]:
        if log.answers and log.answers[SIGNATURE_CODE] < log.probes[TAMPER]:
            report.problems.append(f"{where} tampered copy answered "
                                   f"{dict(log.answers)}, expected cose.signature")
        else:
            report.faults_checked[TAMPER] += log.probes[TAMPER]
    if log.probes[REPLAY] and len(log.heights) == 1:
        report.faults_checked[REPLAY] += log.probes[REPLAY]
