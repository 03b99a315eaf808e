-- latest_timestamp: the newest value of a timestamp column, e.g. a load time.
--
-- Changes when rows with a newer timestamp land. Rows added with an older timestamp, updates
-- and deletes go unnoticed: use row_count or table_fingerprint for those.
--
-- Params ([data.params]):
--   table   fully qualified table name, e.g. "ANALYTICS.PUBLIC.EVENTS"
--   column  the timestamp column, e.g. "LOADED_AT"
--
-- Cost: needs a running warehouse. MAX over a column is often answered from micro-partition
-- metadata (no scan) for plain columns; otherwise it scans that one column. Cheap on a
-- clustered or append-only table; a few seconds of an XS warehouse on a large one.
--
-- Table and column names are bound as strings and turned into names by IDENTIFIER(), so they
-- can never inject SQL. (No percent sign may appear in a template that takes params: the
-- connector would read it as a placeholder; write two of them for a literal one.)
SELECT MAX(IDENTIFIER(%(column)s)) AS latest
FROM IDENTIFIER(%(table)s)
