"""One agent's session, the setup every role shares: its records, its counter on the live
panel, the Agent built with the run's settings, and what it learned about the server kept
for the agents after it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel

from devswarm.agent.loop import Agent, ModelFn, Outcome
from devswarm.records import RecordLog
from devswarm.roles import rows
from devswarm.run import endpoint
from devswarm.run.run import Run
from devswarm.schemas import WorkerReport
from devswarm.tools.toolbox import Toolbox

CallFactory = Callable[[Run, str], ModelFn]  # (run, agent_id) -> the agent's model function


class Session:
    """What a role needs while its agent runs (see agent_session)."""

    def __init__(self, run: Run, calls: CallFactory, agent_id: str, role: str, model: str) -> None:
        self.run, self.calls = run, calls
        self.agent_id, self.role, self.model = agent_id, role, model
        self.log: RecordLog = run.agent_log(agent_id)
        self.agent: Agent | None = None
        # What the run knows of the endpoint when the agent is built (json_schema, the
        # output-limit field, native tools); what the agent learns beyond it goes back.
        self.options: dict[str, Any] = {}
        self.report: WorkerReport | None = None  # a worker's, for the agent row's end

    def new_agent(
        self,
        toolbox: Toolbox,
        system: str,
        user: str,
        answer_schema: type[BaseModel] | None = None,
    ) -> Agent:
        """The session's Agent, with the run's limits and what the run knows of the server."""
        run = self.run
        self.options = endpoint.agent_options(run, self.model)
        self.agent = Agent(
            agent_id=self.agent_id,
            run_id=run.run_id,
            role=self.role,
            model=self.model,
            call=self.calls(run, self.agent_id),
            toolbox=toolbox,
            system=system,
            user=user,
            limits=run.config.limits,
            log=self.log,
            transcript=run.transcript(self.agent_id),
            answer_schema=answer_schema,
            should_stop=run.should_stop,
            on_tool=lambda step, name, arguments, result: run.story.tool_step(
                self.role, self.agent_id, step, name, arguments, result
            ),
            redact=run.redact,
            **self.options,
        )
        return self.agent

    @property
    def outcome(self) -> Outcome | None:
        return self.agent.outcome if self.agent is not None else None


@contextlib.contextmanager
def agent_session(
    run: Run,
    calls: CallFactory,
    agent_id: str,
    role: str,
    *,
    cycle: int,
    model: str,
    plan_path: str = "",
    task_key: str | None = None,
    busy: str | None = None,
) -> Iterator[Session]:
    """Record the agent's start, count it as `busy` on the live panel while it runs; at the end
    give its model-call slot to the next agent at once, keep what it learned about the server
    (refused response_format, the output-limit field, no native tools), and record its end."""
    session = Session(run, calls, agent_id, role, model)
    rows.agent_started(run, session.log, agent_id, role, cycle, plan_path, task_key, model)
    if busy:
        run.progress.bump(busy)
    try:
        yield session
    finally:
        if busy:
            run.progress.bump(busy, -1)
        run.client.slots.done(agent_id)
        if session.agent is not None:
            endpoint.take_lessons(run, session.model, session.agent, session.options)
        rows.agent_ended(session.log, agent_id, session.outcome, session.report)
