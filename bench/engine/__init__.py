"""The engine: runs a method on a task (fit, sample with counted NFE, score), shards it over
processes, caches fits, writes result files atomically. May import the contracts and nets, data, metrics."""
