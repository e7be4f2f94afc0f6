-- Failed tool calls per run, tool and error type, with the tool's error rate and an example.
SELECT e.run_id, e.tool_name, e.error_type, count(*) AS errors,
    count(DISTINCT e.agent_id) AS agents,
    any_value(c.calls) AS tool_calls,
    count(*) / any_value(c.calls) AS error_rate,
    min(e.started_at) AS first_at,
    arg_min(e.output_excerpt, e.started_at) AS example
FROM tool_calls e
JOIN (
    SELECT run_id, tool_name, count(*) AS calls FROM tool_calls GROUP BY ALL
) c ON c.run_id IS NOT DISTINCT FROM e.run_id AND c.tool_name IS NOT DISTINCT FROM e.tool_name
WHERE e.error_type IS NOT NULL
GROUP BY e.run_id, e.tool_name, e.error_type
