"""Identity & profiles job core: identity graph, probabilistic matching, profile resolution, erasure.

Pure Python (no pyflink import). The Flink operators are thin wrappers around :mod:`.engine`; see
`docs/identity.md` for the design, the partitioning and the guarantees.
"""
