-- One row per run: wall time, agents, tasks, model calls, tokens, cost, landings.
SELECT r.run_id, r.goal, r.branch, r.status, r.started_at, r.ended_at,
    date_diff('microsecond', r.started_at, r.ended_at) / 1e6 AS wall_seconds,
    r.cycles,
    coalesce(a.agents, 0) AS agents,
    coalesce(tk.tasks, 0) AS tasks,
    coalesce(tk.tasks_landed, 0) AS tasks_landed,
    coalesce(tk.tasks_failed, 0) AS tasks_failed,
    coalesce(l.model_calls, 0) AS model_calls,
    coalesce(l.failed_calls, 0) AS failed_calls,
    coalesce(l.input_tokens, 0) AS input_tokens,
    coalesce(l.output_tokens, 0) AS output_tokens,
    coalesce(l.cache_read_input_tokens, 0) AS cache_read_input_tokens,
    l.cost_usd,
    coalesce(tc.tool_calls, 0) AS tool_calls,
    coalesce(ld.landings, 0) AS landings,
    coalesce(ld.conflicts, 0) AS conflicts,
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
