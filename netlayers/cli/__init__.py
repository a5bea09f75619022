"""The command line: ``netlayers <command>`` and the ``train`` shortcut."""
