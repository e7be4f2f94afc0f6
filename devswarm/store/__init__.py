"""The run store (DuckDB). Where things live:

- schema: the tables (one per record kind), their keys and column types;
- migrations: every shape a store file has had (append one to change the schema);
  upgrade: applying them, and reading an older file as it is;
- store: Store (import records, merge another store file, query, export) and open_writer;
- warehouse: the runs' own files, publishing one into the warehouse, reading them all at once;
- views/*.sql: the views, one file each; upsert, coerce, attach, failures: the machinery.

Nothing is imported here, so devswarm.records (which agents import) stays free of DuckDB.
"""
