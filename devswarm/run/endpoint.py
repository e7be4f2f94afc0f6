"""What a run knows of its model endpoint: learned once per run and per model, kept in the
run's state, handed to every agent it builds.

At the start each model not yet known is probed (free reads, then one tiny chat request;
ModelClient.probe); a resumed run or a worker process takes it from `state.json` instead and
pays nothing. During the run the client learns from refusals (CapabilityBook.learn) and agents
from their fallbacks (no json_schema, the other output-limit field, tools in the prompt); both
go back into the run at the end of each agent's session, so later agents start where earlier
ones ended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from devswarm.ids import probe_id
from devswarm.model.capabilities import Capabilities

if TYPE_CHECKING:
    from devswarm.agent.loop import Agent
    from devswarm.run.run import Run


def know_models(run: Run) -> dict[str, Capabilities]:
    """What the endpoint accepts for each of the run's models: from the run's state where it
    has it, else probed (its call recorded like any other) and saved. Raises UserError for a
    model the endpoint does not know."""
    for model in run.models:
        if model not in run.state.capabilities:
            caps = run.client.probe(
                model, run_id=run.run_id, log=run.agent_log(probe_id(run.run_id, model))
            )
            keep(run, model, caps)
    return dict(run.state.capabilities)


def agent_options(run: Run, model: str) -> dict[str, Any]:
    """The Agent's options for `model`: what the run knows of the endpoint so far."""
    return run.client.book.get(model).agent_options()


def take_lessons(run: Run, model: str, agent: Agent, given: dict[str, Any]) -> None:
    """What `agent` learned beyond the options it was `given` (response_format refused, the
    other output-limit field, tools written as text), with what the client learned meanwhile,
    kept for the run's later agents and in its state."""
    update: dict[str, Any] = {}
    if given["structured_output"] and not agent.structured_output:
        update["json_schema"] = False
    if (given["json_mode"] or agent.json_mode) and not agent.structured_output:
        update["json_object"] = agent.json_mode  # offered and kept, or refused too
    if agent.output_limit != given["output_limit"]:
        update["output_limit"] = agent.output_limit
    if agent.text_tools and not given["text_tools"]:
        update["native_tools"] = False
    if update:
        run.client.book.update(model, **update)
    keep(run, model, run.client.book.get(model))


def keep(run: Run, model: str, caps: Capabilities) -> None:
    """Remember `caps` for `model` in the client and, when they changed, in the run's state."""
    run.client.remember(model, caps)
    if run.state.capabilities.get(model) != caps:
        # A new dict, not a change in place: another thread may be writing the state out.
        run.state.capabilities = {**run.state.capabilities, model: caps}
        if run.orchestrator:  # a worker process never writes the orchestrator's state
            run.save_state()
