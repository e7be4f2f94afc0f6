"""What the verifier records (its own JSONL file, imported like an agent's): a row per verified
tip, each landing's finding (landings.verified), reverted tasks, and its reverts' landings."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from devswarm.git.landing import LandResult
from devswarm.ids import verifier_id
from devswarm.records import RecordLog, now, span_id

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
        started = now()
        landing_id = span_id(self.agent_id, "revert", result.new_tip or "", started)
        self.log.write(
            "landing",
            landing_id=landing_id,
            run_id=self.run.run_id,
            cycle=cycle,
            task_key=task_key,
            agent_id=self.agent_id,
            branch=self.run.branch,
            commit_sha=result.new_tip,
            old_tip=result.old_tip,
            new_tip=result.new_tip,
            status=result.status,
            cas_retries=result.cas_retries,
            conflict_files=json.dumps(result.conflict_files),
            resolved=False,
            started_at=started,
            ended_at=now(),
            duration_ms=result.duration_ms,
            span_id=landing_id,
            parent_span_id=span_id(self.agent_id),
        )
        return landing_id

    def flush(self) -> None:
        """Into the run's store soon (off the verifier's thread)."""
        self.run.records.import_soon([self.log.path])
