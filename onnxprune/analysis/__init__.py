"""Read-only facts about a model: cost, channel dependency groups, layer candidates."""
