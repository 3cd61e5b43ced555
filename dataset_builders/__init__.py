"""Sources -> pixels -> text -> labels -> records -> shards. Public entry point: ``dataset_builders.build``."""
