-- pgbench's built-in "tpcb-like" transaction (TPC-B, loosely), for `dbpool tune`:
--   dbpool tune URL --sql-file benchmarks/tune/tpcb-like.sql --transaction --define scale=N
-- on tables made by `pgbench -i -s N` (the scale N must match). pgbench's BEGIN/END are
-- left out: --transaction runs the statements in one transaction. `make tune-plot` runs it.
\set aid random(1, 100000 * :scale)
\set bid random(1, 1 * :scale)
\set tid random(1, 10 * :scale)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
