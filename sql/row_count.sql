-- row_count: the number of rows in a table.
--
-- Changes when rows are inserted or deleted (not when rows are updated in place, and not
-- when as many rows are deleted as inserted between two checks).
--
-- Params ([data.params]):
--   table   fully qualified table name, e.g. "ANALYTICS.PUBLIC.EVENTS"
--
-- Cost: COUNT(*) without a WHERE clause is answered from table metadata by Snowflake's
-- metadata cache, usually without resuming the warehouse (no compute credits, only cloud
-- services). Adding a WHERE clause turns it into a scan.
SELECT COUNT(*) AS row_count
FROM IDENTIFIER(%(table)s)
