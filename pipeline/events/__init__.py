"""Platform events: typed records, their versioned JSON Schemas, and decoding with clear errors."""
