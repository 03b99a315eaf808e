-- table_metadata: when the table last changed and how many rows it has, from
-- INFORMATION_SCHEMA.TABLES only: the table itself is never read.
--
-- LAST_ALTERED moves on any DML (insert, update, delete, merge) and on DDL, so this
-- catches updates that row_count misses. It can also move without a visible data change
-- (e.g. automatic clustering or a no-op DML).
--
-- Params ([data.params]):
--   schema    the schema, e.g. "PUBLIC"
--   table     the table name alone, e.g. "EVENTS" (unquoted names are upper case)
-- The database is the connection's: set [data] database = "ANALYTICS" (INFORMATION_SCHEMA
-- belongs to one database, and IDENTIFIER() cannot build its name from a parameter).
--
-- Cost: a metadata query, answered by cloud services; it still needs a warehouse to be
-- running (or resumed) to return the rows, so it costs the warehouse's minimum billing
-- (60 s) when the warehouse was suspended. Share a warehouse that is already running.
--
-- On fakesnow (the local test server) LAST_ALTERED is a constant, so only ROW_COUNT changes.
SELECT LAST_ALTERED, ROW_COUNT
FROM INFORMATION_SCHEMA.TABLES
WHERE TABLE_SCHEMA = %(schema)s
  AND TABLE_NAME = %(table)s
