"""The headless command line (devlab --run and the tools); imports rich, never textual."""
