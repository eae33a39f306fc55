"""Replay dead letters: back into the sink they failed in, or onto their original topic.

A run reads `<topic>-dlq` up to the end offsets it saw when it started and picks the records in
scope (failure time, DLQ offsets, failing sink, error class). Each one goes back where it failed:

- target `sink` (default): records a sink dead-lettered are written to that sink only, through
  its SinkTask lifecycle; records the crawl DAG's validation refused are validated again and, if
  valid now, published to the original topic (so every sink gets them).
- target `topic`: the record goes back onto its original topic, and every sink sees it again.

A record that fails again goes back to the DLQ with its replay count increased, or to
`<topic>-dlq-parking` once the count reaches `max_replays`: nothing loops, nothing is lost.

The PostgreSQL ledger `dlq_replays` lists every DLQ offset some run has dealt with, written once
the outcome is durable; every run skips what it lists, so a record is handled once whichever run
gets to it. Offsets are committed to the run's own consumer group (never the sinks' groups) after
each durable chunk: a killed run resumes there, and the group's lag shows what is left. The
crash window between a durable write and its ledger row is covered by the sinks' idempotence
(PostgreSQL stale-write guard, OpenSearch external versions) and, for HDFS, by reading which DLQ
offsets the committed files already hold. Runs of the same DLQ are serialised by an advisory lock.

Modules: `request` (what to replay, the DAG params and CLI options generated from it),
`letters` (a DLQ record in scope and its outcomes), `reader` (the DLQ partitions, paced),
`ledger` (what was handled, the lock), `writer` (a sink driven through the one write step),
`summary` (what a run did), `run` (the run itself), `__main__` (the command line).
"""
