-- One row per agent: its model calls, tokens, cost, tool calls, tasks and landing conflicts.
SELECT a.agent_id, a.run_id, a.cycle, a.role, a.task_key, a.request_model, a.status, a.steps,
    -- an agent without rows on one side counts 0 there (each COLUMNS keeps its columns' names)
    coalesce(COLUMNS(l.* EXCLUDE (agent_id, run_id, cost_usd)), 0),
    l.cost_usd,
    coalesce(COLUMNS(tc.* EXCLUDE (agent_id)), 0),
    coalesce(COLUMNS(tk.* EXCLUDE (agent_id)), 0),
    coalesce(ld.conflicts, 0) AS conflicts,
    date_diff('microsecond', a.started_at, a.ended_at) / 1e6 AS wall_seconds
FROM agents a
-- each side is aggregated per agent first, so the joins cannot multiply rows
LEFT JOIN model_usage_by_agent l USING (agent_id)
LEFT JOIN (
    SELECT agent_id, count(*) AS tool_calls, count(error_type) AS tool_errors
    FROM tool_calls GROUP BY agent_id
) tc USING (agent_id)
LEFT JOIN (
    SELECT worker_agent_id AS agent_id,
        count(*) FILTER (WHERE status = 'landed') AS tasks_landed,
        count(*) FILTER (WHERE status IN ('failed', 'abandoned')) AS tasks_failed
    FROM tasks GROUP BY worker_agent_id
) tk USING (agent_id)
LEFT JOIN (
    SELECT agent_id, count(*) FILTER (WHERE status = 'conflict') AS conflicts
    FROM landings GROUP BY agent_id
) ld USING (agent_id)
