-- The events database lives next to Dagster's own storage (POSTGRES_DB=dagster) on the
-- same server; the pipeline creates its tables and monthly partitions on first use.
CREATE DATABASE anpr_events;
