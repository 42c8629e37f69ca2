"""Character cards (SillyTavern/TavernAI V1, V2 and V3): parsing and the persona they make."""
