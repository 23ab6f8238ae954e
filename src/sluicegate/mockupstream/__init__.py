"""Mock OpenAI- and Anthropic-compatible upstream for tests, benchmarks and demos."""
