"""The judge: the repository check on the tip, then a verdict — continue, done or stop."""

from __future__ import annotations

from devswarm.agent.loop import DRAINED
from devswarm.ids import file_safe, judge_id
from devswarm.roles import narrate, prompts
from devswarm.roles.session import CallFactory, agent_session
from devswarm.run.run import Run
from devswarm.schemas import CheckResult, Verdict, WorkerReport
from devswarm.tools.toolbox import Toolbox


def judge_cycle(
    run: Run, calls: CallFactory, *, cycle: int, reports: list[WorkerReport]
) -> tuple[Verdict, CheckResult | None]:
    """Run the full check on the tip and let the judge decide: continue, done or stop."""
    cfg = run.config
    agent_id = judge_id(run.run_id, cycle)
    tip = run.workspace.tip()
    check = run.checks.at(tip)
    narrate.check(run, "judge", agent_id, f"repository check on the tip {tip[:10]}", check)
    user = prompts.judge_user(
        cfg.goal,
        cfg.check,
        check.passed if check else None,
        check.output[-4000:] if check else "",
        [r.model_dump(include={"task_key", "status", "reason", "handoff"}) for r in reports],
        {k: v for k, v in run.ledger.left().items() if k != "seconds"},
    )
    with (
        agent_session(
            run, calls, agent_id, "judge", cycle=cycle, model=cfg.models.judge
        ) as session,
        run.workspace.worktree(file_safe(agent_id), tip) as wt,
    ):
        agent = session.new_agent(
            Toolbox(wt, read_only=True), prompts.JUDGE, user, answer_schema=Verdict
        )
        outcome = agent.run()
    if outcome.answer is None:
        why = f"the judge ended with {outcome.status}: {outcome.reason}"
        verdict = Verdict(decision="stop", reasons=why)
        if outcome.status not in DRAINED:  # a drain or a budget is no failure of the model's
            run.fail("no_verdict", f"the model never produced a valid verdict: {why}")
    else:
        verdict = Verdict.model_validate(outcome.answer)
    narrate.verdict(run, agent_id, cycle, verdict)
    return verdict, check
