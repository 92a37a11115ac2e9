"""Problems: benchmark loaders, prompt templates and the built-in testbed task."""
