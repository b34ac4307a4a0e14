from tests.stack_fixtures import _use_tiny_source, stack, tiny_sources_file  # noqa: F401
