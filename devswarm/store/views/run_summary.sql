-- One row per run: wall time, agents, tasks, model calls, tokens, cost, landings.
SELECT r.run_id, r.goal, r.branch, r.status, r.started_at, r.ended_at,
    date_diff('microsecond', r.started_at, r.ended_at) / 1e6 AS wall_seconds,
    r.cycles,
    -- a run without rows on one side counts 0 there (each COLUMNS keeps its columns' names)
    coalesce(a.agents, 0) AS agents,
    coalesce(COLUMNS(tk.* EXCLUDE (run_id)), 0),
    coalesce(COLUMNS(l.* EXCLUDE (run_id, cost_usd)), 0),
    l.cost_usd,
    coalesce(tc.tool_calls, 0) AS tool_calls,
    coalesce(COLUMNS(ld.* EXCLUDE (run_id)), 0),
    l.cost_usd / nullif(tk.tasks_landed, 0) AS cost_per_landed_task
FROM runs r
LEFT JOIN (SELECT run_id, count(*) AS agents FROM agents GROUP BY run_id) a USING (run_id)
LEFT JOIN (
    SELECT run_id, count(*) AS tasks,
        count(*) FILTER (WHERE status = 'landed') AS tasks_landed,
        count(*) FILTER (WHERE status IN ('failed', 'abandoned')) AS tasks_failed
    FROM tasks GROUP BY run_id
) tk USING (run_id)
LEFT JOIN (
    SELECT run_id, count(*) AS model_calls, count(error_type) AS failed_calls,
        sum(input_tokens)::BIGINT AS input_tokens, sum(output_tokens)::BIGINT AS output_tokens,
        sum(cache_read_input_tokens)::BIGINT AS cache_read_input_tokens, sum(cost_usd) AS cost_usd
    FROM model_calls GROUP BY run_id
) l USING (run_id)
LEFT JOIN (SELECT run_id, count(*) AS tool_calls FROM tool_calls GROUP BY run_id) tc USING (run_id)
LEFT JOIN (
    SELECT run_id, count(*) FILTER (WHERE status = 'landed') AS landings,
        count(*) FILTER (WHERE status = 'conflict') AS conflicts
    FROM landings GROUP BY run_id
) ld USING (run_id)
