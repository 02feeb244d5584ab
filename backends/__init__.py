"""devlab's core: devices, models, the Lab, the store and the tables (never imports textual)."""
