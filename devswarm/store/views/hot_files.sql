-- Files that fought: conflicts per file, and how many tasks planned to change it.
WITH conflicted AS (
    SELECT run_id, task_key, ended_at, resolved,
        unnest(from_json(conflict_files, '["VARCHAR"]')) AS file
    FROM landings
    WHERE status = 'conflict' AND json_valid(conflict_files)
        AND json_type(conflict_files) = 'ARRAY'
), planned AS (
    SELECT run_id, unnest(from_json(files, '["VARCHAR"]')) AS file, task_key
    FROM tasks WHERE json_valid(files) AND json_type(files) = 'ARRAY'
), per_file AS (
    SELECT run_id, file, count(*) AS conflicts, count(DISTINCT task_key) AS conflicted_tasks,
        min(ended_at) AS first_conflict_at, max(ended_at) AS last_conflict_at
    FROM conflicted GROUP BY run_id, file
), plans AS (
    SELECT run_id, file, count(DISTINCT task_key) AS planned_tasks FROM planned GROUP BY ALL
)
SELECT coalesce(f.run_id, p.run_id) AS run_id, coalesce(f.file, p.file) AS file,
    coalesce(f.conflicts, 0) AS conflicts,
    coalesce(f.conflicted_tasks, 0) AS conflicted_tasks,
    coalesce(p.planned_tasks, 0) AS planned_tasks,
    f.first_conflict_at, f.last_conflict_at
FROM per_file f FULL OUTER JOIN plans p ON p.run_id = f.run_id AND p.file = f.file
WHERE coalesce(f.conflicts, 0) > 0 OR p.planned_tasks > 1
