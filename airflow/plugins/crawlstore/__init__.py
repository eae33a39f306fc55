"""crawlstore: crawl web pages and JSON APIs, validate, publish to Kafka,
land in PostgreSQL, OpenSearch and HDFS."""
