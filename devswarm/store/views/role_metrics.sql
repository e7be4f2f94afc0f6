-- Per role (planner, worker, judge) of each run: every model call counts, even one whose
-- agent row is missing (its role is then the first part of its agent id).
SELECT *,
    total_tokens / nullif(sum(total_tokens) OVER (PARTITION BY run_id), 0) AS token_share,
    cost_usd / nullif(sum(cost_usd) OVER (PARTITION BY run_id), 0) AS cost_share
FROM (
    SELECT coalesce(a.run_id, l.run_id) AS run_id,
        coalesce(a.role, split_part(l.agent_id, '/', 1)) AS role,
        count(DISTINCT coalesce(a.agent_id, l.agent_id)) AS agents,
        coalesce(sum(l.calls), 0)::BIGINT AS calls,
        coalesce(sum(l.failed_calls), 0)::BIGINT AS failed_calls,
        coalesce(sum(l.input_tokens), 0)::BIGINT AS input_tokens,
        coalesce(sum(l.output_tokens), 0)::BIGINT AS output_tokens,
        coalesce(sum(l.cache_read_input_tokens), 0)::BIGINT AS cache_read_input_tokens,
        (coalesce(sum(l.input_tokens), 0) + coalesce(sum(l.output_tokens), 0))::BIGINT
            AS total_tokens,
        coalesce(sum(l.cost_usd), 0) AS cost_usd,
        coalesce(sum(a.steps), 0)::BIGINT AS steps
    FROM agents a
    FULL OUTER JOIN model_usage_by_agent l ON a.agent_id = l.agent_id
    GROUP BY ALL
)
