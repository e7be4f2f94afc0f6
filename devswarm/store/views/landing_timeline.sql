-- Landings per minute of each run, minutes without one included (from the run's start).
WITH counts AS (
    SELECT run_id, date_trunc('minute', ended_at) AS minute,
        count(*) FILTER (WHERE status = 'landed') AS landings,
        count(*) FILTER (WHERE status = 'conflict') AS conflicts,
        count(*) FILTER (WHERE status NOT IN ('landed', 'conflict')) AS other
    FROM landings WHERE ended_at IS NOT NULL GROUP BY ALL
), bounds AS (
    SELECT c.run_id, date_trunc('minute', least(min(c.minute), min(r.started_at))) AS lo,
        max(c.minute) AS hi
    FROM counts c LEFT JOIN runs r USING (run_id) GROUP BY c.run_id
), minutes AS (
    SELECT run_id, unnest(generate_series(lo, hi, INTERVAL 1 MINUTE)) AS minute FROM bounds
)
SELECT m.run_id, m.minute,
    coalesce(c.landings, 0) AS landings,
    coalesce(c.conflicts, 0) AS conflicts,
    coalesce(c.other, 0) AS other,
    sum(coalesce(c.landings, 0)) OVER (PARTITION BY m.run_id ORDER BY m.minute)::BIGINT
        AS landed_total
FROM minutes m LEFT JOIN counts c USING (run_id, minute)
