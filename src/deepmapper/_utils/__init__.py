"""Private helpers with no knowledge of the method: atomic writes, signals, fault injection, versions."""
