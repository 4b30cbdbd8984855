"""Layer 2 beside the judge, data: token shards (`shards`), the seeded synthetic corpus with its exact
floor (`synthetic`), FineWeb from the Hugging Face hub (`fineweb`). Imports only `harness.core`; numpy,
so the CLI imports it lazily. `from harness import data` gives the shard and corpus functions."""
from harness.data.shards import (HEADER_BYTES, MAGIC, VERSION, ShardError, read_header, read_shard, track_vocab,
                                 val_problems, write_shard)
from harness.data.synthetic import (GENERATOR, SyntheticConfig, World, _rngs, bayes_floor, doc_positions,
                                    ensure_synthetic, generate_from_track, generate_synthetic, log_probs, make_world,
                                    render, sample_stream, topic_posterior)

__all__ = ["GENERATOR", "HEADER_BYTES", "MAGIC", "VERSION", "ShardError", "SyntheticConfig", "World", "_rngs",
           "bayes_floor", "doc_positions", "ensure_synthetic", "generate_from_track", "generate_synthetic",
           "log_probs", "make_world", "read_header", "read_shard", "render", "sample_stream", "topic_posterior",
           "track_vocab", "val_problems", "write_shard"]
