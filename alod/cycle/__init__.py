"""The active-learning cycle's parts (as baal keeps them under ``baal/active/``)."""
