"""devlab's front ends: the headless CLI (rich) and, later, the Textual app."""
