-- table_fingerprint: an order-independent hash of every row of a table.
--
-- Changes on any insert, update or delete, whatever the timestamps say. The most precise
-- template and the most expensive one.
--
-- Params ([data.params]):
--   table   fully qualified table name, e.g. "ANALYTICS.PUBLIC.EVENTS"
--
-- Cost: a full scan of every column on every check. Minutes of warehouse time on a large
-- table: prefer latest_timestamp, row_count or table_metadata, or point it at a small
-- summary table or view.
SELECT HASH_AGG(*) AS fingerprint, COUNT(*) AS row_count
FROM IDENTIFIER(%(table)s)
