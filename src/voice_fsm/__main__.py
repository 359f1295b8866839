"""`python -m voice_fsm` is the `voice-fsm` command."""

from voice_fsm.cli import main

raise SystemExit(main())
