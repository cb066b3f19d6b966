"""VAN family: ``config.py`` (variants), ``pt.py`` and ``ms.py`` (the twins)."""
