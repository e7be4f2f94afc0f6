-- Latency of answered calls per model (failed attempts are counted, not timed: a 429 is fast).
SELECT run_id, request_model, count(*) AS calls,
    count(*) FILTER (WHERE error_type IS NULL) AS ok_calls,
    count(error_type) AS failed_calls,
    count(*) FILTER (WHERE attempt > 1) AS retries,
    quantile_cont(duration_ms, 0.5) FILTER (WHERE error_type IS NULL) AS p50_ms,
    quantile_cont(duration_ms, 0.9) FILTER (WHERE error_type IS NULL) AS p90_ms,
    quantile_cont(duration_ms, 0.99) FILTER (WHERE error_type IS NULL) AS p99_ms,
    max(duration_ms) FILTER (WHERE error_type IS NULL) AS max_ms,
    avg(duration_ms) FILTER (WHERE error_type IS NULL) AS mean_ms,
    sum(output_tokens) FILTER (WHERE error_type IS NULL)
        / nullif(sum(duration_ms) FILTER (WHERE error_type IS NULL) / 1000, 0)
        AS output_tokens_per_second
FROM model_calls GROUP BY run_id, request_model
