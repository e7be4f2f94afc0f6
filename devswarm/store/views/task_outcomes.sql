-- One row per task: outcome, attempts, time to land, and what its workers cost.
SELECT t.run_id, t.task_key, t.cycle, t.title, t.status, t.attempts, t.reason, t.commit_sha,
    t.worker_agent_id, p.ended_at AS planned_at, t.started_at, t.ended_at, ld.landed_at,
    date_diff('microsecond', p.ended_at, t.started_at) / 1e6 AS queued_seconds,
    date_diff('microsecond', t.started_at, t.ended_at) / 1e6 AS wall_seconds,
    date_diff('microsecond', t.started_at, ld.landed_at) / 1e6 AS seconds_to_land,
    -- a task without landings or calls counts 0 there (each COLUMNS keeps its columns' names)
    coalesce(COLUMNS(ld.* EXCLUDE (run_id, task_key, landed_at)), 0),
    coalesce(COLUMNS(c.* EXCLUDE (run_id, task_key)), 0),
    CASE WHEN t.status = 'landed' THEN coalesce(c.cost_usd, 0) END AS landed_cost_usd
FROM tasks t
LEFT JOIN agents p ON p.agent_id = t.planner_agent_id
LEFT JOIN (
    SELECT run_id, task_key, max(ended_at) FILTER (WHERE status = 'landed') AS landed_at,
        count(*) AS landing_attempts, count(*) FILTER (WHERE status = 'conflict') AS conflicts
    FROM landings GROUP BY run_id, task_key
) ld ON ld.run_id = t.run_id AND ld.task_key = t.task_key
LEFT JOIN (
    SELECT a.run_id, a.task_key, count(DISTINCT a.agent_id) AS workers,
        sum(l.calls)::BIGINT AS calls, sum(l.input_tokens)::BIGINT AS input_tokens,
        sum(l.output_tokens)::BIGINT AS output_tokens, sum(l.cost_usd) AS cost_usd
    FROM agents a LEFT JOIN model_usage_by_agent l ON l.agent_id = a.agent_id
    WHERE a.role = 'worker' AND a.task_key IS NOT NULL
    GROUP BY a.run_id, a.task_key
) c ON c.run_id = t.run_id AND c.task_key = t.task_key
