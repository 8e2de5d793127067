"""The benchmark's JVM-only twin: Flink SQL (no Python UDF, so no Python at run time) computing the subset of
the segment rules SQL expresses directly, per person, on the same input as tagstream (`events.valid`).

Per event, an event-time OVER window of 10 minutes per person counts searches, product views and cart adds
(`frequent_searcher` = at least 3 searches in 10 minutes, as segments/examples/frequent_searcher.yaml) and
writes one JSON record keyed by the person id (derived like `udfs.segments.person_id_of`) to Kafka. There is
no Redis SQL connector for Flink 2.2 on Maven Central (the Bahir Redis connector stops at Flink 1.x and has
no SQL sink), so the twin writes to Kafka. What it cannot express: exits by time alone (an OVER window emits
only when an event arrives), exact entry/exit records, hot-reloaded definitions, identity resolution.

Submitted by tools/bench with `flink run -py tools/bench/twin_job.py -- --bootstrap ... --input-topic ...`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (flink run -py): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from jobs import runtime
from jobs.runtime import _with

PERSON_SQL = ("'p-' || SUBSTR(SHA256(CASE "
              + " ".join(f"WHEN ids.{t} IS NOT NULL AND ids.{t} <> '' THEN '{t}:' || ids.{t}"
                         for t in ("user_id", "anonymous_id", "device_id"))
              + " END), 1, 32)")


def statements(bootstrap: str, input_topic: str, output_topic: str, group_id: str) -> list[str]:
    """The twin's SQL: source table, sink table, the INSERT."""
    source = {"connector": "kafka", "topic": input_topic, "properties.bootstrap.servers": bootstrap,
              "properties.group.id": group_id, "properties.auto.offset.reset": "earliest",
              "scan.startup.mode": "group-offsets", "format": "json", "json.ignore-parse-errors": "true"}
    sink = {"connector": "kafka", "topic": output_topic, "properties.bootstrap.servers": bootstrap,
            "key.format": "raw", "key.fields": "person_id", "value.format": "json",
            "sink.delivery-guarantee": "at-least-once", "properties.linger.ms": "5"}
    counts = ",\n      ".join(f"CAST(SUM(CASE WHEN `type` = '{t}' THEN 1 ELSE 0 END) OVER w AS BIGINT) AS {name}"
                               for t, name in (("search", "searches_10m"), ("product_view", "product_views_10m"),
                                               ("add_to_cart", "carts_10m")))
    return [
        f"""CREATE TEMPORARY TABLE twin_events (
      event_id STRING, `type` STRING, ts_ms BIGINT,
      ids ROW<user_id STRING, anonymous_id STRING, device_id STRING>,
      rowtime AS TO_TIMESTAMP_LTZ(ts_ms, 3),
      WATERMARK FOR rowtime AS rowtime - INTERVAL '0.5' SECOND
    ) WITH ({_with(source)})""",
        f"""CREATE TEMPORARY TABLE twin_changes (
      person_id STRING, event_id STRING, ts_ms BIGINT, frequent_searcher BOOLEAN,
      searches_10m BIGINT, product_views_10m BIGINT, carts_10m BIGINT
    ) WITH ({_with(sink)})""",
        f"""CREATE TEMPORARY VIEW twin_keyed AS
    SELECT {PERSON_SQL} AS person_id, event_id, `type`, ts_ms, rowtime FROM twin_events
    WHERE ts_ms IS NOT NULL AND COALESCE(ids.user_id, ids.anonymous_id, ids.device_id) IS NOT NULL""",
        f"""INSERT INTO twin_changes
    SELECT person_id, event_id, ts_ms, searches_10m >= 3 AS frequent_searcher, searches_10m, product_views_10m,
      carts_10m
    FROM (SELECT person_id, event_id, ts_ms,
      {counts}
    FROM twin_keyed
    WINDOW w AS (PARTITION BY person_id ORDER BY rowtime
                 RANGE BETWEEN INTERVAL '10' MINUTE PRECEDING AND CURRENT ROW))""",
    ]


def main(argv: list[str] | None = None) -> None:
    """Parses the flags and runs the twin."""
    parser = runtime.job_parser("bench-twin", __doc__)
    parser.add_argument("--input-topic", required=True)
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--group-id", required=True)
    args = parser.parse_args(argv)
    env = runtime.create_env(runtime.runtime_options(args))
    t_env = runtime.table_env(env)
    t_env.get_config().set("table.exec.source.idle-timeout", "1 s")
    t_env.get_config().set("pipeline.name", "tagstream-bench-twin")
    *ddl, insert = statements(args.bootstrap, args.input_topic, args.output_topic, args.group_id)
    for statement in ddl:
        t_env.execute_sql(statement)
    t_env.execute_sql(insert)


if __name__ == "__main__":
    main(sys.argv[1:])
