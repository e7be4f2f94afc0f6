"""What the verifier records (its own JSONL file, imported like an agent's): a row per verified
tip, each landing's finding (landings.verified), reverted tasks, and its reverts' landings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from devswarm.git.landing import LandResult
from devswarm.ids import verifier_id
from devswarm.records import RecordLog, now, span_id
from devswarm.roles.rows import write_landing

if TYPE_CHECKING:
    from devswarm.run.run import Run


class VerifierRows:
    """The verifier's record file and the rows it writes there."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.agent_id = verifier_id(run.run_id)
        self.log: RecordLog = run.agent_log(self.agent_id)

    def verification(self, tip: str, started: str, duration_ms: float, **fields: Any) -> str:
        """One verified tip: its verdict (green, red, flake), batch, bisection, culprit, action."""
        vid = span_id(self.agent_id, "verification", tip, started)
        output = fields.pop("output", None)
        self.log.write(
            "verification",
            verification_id=vid,
            run_id=self.run.run_id,
            commit_sha=tip,
            started_at=started,
            ended_at=now(),
            duration_ms=round(duration_ms, 1),
            output_excerpt=output[-4000:] if output else None,
            **fields,
        )
        self.flush()
        return vid

    def verified(self, landing_ids: dict[str, str]) -> None:
        """landing id -> green | red | culprit | reverted (a partial landing record)."""
        for landing_id, verdict in landing_ids.items():
            self.log.write("landing", landing_id=landing_id, verified=verdict)

    def task_reverted(self, task_key: str, reason: str) -> None:
        self.log.write(
            "task", run_id=self.run.run_id, task_key=task_key, status="reverted", reason=reason
        )

    def revert_landing(self, task_key: str, cycle: int | None, result: LandResult) -> str:
        """The revert's own landing row (the lane landed it like any other); its landing id."""
        return write_landing(
            self.run, cycle, task_key, self.agent_id, result, now(), what=f"revert {result.new_tip}"
        )

    def flush(self) -> None:
        """Into the run's store soon (off the verifier's thread)."""
        self.run.records.import_soon([self.log.path])
