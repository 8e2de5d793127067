"""The store layer: typed store ops (`ops`), the version guard (`guard`), and their Redis and DynamoDB
executors (`redis_store`, `dynamo_store`). Cores import only `ops` (and `keys`); Flink operators hold a
`RedisStore` / `DynamoStore` and call `apply`. Layouts: `schemas/README.md`, "Store layouts".
"""
