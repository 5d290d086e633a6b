"""Pure encoding helpers shared by the protocol machines (no state machines here)."""
