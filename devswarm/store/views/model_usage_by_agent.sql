-- Model calls per agent, aggregated once for the views that report them (a building block:
-- one row per agent id in model_calls, so joining it cannot multiply rows).
SELECT agent_id, any_value(run_id) AS run_id, count(*) AS calls,
    count(error_type) AS failed_calls,
    sum(input_tokens)::BIGINT AS input_tokens, sum(output_tokens)::BIGINT AS output_tokens,
    sum(cache_read_input_tokens)::BIGINT AS cache_read_input_tokens, sum(cost_usd) AS cost_usd
FROM model_calls GROUP BY agent_id
